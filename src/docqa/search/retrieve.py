"""Retrieval: BM25 and vector nearest neighbours over the caller's chunks, fused.

Every query filters by owner and document inside SQL, never afterwards. The two sides run at once
(`search.lexical`, `search.vector`); their scores are combined (`fuse`), and each page gives at
most one source: its best chunk, with the chunks either side of it on the page.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from sqlalchemy import Row, text

from docqa.db.engine import Database
from docqa.ingest.embed import Embedder
from docqa.search.expand import lexical_query
from docqa.search.figures import asks_for_figure, figure_share
from docqa.search.lexical import Ranking, Scope, lexical_ranking
from docqa.search.rerank import RERANK_CANDIDATES, Reranker, rerank_hits
from docqa.search.vector import drop_embedding, start_embedding, vector_ranking

Mode = Literal["hybrid", "lexical", "vector"]
# Candidates taken from each side before fusion (at least top_k). A chunk one side ranks 60th
# still adds that side's score to the other's (docs/quality.md).
CANDIDATES = 100
# The lexical side's share of the fused score (the vector side has the rest): equal, since no
# weight measured here held on both kinds of collection (filings favour the vectors, SciFact
# BM25).
LEXICAL_WEIGHT = 0.5


@dataclass
class SearchStats:
    """What a search saw besides its hits, for judging how well the documents match."""

    best_similarity: float | None = None  # the nearest chunk's cosine similarity to the question


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
    rects: list[list[float]] = field(default_factory=list)  # where it sits on its page


_HITS_SQL = text(
    """
    SELECT c.id, c.document_pk, d.document_id, d.filename, c.page_start, c.text, c.token_count,
           coalesce(c.rects, '[]'::jsonb) AS rects, c.seq, c.char_start, c.char_end
    FROM chunks c JOIN documents d ON d.pk = c.document_pk
    WHERE c.id = ANY(:ids) AND c.owner_id = :owner
    """
)


def fuse(
    vector: Ranking, lexical: Ranking, lexical_weight: float = LEXICAL_WEIGHT
) -> dict[int, float]:
    """A weighted sum of the two sides' scores, each scaled to 0..1 over its own candidates
    (min-max: the best candidate 1, the last 0; a side whose candidates all score alike gives
    each 1).

    Scores carry what ranks throw away: a side whose best match stands far above the rest
    decides more of the order than a side whose candidates all score alike. Cosine
    similarities crowd into a narrow band, so scaling them by their best alone left every
    vector candidate between about 0.6 and 1 and let BM25 decide. Measured on MMLongBench's
    candidates from two ingestions (before and after PDF tables), this beat reciprocal rank
    fusion and the best-only scaling on both: page hit@5 0.773 and 0.771 against RRF's 0.763 and
    0.761, and 0.602 and 0.699 on the 10-K filings against 0.542 and 0.687 for best-only
    scaling (docs/quality.md).
    """
    scores: dict[int, float] = {}
    for ranking, weight in ((lexical, lexical_weight), (vector, 1 - lexical_weight)):
        if not ranking:
            continue
        top, low = ranking[0][1], ranking[-1][1]
        span = top - low
        for chunk_id, score in ranking:
            scaled = (score - low) / span if span > 1e-9 else 1.0
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight * scaled
    return scores


# Chunks looked up to find `keep` distinct pages: most questions need far fewer.
PAGE_LOOKAHEAD = 4
# A question that asks for a figure: the best fused candidates are reordered with this much
# added to each for the share of its lines that are rows of figures (`figures.figure_share`).
FIGURE_BONUS = 0.2
FIGURE_CANDIDATES = 40


async def _chunk_rows(db: Database, owner_id: str, ids: list[int]) -> dict[int, Row[Any]]:
    async with db.session() as session:
        rows = (await session.execute(_HITS_SQL, {"ids": ids, "owner": owner_id})).all()
    return {row.id: row for row in rows}


async def _figures_first(
    db: Database, owner_id: str, ranked: list[int], scores: dict[int, float]
) -> tuple[list[int], dict[int, Row[Any]]]:
    """For a question that asks for a figure: the ranking with its head reordered, passages
    made of figures (a statement's rows, a table's) before prose about them, and the head's
    rows, fetched on the way.

    On MMLongBench (two ingestions, with and without PDF tables as Markdown), page hit@5 rose
    from 0.799 to 0.809 and from 0.773 to 0.803, and on its 10-K filings from 0.699 to 0.723 and
    from 0.602 to 0.687; questions with text evidence did not move (docs/quality.md).
    """
    head = ranked[:FIGURE_CANDIDATES]
    rows = await _chunk_rows(db, owner_id, head)
    boosted = {
        cid: scores[cid] + FIGURE_BONUS * figure_share(rows[cid].text)
        for cid in head
        if cid in rows
    }
    scores.update(boosted)
    return sorted(head, key=lambda cid: (-scores[cid], cid)) + ranked[len(head) :], rows


async def _one_per_page(
    db: Database,
    owner_id: str,
    ranked: list[int],
    scores: dict[int, float],
    keep: int,
    known: dict[int, Row[Any]] | None = None,
) -> tuple[list[Hit], dict[int, Row[Any]]]:
    """The best `keep` chunks of the ranking from distinct pages, best first (`known`: rows
    already fetched).

    A page's best chunk stands for it. Its next chunks would only send the reader to the same
    place again and crowd out other pages: on MMLongBench, page hit@5 rose from 0.696 to 0.744
    when sources came from five distinct pages instead of five chunks.
    """
    hits: list[Hit] = []
    seen: set[tuple[uuid.UUID, int]] = set()
    fetched = dict(known or {})
    start = 0
    while len(hits) < keep and start < len(ranked):
        batch = ranked[start : start + max(keep * PAGE_LOOKAHEAD, keep + 20)]
        start += len(batch)
        if missing := [cid for cid in batch if cid not in fetched]:
            fetched.update(await _chunk_rows(db, owner_id, missing))
        for cid in batch:
            row = fetched.get(cid)
            if row is None or (row.document_pk, row.page_start) in seen:
                continue
            seen.add((row.document_pk, row.page_start))
            hits.append(
                Hit(
                    chunk_id=cid,
                    document_pk=row.document_pk,
                    document_id=row.document_id,
                    filename=row.filename,
                    page=row.page_start,
                    text=row.text,
                    score=round(scores[cid], 6),
                    token_count=row.token_count,
                    rects=row.rects,
                )
            )
            if len(hits) == keep:
                break
    return hits, fetched


# Chunks either side of a source's best chunk, on its page, that join it in the source.
NEIGHBOURS = 1

_NEIGHBOURS_SQL = text(
    """
    SELECT c.id, c.document_pk, c.seq, c.page_start, c.char_start, c.char_end, c.text,
           c.token_count, coalesce(c.rects, '[]'::jsonb) AS rects
    FROM chunks c
    JOIN unnest(CAST(:pks AS uuid[]), CAST(:seqs AS int[])) AS w(pk, seq)
      ON c.document_pk = w.pk AND c.seq BETWEEN w.seq - :reach AND w.seq + :reach
    WHERE c.owner_id = :owner AND c.seq <> w.seq
    """
)


def _span_text(chunk: Row[Any]) -> str:
    """The part of a chunk's text that is its span of the page: a table's later chunks start
    with the table's header rows again, before the span."""
    whole: str = chunk.text
    extra = len(whole) - (chunk.char_end - chunk.char_start)
    return whole[extra:] if extra > 0 else whole


