"""Retrieval: BM25 and vector nearest neighbours over the caller's chunks, fused.

Every query filters by owner and document inside SQL, never afterwards.

- Lexical: Okapi BM25 computed in PostgreSQL at query time from an inverted index, `postings`,
  written once per document when it becomes ready: for each lexeme of the document, its chunks
  with their term frequencies and lengths. Every chunk holding any query term is scored (OR
  semantics: `websearch_to_tsquery`'s AND matches almost nothing for a natural question).
  Document frequencies and the average length are taken over exactly the documents being
  searched, at query time, so they need no upkeep when documents come and go.
- Vector: cosine distance. pgvector 0.6 filters an HNSW scan only after the fact, so a filter
  that keeps a small share of the index returns fewer rows than asked (often none). When the
  filtered set is small, or too small a share of the table for HNSW to find enough of it, the
  scan is exact; otherwise HNSW runs with `ef_search` sized to the share, and falls back to the
  exact scan if it still comes back short.
- Fusion: reciprocal rank fusion of the two rankings.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from docqa.db.engine import Database
from docqa.ingest.embed import Embedder

Mode = Literal["hybrid", "lexical", "vector"]
# Candidates taken from each side before fusion (at least top_k).
CANDIDATES = 50
RRF_K = 60
# BM25 parameters: the usual defaults (Robertson; Lucene and Elasticsearch use the same).
BM25_K1 = 1.2
BM25_B = 0.75
# Up to this many chunks the exact scan is always right and cheap: about 2.8 µs a chunk here
# (26 ms for 9,234), against about 2 ms for HNSW. Above it, HNSW serves whenever the filter
# keeps a large enough share of the index, which keeps the time to first token flat as a
# library grows; a small share still falls back to the exact scan.
EXACT_MAX_CHUNKS = 2_000
# HNSW returns at most ef_search rows before the filter; pgvector caps ef_search at 1000. At
# 200, HNSW's top 10 matched the exact top 10 at 0.986 (0.975 at 100) on 9,234 chunks.
EF_SEARCH_MIN, EF_SEARCH_MAX = 200, 1000
# Ask HNSW for this many times the rows that the filter is expected to keep.
EF_MARGIN = 2.0

_PKS = bindparam("pks", type_=ARRAY(UUID(as_uuid=True)))


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    document_pk: uuid.UUID
    document_id: str
    filename: str
    page: int
    text: str
    score: float
    token_count: int  # of `text`, in the embedding model's word pieces


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

# Posting rows of one document, from its chunks' stored tsvectors. Every lexeme of a tsvector
# built by to_tsvector has positions; the coalesce covers one that was stripped of them.
_INDEX_TERMS_SQL = text(
    """
    INSERT INTO postings (owner_id, lexeme, document_pk, chunk_ids, tfs, dls)
    SELECT c.owner_id, t.lexeme, c.document_pk,
           array_agg(c.id ORDER BY c.id),
           array_agg(coalesce(cardinality(t.positions), 1)::int2 ORDER BY c.id),
           array_agg(c.token_count ORDER BY c.id)
    FROM chunks c CROSS JOIN unnest(c.tsv) AS t
    WHERE c.document_pk = :pk
    GROUP BY c.owner_id, t.lexeme, c.document_pk
    """
)

_DOCUMENT_TOTALS_SQL = text(
    """
    UPDATE documents d SET chunk_count = s.n, token_count = s.tokens
    FROM (SELECT count(*) AS n, coalesce(sum(c.token_count), 0) AS tokens
          FROM chunks c WHERE c.document_pk = :pk) s
    WHERE d.pk = :pk
    """
)

# How many chunks the documents hold, and about how many the whole table does.
_COUNT_SQL = text(
    """
    SELECT coalesce(sum(d.chunk_count), 0) AS n,
           (SELECT greatest(reltuples, 1) FROM pg_class WHERE oid = 'chunks'::regclass) AS total
    FROM documents d
    WHERE d.owner_id = :owner AND d.pk = ANY(:pks)
    """
).bindparams(_PKS)

_VECTOR_SELECT = """
    SELECT c.id, 1 - (c.embedding <=> CAST(:qvec AS vector)) AS score
    FROM chunks c
    WHERE c.owner_id = :owner AND c.document_pk = ANY(:pks)
    ORDER BY c.embedding <=> CAST(:qvec AS vector)
