"""An answer in flight: its sources, its text as it streams, and what is known of it at the end.

Both answerers produce an `Answer`. A model's reply streams through a citation filter (a marker
that names no source is dropped) and, once complete, is checked: each cited sentence gets a
support score against its sources, and a reply whose citations are all unsupported, or that says
the documents do not hold the answer, is marked `answered: false`. The extractive answerer knows
all of this before its first word. Either way the quotes (the exact source sentences behind the
answer) get their rectangles on the page at the end, after the last word has been sent.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import select

from docqa.answer import extractive
from docqa.answer.llm import CompletionStream
from docqa.answer.support import (
    SUPPORTED_AT,
    Check,
    CitationFilter,
    claims,
    claims_support,
    refuses,
)
from docqa.db.engine import Database
from docqa.db.models import Page
from docqa.formats.geometry import rects_for_span
from docqa.ingest.embed import Embedder
from docqa.search.retrieve import Hit

log = logging.getLogger(__name__)

Mode = Literal["llm", "extractive"]


class TextStream:
    """A finished text streamed in small deltas: the extractive answerer's `CompletionStream`."""

    def __init__(self, text: str, finish_reason: str) -> None:
        self._text = text
        self.finish_reason: str | None = finish_reason
        self.usage: dict[str, int] | None = {
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "total_tokens": 0,
        }

    async def deltas(self) -> AsyncIterator[str]:
        for delta in extractive.deltas(self._text):
            yield delta
            await asyncio.sleep(0)  # let the other streams on this loop move too

    async def aclose(self) -> None:
        return None


def source_view(n: int, hit: Hit) -> dict[str, Any]:
    """One retrieved passage as clients see it, numbered `n`: an item of the `sources` event,
    and of every protocol's sources or search results (so a field added here reaches them all).
    """
    return {
        "n": n,
        "document_id": hit.document_id,
        "filename": hit.filename,
        "page": hit.page,
        "chunk_id": hit.chunk_id,
        "score": hit.score,
        "text": hit.text,
        "rects": hit.rects,
    }


@dataclass
class Quote:
    n: int  # the source it comes from
    text: str
    rects: list[list[float]] = field(default_factory=list)


@dataclass
class Checks:
    """What the end-of-answer checks need: the database (page geometry) and the embedder."""

    db: Database
    embedder: Embedder


@dataclass
class Answer:
    """An answer that has started: its sources are fixed and its text is ready to stream."""

    mode: Mode
    question: str  # the standalone form that retrieval used
    sources: list[Hit]
    retrieval_ms: float
    stream: CompletionStream
    checks: Checks | None = None
    answered: bool = True
    quotes: list[Quote] = field(default_factory=list)
    citations: list[dict[str, Any]] | None = None  # model answers only
    text: str = ""  # what has been streamed so far
    concluded: bool = False
    # Runs once the text is complete (the model-mode checks); set by the answerer.
    conclude_hook: Callable[[Answer], Awaitable[None]] | None = None

    def source_views(self) -> list[dict[str, Any]]:
        """The `sources` event: what each `[n]` of the answer refers to."""
        return [source_view(n, hit) for n, hit in enumerate(self.sources, start=1)]

    def done_view(self, finish_reason: str, timings_ms: dict[str, float | None]) -> dict[str, Any]:
        """The `done` event: how the answer ended, whether it answers, what backs it, what it
        cost and how long it took.

        The one place this payload is built: `/api/v1/ask`, the OpenAI-compatible endpoint and
        the MCP `ask` tool all send what it returns, so a field added here reaches every one.
        """
        view: dict[str, Any] = {
            "finish_reason": finish_reason,
            "mode": self.mode,
            "answered": self.answered and finish_reason not in ("error", "no_sources"),
            "quotes": [
                {
                    "n": q.n,
                    "page": self.sources[q.n - 1].page,
                    "text": q.text,
                    "rects": q.rects,
                }
                for q in self.quotes
                if 1 <= q.n <= len(self.sources)
            ],
            "usage": self.stream.usage,
            "timings_ms": timings_ms,
        }
        if self.mode == "llm":
            view["citations"] = self.citations or []
        return view

    async def deltas(self) -> AsyncIterator[str]:
        """The answer's text as it comes; the checks run after the last piece."""
        cleaner = CitationFilter(len(self.sources)) if self.mode == "llm" else None
        async for delta in self.stream.deltas():
            piece = cleaner.feed(delta) if cleaner else delta
            if piece:
                self.text += piece
                yield piece
        if cleaner and (tail := cleaner.flush()):
            self.text += tail
            yield tail
        await self.conclude()

    async def conclude(self) -> None:
        """Run the end-of-answer checks once: the model-mode verdict, then quote rectangles."""
        if self.concluded:
            return
        self.concluded = True
        if self.conclude_hook is not None:
            await self.conclude_hook(self)
        if self.checks is not None and self.quotes:
            try:
                await place_quotes(self.checks.db, self.sources, self.quotes)
            except Exception:  # the answer stands without its highlights
                log.warning("could not place the quotes on their pages", exc_info=True)

    async def aclose(self) -> None:
        await self.stream.aclose()


