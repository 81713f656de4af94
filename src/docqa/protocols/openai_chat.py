"""OpenAI-compatible chat over your documents: `POST /v1/chat/completions` and `GET /v1/models`.

The same keys, owner scoping and rate limits as `/api/v1` (`docqa.api.deps`), the same answer
path (`Answerer.start`) and the same `done` payload (`Answer.done_view`). The reply is a normal
chat completion, so any OpenAI client works unchanged; what docqa adds rides alongside:
- the text keeps its `[n]` markers, and `message.annotations` holds one `url_citation` per
  marker, linking the cited page of the original file;
- a `docqa` member carries the sources (page, text, score) and the `done` payload.
Streamed, the annotations come in one chunk of their own just before the chunk that carries
`finish_reason`; docs/protocols.md gives the exact sequence. Errors leave in OpenAI's shape
(`docqa.protocols.errors`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from docqa import documents
from docqa.api.ask import AnswererDep, Started
from docqa.api.deps import AskRateLimit, Owner, State, StreamSlot
from docqa.db.engine import Database
from docqa.protocols.answering import Relay
from docqa.protocols.citations import url_citations
from docqa.protocols.errors import ModelNotFound, error_object
from docqa.protocols.openai_request import MODEL, ChatRequest, document_scope, to_question

router = APIRouter(prefix="/v1", tags=["openai-compatible"])

PING_S = 15
_LIST_PAGE = 500
# docqa's finish reasons that OpenAI's schema lacks; the `docqa` member keeps the original.
_FINISH = {"no_sources": "stop", "error": "stop"}


def _model(model_id: str, created: int, name: str) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": created,
        "owned_by": "docqa",
        "name": name,
    }


async def _ready_documents(db: Database, owner: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page, cursor = await documents.list_documents(
            db, owner, limit=_LIST_PAGE, cursor=cursor, status="ready"
        )
        out += [
            _model(
                f"{MODEL}:{doc.document_id}",
                int(doc.created_at.timestamp()),
                f"docqa: {doc.filename}",
            )
            for doc in page
        ]
        if cursor is None:
            return out


@router.get("/models")
async def list_models(state: State, owner: Owner) -> dict[str, Any]:
    """`docqa` (all your ready documents), then one `docqa:<document_id>` per ready document."""
    everything = _model(MODEL, int(time.time()), "docqa: all your documents")
    return {"object": "list", "data": [everything, *await _ready_documents(state.db, owner)]}


@router.get("/models/{model:path}")
async def get_model(model: str, state: State, owner: Owner) -> dict[str, Any]:
    """One model of the list, or 404 `model_not_found`."""
    scope = document_scope(model)
    if not scope:
        return _model(MODEL, int(time.time()), "docqa: all your documents")
    doc = await documents.get_document(state.db, owner, scope[0])
    if doc.status != "ready":
        raise ModelNotFound(
            f"The document '{doc.document_id}' is {doc.status}, so the model '{model}' is not "
            "available yet.",
            param="model",
        )
    return _model(model, int(doc.created_at.timestamp()), f"docqa: {doc.filename}")


@dataclass(frozen=True)
class Completion:
    """What every chunk (or the whole completion) of one reply repeats."""

    id: str
    created: int
    model: str
    base_url: str

    def envelope(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}


@router.post(
    "/chat/completions",
    responses={
        200: {
            "content": {"application/json": {}, "text/event-stream": {}},
            "description": "a chat completion, or its chunks when `stream` is true",
        },
    },
)
async def chat_completions(
    started: Started,
    body: ChatRequest,
    request: Request,
    answerer: AnswererDep,
    owner: Owner,
    _limit: AskRateLimit,
    _slot: StreamSlot,
) -> Response:
    """Answer the last user message from your documents (the model name picks which)."""
    answer = await answerer.start(owner, to_question(body))
    relay = Relay(answer, started, "openai")
    reply = Completion(
        f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), body.model, str(request.base_url)
    )
    if body.stream:
        return EventSourceResponse(
            _chunks(relay, reply, include_usage=body.include_usage),
            ping=PING_S,
            ping_message_factory=lambda: ServerSentEvent(comment="ping", sep="\n"),
            sep="\n",
            # Also runs when the client left before the first chunk (the generator never ran).
            background=BackgroundTask(relay.close),
        )
    try:
        if not await _collect_unless_gone(request, relay):
            return Response(status_code=499)  # nobody is left to read it
    finally:
        await relay.close()
    return JSONResponse(_whole(relay, reply))


async def _collect_unless_gone(request: Request, relay: Relay) -> bool:
    """Collect the answer; stop at once (False) if the client hangs up first, so that the
    model request is cancelled as it is for a stream."""
    gone = False
    failure: Exception | None = None
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            nonlocal gone
            # The body has been read, so the next message is the disconnect, whenever it comes.
            while (await request.receive())["type"] != "http.disconnect":
                pass
            gone = True
            group.cancel_scope.cancel()

        group.start_soon(watch)
        try:
            await relay.collect()
        except Exception as exc:
            failure = exc
        group.cancel_scope.cancel()
    if failure is not None:
        # Nothing was sent yet, so it is a plain HTTP error, counted and logged where every
        # error response is.
        relay.finish_reason = "error"
        raise failure
    return not gone


def _whole(relay: Relay, reply: Completion) -> dict[str, Any]:
    sources = relay.answer.source_views()
    text = relay.text
    message = {
        "role": "assistant",
        "content": text,
        "refusal": None,
        "annotations": url_citations(text, sources, reply.base_url),
    }
    finish = relay.finish_reason or "stop"
    return reply.envelope("chat.completion") | {
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _FINISH.get(finish, finish),
            }
        ],
        "usage": relay.answer.stream.usage,
        "docqa": {"sources": sources, **relay.done()},
    }


# Raw in JSON, but line breaks to `str.splitlines`, which the `openai` SDK's SSE reader uses.
_LINE_BREAKERS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _event(payload: dict[str, Any] | str) -> ServerSentEvent:
    """One `data:` line, ended with LF as OpenAI's own streams are."""
    if not isinstance(payload, str):
        payload = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        payload = payload.translate(_LINE_BREAKERS)
    return ServerSentEvent(payload, sep="\n")


async def _chunks(
    relay: Relay, reply: Completion, *, include_usage: bool
) -> AsyncIterator[ServerSentEvent]:
    """role chunk (+ `docqa.sources`) → content chunks → annotations chunk (+ `docqa` done)
    → finish chunk → usage chunk (with `stream_options.include_usage`) → `[DONE]`."""
    base = reply.envelope("chat.completion.chunk") | ({"usage": None} if include_usage else {})
    sources = relay.answer.source_views()

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> ServerSentEvent:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _event(base | {"choices": [choice]} | extra)

    try:
        yield chunk({"role": "assistant", "content": ""}, docqa={"sources": sources})
        try:
            async for delta in relay.deltas():
                yield chunk({"content": delta})
        except Exception as exc:
            error = relay.failure(exc)
            yield _event({"error": error_object(error.status_code, error.detail, error.code)})
            yield _event("[DONE]")
            return
        annotations = url_citations(relay.text, sources, reply.base_url)
        yield chunk({"annotations": annotations}, docqa=relay.done())
        finish = relay.finish_reason or "stop"
        yield chunk({}, _FINISH.get(finish, finish))
        if include_usage:
            yield _event(base | {"choices": [], "usage": relay.answer.stream.usage})
        yield _event("[DONE]")
    finally:
        await relay.close()
