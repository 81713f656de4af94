"""Reranking: an optional rerank server reorders retrieval's best fused candidates.

Any server speaking the `/rerank` API works (docs/reranking.md). Cohere, Jina, vLLM and Infinity
take `{"model", "query", "documents", "top_n"}` and answer `{"results": [{"index",
"relevance_score"}]}`; Hugging Face's text-embeddings-inference (TEI) takes `{"query", "texts"}`
and answers `[{"index", "score"}]`. `DOCQA_RERANK_API` picks the request's shape; the answer is
read in either shape.

Reranking never fails an ask: a server that is down, slower than `DOCQA_RERANK_TIMEOUT_S`, or
answers something unreadable makes `rerank` return None after one warning in the log, and the
fused order stands.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx

from docqa.settings import Settings

if TYPE_CHECKING:
    from docqa.search.retrieve import Hit

log = logging.getLogger(__name__)

RerankApi = Literal["cohere", "tei"]
# Fused chunks reranked per ask, as `DOCQA_RERANK_CANDIDATES` defaults (docs/reranking.md).
RERANK_CANDIDATES = 30


class Reranker(Protocol):
    async def rerank(self, query: str, texts: Sequence[str]) -> list[float] | None:
        """A relevance score for each text, in the order given (higher is more relevant), or
        None when the reranker failed: the caller then keeps the order it has."""
        ...


class MalformedReply(ValueError):
    """The rerank server answered, but not with one usable score per text."""


class RerankFailed(Exception):
    """Why one rerank request gave no scores, in words fit for the log."""


def request_body(api: RerankApi, model: str | None, query: str, texts: Sequence[str]) -> Any:
    """The JSON body of one `/rerank` request in the server's shape."""
    if api == "tei":
        # TEI refuses a text longer than the model's window unless told to truncate it.
        return {"query": query, "texts": list(texts), "truncate": True}
    body: dict[str, Any] = {"query": query, "documents": list(texts), "top_n": len(texts)}
    if model:
        body["model"] = model
    return body


def parse_scores(payload: Any, count: int) -> list[float]:
    """One score per text, in the texts' order, from either shape of answer.

    Raises `MalformedReply` unless every index from 0 to `count - 1` comes back exactly once
    with a finite number: a partial or repeated answer cannot be trusted to order anything.
    """
    if isinstance(payload, dict) and isinstance(payload.get("results"), list):
        items = payload["results"]  # Cohere, Jina, vLLM, Infinity
    elif isinstance(payload, list):
        items = payload  # TEI
    else:
        raise MalformedReply("neither a `results` list nor a list of scores")
    scores: list[float | None] = [None] * count
    for item in items:
        if not isinstance(item, dict):
            raise MalformedReply("an item that is not an object")
        index = item.get("index")
        score = item.get("relevance_score", item.get("score"))
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
            raise MalformedReply(f"index {index!r:.40} names no text")
        if (
            isinstance(score, bool)
            or not isinstance(score, int | float)
            or not math.isfinite(score)
        ):
            raise MalformedReply(f"score {score!r:.40} is not a finite number")
        if scores[index] is not None:
            raise MalformedReply(f"index {index} scored twice")
        scores[index] = float(score)
    missing = sum(1 for s in scores if s is None)
    if missing:
        raise MalformedReply(f"{missing} of {count} texts without a score")
    return [s for s in scores if s is not None]


def _safe_url(url: str) -> str:
    """The URL as it may be logged: no user, password or query (any of them may hold a key)."""
    try:
        return str(httpx.URL(url).copy_with(username=None, password=None, query=None))
    except httpx.InvalidURL:
        return "(not a valid URL)"


class HttpReranker:
    """A rerank server over HTTP, through one `httpx.AsyncClient` shared by every ask."""

    def __init__(
        self,
        base_url: str,
        *,
        api: RerankApi = "cohere",
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        self.url = base_url.rstrip("/") + "/rerank"
        self._api: RerankApi = api
        self._model = model
        self._timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout_s)
        self.failures = 0  # since start: `docqa eval` reports them

    @property
    def safe_url(self) -> str:
        """The endpoint as it may be logged or reported: no user, password or query."""
        return _safe_url(self.url)

    async def rerank(self, query: str, texts: Sequence[str]) -> list[float] | None:
        if not texts:
            return []
        try:
            return await self._scores(query, texts)
        except RerankFailed as exc:
            reason = str(exc)
        except Exception as exc:  # anything else (a malformed URL, say) must not fail the ask
            reason = f"the request failed ({type(exc).__name__})"
        # One line per failed ask, naming the server without credentials, never the key.
        self.failures += 1
        log.warning(
            "reranking skipped, the fused order is kept: %s",
            reason,
            extra={"rerank_url": self.safe_url},
        )
        return None

    async def _scores(self, query: str, texts: Sequence[str]) -> list[float]:
        try:
            # The whole exchange has one deadline: httpx's own timeout is per read, and a server
            # that trickles its answer would otherwise hold the ask for longer.
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.post(
                    self.url, json=request_body(self._api, self._model, query, texts)
                )
        except (TimeoutError, httpx.TimeoutException):
            raise RerankFailed(f"it did not answer within {self._timeout_s:g} s") from None
        except httpx.ConnectError:
            raise RerankFailed("it cannot be reached") from None
        except httpx.TransportError as exc:
            raise RerankFailed(f"the connection failed ({type(exc).__name__})") from None
        if response.status_code >= 400:
            raise RerankFailed(f"it answered HTTP {response.status_code}")
        try:
            return parse_scores(response.json(), len(texts))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RerankFailed("its answer is not JSON") from None
        except MalformedReply as exc:
            raise RerankFailed(f"its answer is unusable: {exc}") from None

    async def aclose(self) -> None:
        await self._client.aclose()


def make_reranker(settings: Settings) -> HttpReranker | None:
    """The configured rerank server, or None when reranking is off (the default)."""
    if not settings.rerank_base_url:
        return None
    key = settings.rerank_api_key.get_secret_value() if settings.rerank_api_key else None
    reranker = HttpReranker(
        settings.rerank_base_url,
        api=settings.rerank_api,
        model=settings.rerank_model,
        api_key=key,
        timeout_s=settings.rerank_timeout_s,
    )
    log.info(
        "reranking with %s",
        reranker.safe_url,
        extra={"rerank_model": settings.rerank_model, "rerank_api": settings.rerank_api},
    )
    return reranker


async def rerank_hits(
    reranker: Reranker, question: str, hits: list[Hit], candidates: int
) -> list[Hit]:
    """`hits` with the first `candidates` reordered by the reranker's scores, which become
    their `score`; ties keep the fused order, and the rest follow as they were. Unchanged when
    the reranker fails."""
    head, tail = hits[:candidates], hits[candidates:]
    scores = await reranker.rerank(question, [hit.text for hit in head])
    if scores is None or len(scores) != len(head):
        return hits
    order = sorted(range(len(head)), key=lambda i: -scores[i])
    return [dataclasses.replace(head[i], score=round(scores[i], 6)) for i in order] + tail