def merge_chunks(chunks: Sequence[Row[Any]]) -> tuple[str, int, list[list[float]]]:
    """One passage of neighbouring chunks of one page, in page order: the first chunk's text,
    then what each next one adds past their overlap. Returns the text, its size in word pieces
    (an upper bound: overlaps are counted twice) and the chunks' rectangles."""
    ordered = sorted(chunks, key=lambda c: (c.char_start, c.char_end))
    first = ordered[0]
    text_, end, tokens, rects = first.text, first.char_end, first.token_count, list(first.rects)
    for chunk in ordered[1:]:
        if chunk.char_end <= end:
            continue
        span = _span_text(chunk)
        if chunk.char_start >= end:
            text_ = f"{text_.rstrip()}\n{span.lstrip()}"
        else:
            text_ += span[end - chunk.char_start :]
        end = chunk.char_end
        tokens += chunk.token_count
        rects.extend(chunk.rects)
    return text_, tokens, rects


async def _with_neighbours(
    db: Database, owner_id: str, hits: list[Hit], fetched: dict[int, Row[Any]]
) -> list[Hit]:
    """Each source widened to the chunks next to its best chunk on the same page.

    A 200-word-piece chunk often holds half of what answers: the rows of a statement without
    their totals, a sentence without the list it leads into. Sources stay one per page and are
    found by their best chunk, so retrieval is unchanged; the answerer reads more of each page.
    On MMLongBench the extractive answer hit rose from 61 to 66 of 299 questions and citation
    precision from 0.415 to 0.434 (one neighbour each side; two gave 63, docs/quality.md).
    """
    if not hits:
        return hits
    anchors = [fetched[hit.chunk_id] for hit in hits]
    async with db.session() as session:
        rows = (
            await session.execute(
                _NEIGHBOURS_SQL,
                {
                    "pks": [a.document_pk for a in anchors],
                    "seqs": [a.seq for a in anchors],
                    "owner": owner_id,
                    "reach": NEIGHBOURS,
                },
            )
        ).all()
    near: dict[tuple[uuid.UUID, int], Row[Any]] = {(r.document_pk, r.seq): r for r in rows}
    widened = []
    for hit, anchor in zip(hits, anchors, strict=True):
        chunks = [anchor]
        for step in (-1, 1):  # outwards while the chunks stay on the page
            for distance in range(1, NEIGHBOURS + 1):
                chunk = near.get((anchor.document_pk, anchor.seq + step * distance))
                if chunk is None or chunk.page_start != anchor.page_start:
                    break
                chunks.append(chunk)
        if len(chunks) == 1:
            widened.append(hit)
            continue
        merged, tokens, rects = merge_chunks(chunks)
        widened.append(replace(hit, text=merged, token_count=tokens, rects=rects))
    return widened


