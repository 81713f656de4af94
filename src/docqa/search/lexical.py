"""Lexical ranking: Okapi BM25 over the postings, computed at query time.

`postings` is written once per document when it becomes ready (`search.index`): for each lexeme
of the document, its chunks with their term frequencies and lengths, in packed blocks. Every
chunk holding any query term is scored (OR semantics: `websearch_to_tsquery`'s AND matches almost
nothing for a natural question). Document frequencies and the average length are taken over
exactly the documents being searched, at query time, so they need no upkeep when documents come
and go.

PostgreSQL finds the rows (one index-only scan per query term, filtered by owner and document)
and joins each term's blocks into one byte string, read in its binary format; the scoring runs
here, on whole arrays with numpy. Summing the terms' weights per chunk inside PostgreSQL
(unnesting every posting into a row and grouping) was two thirds of the time
(docs/database.md).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from docqa.search.index import HEAD, RECORD

# BM25 parameters: the usual defaults (Robertson; Lucene and Elasticsearch use the same).
BM25_K1 = 1.2
BM25_B = 0.75

_PKS = bindparam("pks", type_=ARRAY(UUID(as_uuid=True)))

Ranking = list[tuple[int, float]]


@dataclass(frozen=True)
class Library:
    """Every ready document of an owner: what a question about the whole library searches.

    It holds no keys. Postings exist only for ready documents (written in the transaction that
    makes a document ready, deleted with it), so BM25 reads the owner's postings with no
    document filter, and the vector side leaves out the few documents still being read. At 1M
    chunks, fetching 10,000 keys took 9 ms, and checking rows against them, and planning that
    check, about 30 ms of BM25's 95 and 25 ms of the vector side's 27. A document that becomes
    ready meanwhile is searched too.
    """

    documents: int  # ready when looked up: at least one, or there is nothing to ask

    def __bool__(self) -> bool:
        return self.documents > 0


# What a search covers: the named documents' primary keys, or the whole library.
Scope = list[uuid.UUID] | Library


# A query as SQLAlchemy runs it, or as psycopg does (`_fetch_binary`).
Query = TypeVar("Query", TextClause, str)


def _for_scope(
    scope: Scope, named: Query, library: Query, **params: Any
) -> tuple[Query, dict[str, Any]]:
    """The query for `scope` (`named` takes the keys as `pks`; `library` needs none) with its
    parameters."""
    if isinstance(scope, Library):
        return library, params
    return named, params | {"pks": scope}


# `scope`: the number of chunks and their average length over the documents searched, from the
# per-document totals (on every row, and on a row of its own when no term matches). Then, for
# each of the question's lexemes, its posting blocks in those documents: their records joined
# into one string, and their heads (first chunk id, record count) into another, in the same
# order. One index-only scan each, whose rows come out already grouped (a GROUP BY over them
# would sort megabytes of blocks first, which spilled to disk at 1M chunks).
_POSTINGS = """
    WITH scope AS (
        SELECT sum(d.chunk_count)::float8 AS n,
               greatest(sum(d.token_count), 1)::float8 / greatest(sum(d.chunk_count), 1) AS avgdl
        FROM documents d
        WHERE d.owner_id = %(owner)s AND {documents}
    ),
    hits AS MATERIALIZED (
        SELECT b.records, b.heads
        FROM unnest(to_tsvector('english', %(question)s)) t
        CROSS JOIN LATERAL (
            SELECT string_agg(p.entries, ''::bytea) AS records,
                   string_agg(int8send(p.first_id) || int2send((length(p.entries) / 8)::int2),
                              ''::bytea) AS heads
            FROM postings p
            WHERE p.owner_id = %(owner)s AND p.lexeme = t.lexeme {postings}
        ) b
    )
    SELECT s.n, s.avgdl, h.records, h.heads
    FROM scope s LEFT JOIN hits h ON h.records IS NOT NULL
