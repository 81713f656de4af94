"""Lexical ranking: Okapi BM25 computed in PostgreSQL at query time from the postings.

`postings` is written once per document when it becomes ready (`search.index`): for each lexeme
of the document, its chunks with their term frequencies and lengths. Every chunk holding any
query term is scored (OR semantics: `websearch_to_tsquery`'s AND matches almost nothing for a
natural question). Document frequencies and the average length are taken over exactly the
documents being searched, at query time, so they need no upkeep when documents come and go.
"""

from __future__ import annotations

import uuid

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession

# BM25 parameters: the usual defaults (Robertson; Lucene and Elasticsearch use the same).
BM25_K1 = 1.2
BM25_B = 0.75

_PKS = bindparam("pks", type_=ARRAY(UUID(as_uuid=True)))

Ranking = list[tuple[int, float]]

# `terms`: the question's lexemes. `scope`: the number of chunks and their average length over
# the documents searched, from the per-document totals. `hits`: the posting rows of the query
# terms in those documents; `df`: in how many of the searched chunks each term occurs. The final
# select unnests each posting row into (chunk, tf, length) and sums the terms' BM25 weights.
_BM25_SQL = text(
    """
    WITH terms AS (
        SELECT array_agg(t.lexeme) AS lexemes FROM unnest(to_tsvector('english', :question)) t
    ),
    scope AS (
        SELECT sum(d.chunk_count)::float8 AS n,
               greatest(sum(d.token_count), 1)::float8 / greatest(sum(d.chunk_count), 1) AS avgdl
        FROM documents d
        WHERE d.owner_id = :owner AND d.pk = ANY(:pks)
    ),
    hits AS (
        SELECT p.lexeme, p.chunk_ids, p.tfs, p.dls
        FROM terms, postings p
        WHERE p.owner_id = :owner AND p.lexeme = ANY(terms.lexemes) AND p.document_pk = ANY(:pks)
    ),
    df AS (
        SELECT lexeme, sum(cardinality(chunk_ids))::float8 AS df FROM hits GROUP BY lexeme
    )
    SELECT u.id, sum(
        ln(1 + (s.n - d.df + 0.5) / (d.df + 0.5))
        * u.tf * (:k1 + 1) / (u.tf + :k1 * (1 - :b + :b * u.dl / s.avgdl))
    ) AS score
    FROM hits h JOIN df d USING (lexeme) CROSS JOIN scope s,
         unnest(h.chunk_ids, h.tfs, h.dls) AS u(id, tf, dl)
    GROUP BY u.id
    ORDER BY score DESC, u.id
    LIMIT :limit
    """
).bindparams(_PKS)


async def lexical_ranking(
    session: AsyncSession,
    *,
    owner_id: str,
    document_pks: list[uuid.UUID],
    question: str,
    limit: int,
) -> Ranking:
    """Chunks holding any of the question's terms, best BM25 score first."""
    result = await session.execute(
        _BM25_SQL,
        {
            "owner": owner_id,
            "pks": document_pks,
            "question": question,
            "k1": BM25_K1,
            "b": BM25_B,
            "limit": limit,
        },
    )
    return [(row.id, float(row.score)) for row in result]


_PRESENT_SQL = text(
    """
    SELECT DISTINCT p.lexeme
    FROM postings p
    WHERE p.owner_id = :owner AND p.document_pk = ANY(:pks)
      AND p.lexeme IN (SELECT t.lexeme FROM unnest(to_tsvector('english', :words)) t)
    """
).bindparams(_PKS)


async def mentioned(
    session: AsyncSession, *, owner_id: str, document_pks: list[uuid.UUID], words: list[str]
) -> set[str]:
    """Which of `words` (numbers, names: words the lexical index keeps as they are) occur
    anywhere in the documents."""
    if not words or not document_pks:
        return set()
    result = await session.execute(
        _PRESENT_SQL, {"owner": owner_id, "pks": document_pks, "words": " ".join(words)}
    )
    return {str(lexeme) for lexeme in result.scalars()}