async def check_model_reply(answer: Answer) -> None:
    """The model-mode verdict: which citations their sources support, which source sentence
    backs each claim, and whether the reply answers at all."""
    checks = answer.checks
    assert checks is not None
    found = claims(answer.text)
    if not found:
        answer.answered = bool(answer.text.strip()) and not refuses(answer.text)
        answer.citations = []
        return
    texts = {n: hit.text for n, hit in enumerate(answer.sources, start=1)}
    verdicts = await asyncio.to_thread(_support_all, found, texts, checks.embedder)
    supported: dict[int, bool] = {}
    quotes: dict[tuple[int, str], Quote] = {}
    for n, score, sentence in verdicts:
        ok = score >= SUPPORTED_AT
        supported[n] = supported.get(n, False) or ok
        if ok:
            quotes.setdefault((n, sentence), Quote(n, sentence))
    answer.citations = [{"n": n, "supported": ok} for n, ok in sorted(supported.items())]
    answer.quotes = list(quotes.values())
    answer.answered = any(supported.values()) and not refuses(answer.text)


def _support_all(
    found: list[Any], texts: dict[int, str], embedder: Embedder
) -> list[tuple[int, float, str]]:
    source_words = {n: extractive.terms(t) for n, t in texts.items()}
    cited_by: list[int] = []
    checks: list[Check] = []
    for claim in found:
        words = extractive.terms(claim.text)
        for n in claim.sources:
            if n in texts:
                cited_by.append(n)
                checks.append(Check(claim.text, words, texts[n], source_words[n]))
    supports = claims_support(checks, embedder)
    return [(n, s.score, s.sentence) for n, s in zip(cited_by, supports, strict=True)]


def _pattern(quote: str) -> re.Pattern[str]:
    """A quote as it may sit in its page: the same words, any run of spaces or line breaks
    between them, a hyphen and line break where a word was split."""
    words = quote.split()
    return re.compile(r"\s+".join(re.escape(w) for w in words))


async def place_quotes(db: Database, sources: list[Hit], quotes: list[Quote]) -> None:
    """Each quote's rectangles on its page, from the page's word boxes (none: no page image)."""
    wanted: dict[tuple[uuid.UUID, int], list[Quote]] = {}
    for quote in quotes:
        hit = sources[quote.n - 1]
        if hit.rects:  # only pages that can be shown as images have boxes
            wanted.setdefault((hit.document_pk, hit.page), []).append(quote)
    if not wanted:
        return
    async with db.session() as session:
        for (pk, page_no), group in wanted.items():
            row = (
                await session.execute(
                    select(Page.text, Page.words).where(
                        Page.document_pk == pk, Page.page_no == page_no
                    )
                )
            ).one_or_none()
            if row is None or not row.words:
                continue
            for quote in group:
                match = _pattern(quote.text).search(row.text)
                if match:
                    quote.rects = rects_for_span(row.words, match.start(), match.end())