"""
# psycopg's own placeholders: this query runs on the driver's connection (`_fetch_binary`).
POSTINGS_SQL = _POSTINGS.format(
    documents="d.pk = ANY(%(pks)s)", postings="AND p.document_pk = ANY(%(pks)s)"
)
LIBRARY_POSTINGS_SQL = _POSTINGS.format(documents="d.status = 'ready'", postings="")

# Chunk ids are summed into a dense array indexed by id when their span is at most this many
# times their count (plus a floor): a pass over memory instead of a sort.
_DENSE_SPAN = 8
_DENSE_FLOOR = 1 << 20


def bm25_top(
    terms: list[tuple[bytes, bytes]],
    n: float,
    avgdl: float,
    limit: int,
    k1: float = BM25_K1,
    b: float = BM25_B,
) -> Ranking:
    """The `limit` best chunks by Okapi BM25, best first (ties by chunk id), from each query
    term's postings (its blocks' `RECORD`s joined, and their `HEAD`s) over a scope of `n` chunks
    of average length `avgdl`."""
    if not terms or limit <= 0:
        return []
    blocks = [
        (np.frombuffer(records, dtype=RECORD), np.frombuffer(heads, dtype=HEAD))
        for records, heads in terms
    ]
    ids = np.empty(sum(len(records) for records, _ in blocks), dtype=np.int64)
    weights = np.empty(len(ids), dtype=np.float64)
    # idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl)), written into `weights` in
    # place: at 1M chunks a question has about a million postings, and every temporary array
    # is another pass over them.
    at = 0
    for records, heads in blocks:
        df = len(records)
        idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
        chunk_ids = ids[at : at + df]
        chunk_ids[:] = np.repeat(heads["first_id"], heads["count"])
        chunk_ids += records["offset"]
        tf = records["tf"].astype(np.float64)
        weight = weights[at : at + df]
        np.multiply(records["dl"], k1 * b / avgdl, out=weight)
        weight += k1 * (1 - b)
        weight += tf
        np.divide(tf, weight, out=weight)
        weight *= idf * (k1 + 1)
        at += df
    low = int(ids.min())
    span = int(ids.max()) - low + 1
    if span <= _DENSE_SPAN * len(ids) + _DENSE_FLOOR:
        ids -= low
        totals = np.bincount(ids, weights=weights, minlength=span)
        chunk_ids = np.flatnonzero(totals)
        scores = totals[chunk_ids]
        chunk_ids += low
    else:
        chunk_ids, where = np.unique(ids, return_inverse=True)
        scores = np.bincount(where, weights=weights, minlength=len(chunk_ids))
    if len(chunk_ids) > limit:
        # Everything scoring about the limit-th best or more, so that ties at the cut go by id.
        kth = np.partition(scores, len(scores) - limit)[len(scores) - limit]
        keep = scores >= kth - 1e-9 * max(1.0, kth)
        chunk_ids, scores = chunk_ids[keep], scores[keep]
    # Sums of the same weights in another order differ in the last bits: ranked by the score
    # rounded, equal scores tie, and ties go by chunk id.
    order = np.lexsort((chunk_ids, -np.round(scores, 9)))[:limit]
    return [(int(chunk_ids[i]), float(scores[i])) for i in order]


async def _fetch_binary(
    session: AsyncSession, query: str, params: dict[str, Any]
) -> list[tuple[Any, ...]]:
    """Rows of `query` (psycopg placeholders) on the session's connection, in its transaction,
    in PostgreSQL's binary format.

    SQLAlchemy's statements come back as text, where a bytea is twice its size in hex and
    decoded again: for the megabytes of postings a question over a large library reads, that
    was a third of BM25's time (16 of 49 ms at 1M chunks, docs/database.md).
    """
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    async with driver.cursor(binary=True) as cursor:
        await cursor.execute(query, params)
        return list(await cursor.fetchall())


async def lexical_ranking(
    session: AsyncSession,
    *,
    owner_id: str,
    document_pks: Scope,
    question: str,
    limit: int,
) -> Ranking:
    """Chunks holding any of the question's terms, best BM25 score first."""
    query, params = _for_scope(
        document_pks, POSTINGS_SQL, LIBRARY_POSTINGS_SQL, owner=owner_id, question=question
    )
    rows = await _fetch_binary(session, query, params)
    terms = [(row[2], row[3]) for row in rows if row[2] is not None]
    if not terms or rows[0][0] is None:
        return []
    return bm25_top(terms, float(rows[0][0]), float(rows[0][1]), limit)


# Each form that has lexemes (a form of stop words alone has none), and whether all of them occur
# in some posting row: the first row found for each lexeme answers.
_PRESENT = """
    SELECT f.form,
           NOT EXISTS (SELECT FROM unnest(v.lexemes) l(lexeme)
                       WHERE NOT EXISTS (SELECT FROM postings p
                                         WHERE p.owner_id = :owner AND p.lexeme = l.lexeme
                                         {postings}))
    FROM unnest(CAST(:forms AS text[])) AS f(form)
    CROSS JOIN LATERAL (SELECT array_agg(t.lexeme) AS lexemes
                        FROM unnest(to_tsvector('english', f.form)) t) v
    WHERE v.lexemes IS NOT NULL
"""
_PRESENT_SQL = text(_PRESENT.format(postings="AND p.document_pk = ANY(:pks)")).bindparams(_PKS)
_LIBRARY_PRESENT_SQL = text(_PRESENT.format(postings=""))


async def presence(
    session: AsyncSession, *, owner_id: str, document_pks: Scope, forms: list[str]
) -> dict[str, bool]:
    """Whether each of `forms` (a word, a year, or words such as "best buy") occurs in the
    documents searched: every word of it that the lexical index keeps, in some document. A form
    of stop words alone, which the index does not keep, is left out."""
    if not forms or not document_pks:
        return {}
    query, params = _for_scope(
        document_pks, _PRESENT_SQL, _LIBRARY_PRESENT_SQL, owner=owner_id, forms=forms
    )
    result = await session.execute(query, params)
    return {str(form): bool(found) for form, found in result.all()}
