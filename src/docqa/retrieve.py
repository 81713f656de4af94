"""Retrieval: vector nearest neighbours and a lexical ranking over the caller's documents, fused.

Every query filters by owner and document inside SQL. First version: cosine kNN through the HNSW
index, OR-of-lexemes full text ranked by `ts_rank_cd`, fused with reciprocal rank fusion.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID

from docqa.db.engine import Database
from docqa.ingest.embed import Embedder

Mode = Literal["hybrid", "lexical", "vector"]
RRF_K = 60
CANDIDATES = 50


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    document_pk: uuid.UUID
    document_id: str
    filename: str
    page: int
    text: str
    score: float


_VECTOR_SQL = text(
    """
    SELECT c.id FROM chunks c
    WHERE c.owner_id = :owner AND c.document_pk = ANY(:pks)
    ORDER BY c.embedding <=> CAST(:qvec AS vector)
    LIMIT :limit
    """
).bindparams(bindparam("pks", type_=ARRAY(UUID(as_uuid=True))))

_LEXICAL_SQL = text(
    """
    WITH q AS (
        SELECT string_agg(quote_literal(lexeme), ' | ')::tsquery AS query
        FROM unnest(to_tsvector('english', :question))
    )
    SELECT c.id FROM chunks c, q
    WHERE c.owner_id = :owner AND c.document_pk = ANY(:pks) AND c.tsv @@ q.query
    ORDER BY ts_rank_cd(c.tsv, q.query) DESC, c.id
    LIMIT :limit
    """
).bindparams(bindparam("pks", type_=ARRAY(UUID(as_uuid=True))))

_HITS_SQL = text(
    """
    SELECT c.id, c.document_pk, d.document_id, d.filename, c.page_start, c.text
    FROM chunks c JOIN documents d ON d.pk = c.document_pk
    WHERE c.id = ANY(:ids) AND c.owner_id = :owner
    """
)


def rrf(rankings: list[list[int]], k: int = RRF_K) -> dict[int, float]:
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, chunk_id in enumerate(ranking):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (k + rank + 1)
    return scores


async def retrieve(
    db: Database,
    embedder: Embedder,
    *,
    owner_id: str,
    document_pks: list[uuid.UUID],
    question: str,
    top_k: int,
    mode: Mode = "hybrid",
) -> list[Hit]:
    """The `top_k` best chunks for `question` among `document_pks` (all owned by `owner_id`)."""
    if not document_pks:
        return []
    rankings: list[list[int]] = []
    async with db.session() as session:
        if mode in ("hybrid", "vector"):
            qvec = await asyncio.to_thread(embedder.embed_query, question)
            await session.execute(text("SET LOCAL hnsw.ef_search = 100"))
            result = await session.execute(
                _VECTOR_SQL,
                {
                    "owner": owner_id,
                    "pks": document_pks,
                    "qvec": str(qvec.tolist()),
                    "limit": CANDIDATES,
                },
            )
            rankings.append(list(result.scalars()))
        if mode in ("hybrid", "lexical"):
            result = await session.execute(
                _LEXICAL_SQL,
                {"owner": owner_id, "pks": document_pks, "question": question, "limit": CANDIDATES},
            )
            rankings.append(list(result.scalars()))
        scores = rrf(rankings)
        best = sorted(scores, key=lambda cid: scores[cid], reverse=True)[:top_k]
        if not best:
            return []
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
        )
        for cid in best
        if cid in by_id
    ]
