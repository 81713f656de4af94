"""Vector ranking: the nearest chunks by cosine distance, filtered by owner and document in SQL.

The filter is applied inside the HNSW scan with pgvector's iterative index scans (0.8): the index
keeps walking its graph until `limit` rows pass the filter, or until it has visited
`hnsw.max_scan_tuples` rows. A filter that keeps a small share of the table would make it walk
far, and a small scope is cheap to scan whole, so small scopes (in rows, or as a share of the
table) are scanned exactly. A scan that still comes back short falls back to the exact one, so a
scope never returns fewer rows than it holds. Measurements: docs/database.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from docqa.ingest.embed import Embedder
from docqa.search.lexical import Library, Ranking, Scope

# Up to this many chunks the exact scan is always used: it is always right, and cheap (0.4 ms for
# 100 chunks, 3 to 7 ms for 1,000 on this 2-core machine).
EXACT_MAX_CHUNKS = 2_000
# Candidates HNSW keeps while it walks (`hnsw.ef_search`). On real embeddings HNSW's top 10
# matched the exact top 10 at 0.986 with 200 (0.975 with 100, 1.0 with 400); in half precision,
# on clustered vectors, 0.998 with 100 and 200.
EF_SEARCH = 200
# The most rows one iterative scan may visit before it gives up. To find `limit` rows of a filter
# that keeps a share s of the table it visits about ef_search / s rows, so this sets the smallest
# share HNSW serves (1% at ef_search 200); smaller shares of a big table are scanned exactly.
MAX_SCAN_TUPLES = 20_000

_PKS = bindparam("pks", type_=ARRAY(UUID(as_uuid=True)))

# How many chunks the documents hold, and about how many the whole table does.
_TOTAL = "(SELECT greatest(reltuples, 1) FROM pg_class WHERE oid = 'chunks'::regclass) AS total"
_COUNT_SQL = text(
    f"""
    SELECT coalesce(sum(d.chunk_count), 0) AS n, {_TOTAL}
    FROM documents d
    WHERE d.owner_id = :owner AND d.pk = ANY(:pks)
    """  # noqa: S608 (constant text)
).bindparams(_PKS)
# The same for the whole library (`Library`), and the owner's documents that are not ready: a
# document being read already has chunks, which must not be searched yet. Usually none or a few,
# where the library's keys are thousands: a filter of thousands costs milliseconds to plan and
# to send (6 and 20 ms at 1M chunks).
_LIBRARY_COUNT_SQL = text(
    f"""
    SELECT coalesce(sum(d.chunk_count) FILTER (WHERE d.status = 'ready'), 0) AS n,
           coalesce(array_agg(d.pk) FILTER (WHERE d.status <> 'ready'), '{{}}') AS excluded,
           {_TOTAL}
    FROM documents d
    WHERE d.owner_id = :owner
    """  # noqa: S608 (constant text)
)

_VECTOR_SELECT = """
    SELECT c.id, 1 - (c.embedding <=> CAST(:qvec AS vector)) AS score
    FROM chunks c
    WHERE c.owner_id = :owner AND {documents}
