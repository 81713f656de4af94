"""`POST /api/v1/ask`: a question in, the answer out as server-sent events.

The wire format (CONTRACT.md): `event: sources` first, then the answer as default-event `data:`
deltas, then `event: done`; `event: error` (followed by `done`) if the answer fails part-way.
Failures before the first byte are plain JSON errors, because the answer stream, including the
request to the model server, is open before the 200 is sent.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from docqa import conversations
from docqa.answer import Answer, Answerer, ChatMessage, Question
from docqa.api.deps import AskRateLimit, Owner, State, StreamSlot
from docqa.api.errors import error_responses
from docqa.errors import DocqaError
from docqa.metrics import ASK_FIRST_TOKEN_SECONDS, ASK_TOKENS_STREAMED, ERRORS
from docqa.state import AppState
from docqa.upload import DOCUMENT_ID_PATTERN, storable_text_problem

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["ask"])

PING_S = 15
DocumentId = Annotated[str, StringConstraints(pattern=DOCUMENT_ID_PATTERN)]


def _storable(value: str) -> str:
    # PostgreSQL text holds neither NUL nor unpaired surrogates (JSON can carry both).
    if problem := storable_text_problem(value):
        raise ValueError(f"the text {problem}")
    return value


Text = Annotated[str, AfterValidator(_storable)]


class Turn(BaseModel):
    """One earlier turn of the conversation."""

    role: Literal["user", "assistant"]
    content: Text = Field(max_length=20_000)


class AskBody(BaseModel):
    question: Text = Field(min_length=1, max_length=2000, description="what to answer")
    document_id: DocumentId | None = Field(default=None, description="answer from this document")
    document_ids: list[DocumentId] | None = Field(
        default=None, max_length=100, description="answer from these documents"
    )
    top_k: int | None = Field(default=None, ge=1, le=50, description="how many sources to use")
    history: list[Turn] = Field(
        default_factory=list, max_length=50, description="the conversation so far, oldest first"
    )
    conversation_id: str | None = Field(
        default=None,
        max_length=64,
        description="ask within this conversation: the server keeps its history and stores "
        "this turn (then send no `history`)",
    )

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("the question is empty")
        return value

    @model_validator(mode="after")
    def _one_history(self) -> AskBody:
        # Two histories could disagree; neither silently wins.
        if self.conversation_id is not None and self.history:
            raise ValueError(
                "send either conversation_id (the server keeps the history) or history, not both"
            )
        return self

    def to_question(self) -> Question:
        ids = ([self.document_id] if self.document_id else []) + (self.document_ids or [])
        history: list[ChatMessage] = [{"role": t.role, "content": t.content} for t in self.history]
        return Question(self.question, tuple(ids), self.top_k, tuple(history))


def get_answerer(state: State) -> Answerer:
    answerer = state.answerer
    if answerer is None:
        raise RuntimeError("the application was started without an answerer")
    return answerer


AnswererDep = Annotated[Answerer, Depends(get_answerer)]


def _now() -> float:
    return time.perf_counter()


# Declared first, so FastAPI resolves it before the other dependencies (authentication and rate
# limits query the database): the timings in `done` then count those too.
Started = Annotated[float, Depends(_now)]


def _ping() -> ServerSentEvent:
    return ServerSentEvent(comment="ping")


@router.post(
    "/ask",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "the answer, streamed"},
        **error_responses(404, 409, 429, 502),
    },
)
async def ask(
    started: Started,
    body: AskBody,
    answerer: AnswererDep,
    state: State,
    owner: Owner,
    _limit: AskRateLimit,
    _slot: StreamSlot,
) -> EventSourceResponse:
    """Answer a question from the caller's documents, citing sources as `[n]`. With
    `conversation_id`, the history is the conversation's and the turn is stored in it."""
    question = body.to_question()
    keeper: _Keeper | None = None
    if body.conversation_id is not None:
        thread = await conversations.open_thread(state.db, owner, body.conversation_id)
        question = dataclasses.replace(question, history=thread.history)
        keeper = _Keeper(state, thread, question)
    answer = await answerer.start(owner, question)
    return EventSourceResponse(
        _events(answer, started, keeper),
        ping=PING_S,
        ping_message_factory=_ping,
        # Also runs when the client left before the first event (the generator never started).
        background=BackgroundTask(answer.aclose),
    )


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)


@dataclasses.dataclass
class _Keeper:
    """Stores the turn of an answer given within a conversation, once."""

    state: AppState
    thread: conversations.Thread
    question: Question
    stored: bool = False

    async def store(self, answer: Answer, done: dict[str, Any], *, interrupted: bool) -> None:
        if self.stored:
            return
        self.stored = True
        try:
            turn_id = await conversations.record_turn(
                self.state.db,
                self.thread,
                question=self.question.text,
                document_ids=list(self.question.document_ids),
                answer=answer,
                done=done,
                interrupted=interrupted,
            )
        except Exception:  # the answer was given; only its record is missing
            log.warning("could not store the conversation turn", exc_info=True)
            return
        if turn_id is not None:
            done["conversation_id"] = self.thread.conversation_id
            done["turn_id"] = turn_id


async def _events(
    answer: Answer, started: float, keeper: _Keeper | None = None
) -> AsyncIterator[ServerSentEvent]:
    first_token: float | None = None
    finish_reason: str | None = None
    deltas = 0
    try:
        yield ServerSentEvent(_json(answer.source_views()), event="sources")
        try:
            async for delta in answer.deltas():
                if first_token is None:
                    first_token = _ms(started)
                    ASK_FIRST_TOKEN_SECONDS.observe(first_token / 1000)
                deltas += 1
                yield ServerSentEvent(delta)
            finish_reason = answer.stream.finish_reason or "stop"
        except DocqaError as exc:
            finish_reason = "error"
            ERRORS.labels(code=exc.code).inc()
            yield ServerSentEvent(_json({"code": exc.code, "detail": exc.detail}), event="error")
        except Exception:
            finish_reason = "error"
            log.exception("answer failed while streaming")
            ERRORS.labels(code="internal_error").inc()
            failure = {
                "code": "internal_error",
                "detail": "Something went wrong on the server while answering.",
            }
            yield ServerSentEvent(_json(failure), event="error")
        timings = {"retrieval": round(answer.retrieval_ms, 1), "first_token": first_token}
        done = answer.done_view(finish_reason, timings | {"total": _ms(started)})
        if keeper is not None:  # stored before `done`, so a client that reads on finds it
            await keeper.store(answer, done, interrupted=False)
        yield ServerSentEvent(_json(done), event="done")
    finally:
        with anyio.CancelScope(shield=True):
            await answer.aclose()
            if keeper is not None and not keeper.stored:  # the client went away part-way
                timings = {"retrieval": round(answer.retrieval_ms, 1), "first_token": first_token}
                gone = answer.done_view("cancelled", timings | {"total": _ms(started)})
                await keeper.store(answer, gone, interrupted=True)
        # The model's own count when it reported one, else one per delta sent.
        usage = answer.stream.usage or {}
        ASK_TOKENS_STREAMED.inc(usage.get("completion_tokens") or deltas)
        log.info(
            "answered",
            extra={
                "mode": answer.mode,
                "sources": len(answer.sources),
                "finish_reason": finish_reason or "cancelled",
                "first_token_ms": first_token,
                "total_ms": _ms(started),
            },
        )


# JSON leaves these unescaped, but many line readers (Python's `splitlines`, so httpx's
# `aiter_lines`) break lines at them; escaped, every event stays on the lines SSE gives it.
_LINE_BREAKERS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).translate(_LINE_BREAKERS)
