"""One answer relayed by a protocol endpoint (OpenAI-compatible chat, the MCP `ask` tool).

The answer itself comes from `Answerer.start`, exactly as for `/api/v1/ask`; a `Relay` only
times its first token, keeps its text, builds the `done` payload through `Answer.done_view`
and, when it ends, records the same metrics and log line as `/api/v1/ask` does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio

from docqa.answer import Answer
from docqa.errors import DocqaError
from docqa.metrics import ASK_FIRST_TOKEN_SECONDS, ASK_TOKENS_STREAMED, ERRORS

log = logging.getLogger(__name__)

INTERNAL_SENTENCE = "Something went wrong on the server while answering."


class AnswerFailed(DocqaError):
    """An unexpected failure while the answer was being written (the details are in the log)."""

    status_code = 500
    code = "internal_error"


def ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


class Relay:
    """An open answer on its way to one client. `started` is when the request arrived
    (`time.perf_counter()`), so `first_token` means what it means in `/api/v1/ask`."""

    def __init__(self, answer: Answer, started: float, protocol: str) -> None:
        self.answer = answer
        self.started = started
        self.protocol = protocol
        self.first_token_ms: float | None = None
        self.finish_reason: str | None = None
        self._parts: list[str] = []
        self._closed = False

    @property
    def text(self) -> str:
        """The text relayed so far (all of it once `deltas()` has run out)."""
        return "".join(self._parts)

    async def deltas(self) -> AsyncIterator[str]:
        """The answer's deltas. Raises a `DocqaError` if it fails part-way (see `failure`)."""
        async for delta in self.answer.deltas():
            if self.first_token_ms is None:
                self.first_token_ms = ms_since(self.started)
                ASK_FIRST_TOKEN_SECONDS.observe(self.first_token_ms / 1000)
            self._parts.append(delta)
            yield delta
        self.finish_reason = self.answer.stream.finish_reason or "stop"

    async def collect(self) -> str:
        """The whole answer text."""
        async for _ in self.deltas():
            pass
        return self.text

    def failure(self, exc: Exception) -> DocqaError:
        """What to tell the client about an exception raised by `deltas()` mid-answer."""
        self.finish_reason = "error"
        if isinstance(exc, DocqaError):
            ERRORS.labels(code=exc.code).inc()
            return exc
        log.error("answer failed while streaming", exc_info=exc)
        ERRORS.labels(code=AnswerFailed.code).inc()
        return AnswerFailed(INTERNAL_SENTENCE)

    def done(self) -> dict[str, Any]:
        """The `done` payload of `/api/v1/ask`, for this answer as it stands."""
        timings: dict[str, float | None] = {
            "retrieval": round(self.answer.retrieval_ms, 1),
            "first_token": self.first_token_ms,
            "total": ms_since(self.started),
        }
        return self.answer.done_view(self.finish_reason or "error", timings)

    async def close(self) -> None:
        """Stop the model request if it still runs, then record the answer (once)."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self.answer.aclose()
        usage = self.answer.stream.usage or {}
        ASK_TOKENS_STREAMED.inc(usage.get("completion_tokens") or len(self._parts))
        log.info(
            "answered",
            extra={
                "protocol": self.protocol,
                "mode": self.answer.mode,
                "sources": len(self.answer.sources),
                "finish_reason": self.finish_reason or "cancelled",
                "first_token_ms": self.first_token_ms,
                "total_ms": ms_since(self.started),
            },
        )