async def retrieve(
    db: Database,
    embedder: Embedder,
    *,
    owner_id: str,
    document_pks: Scope,
    question: str,
    top_k: int,
    mode: Mode = "hybrid",
    query_vector: asyncio.Future[list[float]] | None = None,
    reranker: Reranker | None = None,
    rerank_candidates: int = RERANK_CANDIDATES,
    stats: SearchStats | None = None,
) -> list[Hit]:
    """The `top_k` best chunks for `question` among `document_pks` (all owned by `owner_id`),
    each from a different page and widened to its neighbours on that page (`text`).

    `query_vector`, from `start_embedding(embedder, question)`, lets a caller start embedding
    the question before it knows which documents to search.

    `reranker` (optional) reorders the best `rerank_candidates` fused chunks before the cut to
    `top_k`; their `score` is then the reranker's. A reranker that fails leaves the order as is.

    `score` is the fused score in hybrid mode, BM25 in lexical mode and cosine similarity in
    vector mode: comparable within one answer, not across modes. `stats`, when given, is filled
    in with what the search saw (the nearest chunk's similarity).
    """
    if not document_pks or top_k <= 0:
        return []
    limit = max(CANDIDATES, top_k)

    async def vector_side() -> Ranking:
        embedding = query_vector or start_embedding(embedder, question)
        try:
            async with db.session() as session:
                ranking = await vector_ranking(
                    session,
                    owner_id=owner_id,
                    document_pks=document_pks,
                    qvec=embedding,
                    limit=limit,
                )
            if stats is not None and ranking:
                stats.best_similarity = ranking[0][1]
            return ranking
        finally:
            if query_vector is None:  # a caller's embedding is the caller's to drop
                await drop_embedding(embedding)

    async def lexical_side() -> Ranking:
        async with db.session() as session:
            return await lexical_ranking(
                session,
                owner_id=owner_id,
                document_pks=document_pks,
                question=lexical_query(question),
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
    scores = fuse(rankings[0], rankings[1]) if mode == "hybrid" else dict(rankings[0])
    # With a reranker, the texts of all of its candidates are needed, not only the top_k.
    keep = top_k if reranker is None else max(top_k, rerank_candidates)
    ranked = sorted(scores, key=lambda cid: (-scores[cid], cid))
    known = None
    if mode == "hybrid" and asks_for_figure(question):
        ranked, known = await _figures_first(db, owner_id, ranked, scores)
    hits, fetched = await _one_per_page(db, owner_id, ranked, scores, keep, known)
    if reranker is not None:
        hits = (await rerank_hits(reranker, question, hits, rerank_candidates))[:top_k]
    return await _with_neighbours(db, owner_id, hits, fetched)