"""
# HNSW can serve the ORDER BY only when it is the distance alone.
_HNSW_SQL = text(_VECTOR_SELECT + " LIMIT :limit").bindparams(_PKS)
# The exact scan sorts anyway, so it breaks ties (identical chunks) by id.
_EXACT_SQL = text(_VECTOR_SELECT + ", c.id LIMIT :limit").bindparams(_PKS)

_HITS_SQL = text(
    """
    SELECT c.id, c.document_pk, d.document_id, d.filename, c.page_start, c.text, c.token_count
    FROM chunks c JOIN documents d ON d.pk = c.document_pk
    WHERE c.id = ANY(:ids) AND c.owner_id = :owner
    """
)

Ranking = list[tuple[int, float]]


async def index_terms(session: AsyncSession, document_pk: uuid.UUID) -> None:
    """Write a document's postings and its chunk and token totals, from its stored chunks.

    Call it once, in the transaction that makes the document ready: retrieval searches ready
    documents only, so their postings are always complete.
    """
    await session.execute(_INDEX_TERMS_SQL, {"pk": document_pk})
    await session.execute(_DOCUMENT_TOTALS_SQL, {"pk": document_pk})


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


def ef_search_for(limit: int, scope: int, total: float) -> int | None:
    """The `ef_search` at which HNSW should find `limit` rows of a filter that keeps `scope` of
    `total` rows, or None when the exact scan is the better plan."""
    if scope <= EXACT_MAX_CHUNKS:
        return None
    needed = math.ceil(limit * EF_MARGIN * max(total, scope) / scope)
    if needed > EF_SEARCH_MAX:
        return None
    return max(EF_SEARCH_MIN, needed)


async def vector_ranking(
    session: AsyncSession,
    *,
    owner_id: str,
    document_pks: list[uuid.UUID],
    qvec: Awaitable[list[float]],
    limit: int,
) -> Ranking:
    """The nearest chunks by cosine distance, nearest first, with their cosine similarity.

    `qvec` (from `start_embedding`) may still be on its way: the plan (how many chunks the
    filter keeps, and so HNSW or exact) is made while the question is being embedded.
    """
    params: dict[str, Any] = {"owner": owner_id, "pks": document_pks, "limit": limit}
    counts = (await session.execute(_COUNT_SQL, params)).one()
    scope = int(counts.n)
    ef = ef_search_for(limit, scope, float(counts.total))
    if ef is not None:
        await session.execute(
            text("SELECT set_config('hnsw.ef_search', :ef, true)"), {"ef": str(ef)}
        )
    vector = await qvec
    if scope == 0:
        return []
    params["qvec"] = str(vector)
    if ef is not None:
        rows = [(row.id, float(row.score)) for row in await session.execute(_HNSW_SQL, params)]
        if len(rows) >= min(limit, scope):
            return rows
    # Exact: with index scans off, the HNSW index cannot be used; the filter still uses the
    # (owner_id, document_pk) index through a bitmap scan.
    await session.execute(text("SET LOCAL enable_indexscan = off"))
    try:
        return [(row.id, float(row.score)) for row in await session.execute(_EXACT_SQL, params)]
    finally:
        await session.execute(text("SET LOCAL enable_indexscan = on"))


def rrf(rankings: Sequence[Ranking], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion: each ranking adds 1 / (k + rank) to the chunks it holds."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, (chunk_id, _) in enumerate(ranking):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (k + rank + 1)
    return scores


def start_embedding(embedder: Embedder, question: str) -> asyncio.Future[list[float]]:
    """The question's vector, computed from now on, on the embedder's thread."""

    async def embed() -> list[float]:
        vector: list[float] = (await asyncio.to_thread(embedder.embed_query, question)).tolist()
        return vector

    return asyncio.ensure_future(embed())


async def drop_embedding(embedding: asyncio.Future[list[float]]) -> None:
    """Stop waiting for an embedding that is no longer needed; its thread finishes on its own."""
    embedding.cancel()
    await asyncio.gather(embedding, return_exceptions=True)


async def retrieve(
    db: Database,
    embedder: Embedder,
    *,
    owner_id: str,
    document_pks: list[uuid.UUID],
    question: str,
    top_k: int,
    mode: Mode = "hybrid",
    query_vector: asyncio.Future[list[float]] | None = None,
) -> list[Hit]:
    """The `top_k` best chunks for `question` among `document_pks` (all owned by `owner_id`).

    `query_vector`, from `start_embedding(embedder, question)`, lets a caller start embedding
    the question before it knows which documents to search.

    `score` is the fused score in hybrid mode, BM25 in lexical mode and cosine similarity in
    vector mode: comparable within one answer, not across modes.
    """
    if not document_pks or top_k <= 0:
        return []
    limit = max(CANDIDATES, top_k)

    async def vector_side() -> Ranking:
        embedding = query_vector or start_embedding(embedder, question)
        try:
            async with db.session() as session:
                return await vector_ranking(
                    session,
                    owner_id=owner_id,
                    document_pks=document_pks,
                    qvec=embedding,
                    limit=limit,
                )
        finally:
            if query_vector is None:  # a caller's embedding is the caller's to drop
                await drop_embedding(embedding)

    async def lexical_side() -> Ranking:
        async with db.session() as session:
            return await lexical_ranking(
                session,
                owner_id=owner_id,
                document_pks=document_pks,
                question=question,
                limit=limit,
            )

    # The two sides share nothing, so they run at once, on two connections: BM25 runs in
    # PostgreSQL while the query is embedded on a thread.
    sides = []
    if mode != "lexical":
        sides.append(vector_side())
    if mode != "vector":
        sides.append(lexical_side())
    rankings: list[Ranking] = list(await asyncio.gather(*sides))
    scores = rrf(rankings) if mode == "hybrid" else dict(rankings[0])
    best = sorted(scores, key=lambda cid: (-scores[cid], cid))[:top_k]
    if not best:
        return []
    async with db.session() as session:
        rows = (await session.execute(_HITS_SQL, {"ids": best, "owner": owner_id})).all()
    by_id = {row.id: row for row in rows}
    return [
        Hit(
            chunk_id=cid,
            document_pk=by_id[cid].document_pk,
            document_id=by_id[cid].document_id,
            filename=by_id[cid].filename,
            page=by_id[cid].page_start,
            text=by_id[cid].text,
            score=round(scores[cid], 6),
            token_count=by_id[cid].token_count,
        )
        for cid in best
        if cid in by_id
    ]