"""
# The HNSW index is on the embeddings in half precision (migration 0006), so the ORDER BY is that
# expression, alone (a tie-breaker column keeps the planner off the index); the similarities
# returned are computed from the full-precision column.
_HNSW_ORDER = (
    " ORDER BY CAST(c.embedding AS halfvec(384)) <=> CAST(:qvec AS halfvec(384)) LIMIT :limit"
)
# The exact scan sorts anyway, in full precision, and breaks ties (identical chunks) by id.
_EXACT_ORDER = " ORDER BY c.embedding <=> CAST(:qvec AS vector), c.id LIMIT :limit"
_NAMED = _VECTOR_SELECT.format(documents="c.document_pk = ANY(:pks)")
_LIBRARY = _VECTOR_SELECT.format(documents="c.document_pk <> ALL(:excluded)")
_EXCLUDED = bindparam("excluded", type_=ARRAY(UUID(as_uuid=True)))
_HNSW_SQL = text(_NAMED + _HNSW_ORDER).bindparams(_PKS)
_EXACT_SQL = text(_NAMED + _EXACT_ORDER).bindparams(_PKS)
_LIBRARY_HNSW_SQL = text(_LIBRARY + _HNSW_ORDER).bindparams(_EXCLUDED)
_LIBRARY_EXACT_SQL = text(_LIBRARY + _EXACT_ORDER).bindparams(_EXCLUDED)

# Settings for one transaction. The iterative scan in relaxed order finds more of the true
# neighbours under a filter than strict order (pgvector's advice); the rows are sorted again after.
# Sorting is turned off so that the planner keeps the ORDER BY on the HNSW index instead of reading
# the filter's rows through the (owner_id, document_pk) index and sorting them: that is the exact
# plan, which `use_hnsw` has already judged the slower one here.
_HNSW_SETTINGS = text(
    """
    SELECT set_config('hnsw.ef_search', :ef, true),
           set_config('hnsw.iterative_scan', 'relaxed_order', true),
           set_config('hnsw.max_scan_tuples', :max_tuples, true),
           set_config('enable_sort', 'off', true)
    """
)


def use_hnsw(limit: int, scope: int, total: float) -> bool:
    """Whether HNSW with an iterative scan should serve a filter that keeps `scope` of about
    `total` rows, rather than the exact scan."""
    if scope <= EXACT_MAX_CHUNKS:
        return False
    share = scope / max(total, scope)
    return max(EF_SEARCH, limit) / share <= MAX_SCAN_TUPLES


async def vector_ranking(
    session: AsyncSession,
    *,
    owner_id: str,
    document_pks: Scope,
    qvec: Awaitable[list[float]],
    limit: int,
    exact: bool = False,
) -> Ranking:
    """The nearest chunks by cosine distance, nearest first, with their cosine similarity.

    `qvec` (from `start_embedding`) may still be on its way: the plan (how many chunks the
    filter keeps, and so HNSW or exact) is made while the question is being embedded. `exact`
    forces the exact scan (for measuring the index's recall).
    """
    params: dict[str, Any] = {"owner": owner_id, "limit": limit}
    if isinstance(document_pks, Library):
        counts = (await session.execute(_LIBRARY_COUNT_SQL, params)).one()
        params["excluded"] = list(counts.excluded)
        hnsw_sql, exact_sql = _LIBRARY_HNSW_SQL, _LIBRARY_EXACT_SQL
    else:
        params["pks"] = document_pks
        counts = (await session.execute(_COUNT_SQL, params)).one()
        hnsw_sql, exact_sql = _HNSW_SQL, _EXACT_SQL
    scope = int(counts.n)
    hnsw = not exact and use_hnsw(limit, scope, float(counts.total))
    if hnsw:
        settings = {"ef": str(max(EF_SEARCH, limit)), "max_tuples": str(MAX_SCAN_TUPLES)}
        await session.execute(_HNSW_SETTINGS, settings)
    vector = await qvec
    if scope == 0:
        return []
    params["qvec"] = str(vector)
    if hnsw:
        rows = [(row.id, float(row.score)) for row in await session.execute(hnsw_sql, params)]
        if len(rows) >= min(limit, scope):
            # Relaxed order: nearly sorted; sorted here, ties (identical chunks) by id.
            return sorted(rows, key=lambda r: (-r[1], r[0]))
    # Exact: with index scans off, the HNSW index cannot be used; the filter still uses the
    # (owner_id, document_pk) index through a bitmap scan.
    await session.execute(text("SET LOCAL enable_indexscan = off"))
    await session.execute(text("SET LOCAL enable_sort = on"))
    try:
        return [(row.id, float(row.score)) for row in await session.execute(exact_sql, params)]
    finally:
        await session.execute(text("SET LOCAL enable_indexscan = on"))


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
