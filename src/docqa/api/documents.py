"""Document endpoints: upload, list, status, live progress, original file, delete."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import ClientDisconnect

from docqa import documents
from docqa.api.deps import Owner, State, UploadRateLimit
from docqa.api.errors import error_responses
from docqa.blobs import opened
from docqa.errors import BadUpload, as_domain_error
from docqa.jobs import defer_processing
from docqa.metrics import UPLOAD_BYTES
from docqa.upload import DOCUMENT_ID_PATTERN, DOCUMENT_ID_RULE, receive_upload

router = APIRouter(prefix="/api/v1", tags=["documents"], responses=error_responses(404))
DocumentId = Annotated[str, Path(pattern=DOCUMENT_ID_PATTERN, description=DOCUMENT_ID_RULE)]

EVENTS_POLL_S = 5.0
Status = Literal["queued", "processing", "ready", "failed"]

_UPLOAD_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "document_id": {"type": "string", "pattern": DOCUMENT_ID_PATTERN},
                        "metadata": {"type": "string", "description": "a JSON object"},
                    },
                }
            }
        },
    }
}


@router.post(
    "/upload", openapi_extra=_UPLOAD_SCHEMA, responses=error_responses(400, 409, 415, 429, 507)
)
async def upload(
    request: Request, state: State, owner: Owner, _limit: UploadRateLimit
) -> dict[str, Any]:
    """Stream a file to storage and queue it for processing."""
    # `BodyGuard` already refused a Content-Length over the limit, and counts the whole body.
    limit = state.settings.max_upload_bytes
    try:
        received = await receive_upload(
            request.stream(),
            request.headers.get("content-type"),
            limit_bytes=limit,
            store=state.store,
        )
    except ClientDisconnect:
        raise BadUpload("The upload was interrupted before the file was complete.") from None
    UPLOAD_BYTES.observe(received.file.size_bytes)
    created = await documents.create_document(state.db, state.store, owner, received)
    doc = created.document
    if not created.duplicate:
        try:
            await defer_processing(state.jobs, doc.pk, doc.size_bytes)
        except BaseException:
            await documents.delete_document(state.db, state.store, owner, doc.document_id)
            raise
    return {
        "document_id": doc.document_id,
        "status": doc.status,
        "filename": doc.filename,
        "size_bytes": doc.size_bytes,
        "sha256": doc.sha256,
        "duplicate": created.duplicate,
    }


@router.get("/documents")
async def list_documents(
    state: State,
    owner: Owner,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
    status: Status | None = None,
) -> dict[str, Any]:
    docs, next_cursor = await documents.list_documents(
        state.db, owner, limit=limit, cursor=cursor, status=status
    )
    return {"documents": [documents.document_view(d) for d in docs], "next_cursor": next_cursor}


@router.get("/documents/{document_id}")
async def get_document(document_id: DocumentId, state: State, owner: Owner) -> dict[str, Any]:
    return documents.document_view(await documents.get_document(state.db, owner, document_id))


@router.get(
    "/documents/{document_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "progress events"}},
)
async def document_events(
    document_id: DocumentId, state: State, owner: Owner
) -> EventSourceResponse:
    """Progress as server-sent events: `progress` on every change, then `ready` or `failed`."""
    doc = await documents.get_document(state.db, owner, document_id)
    pk = str(doc.pk)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        last: dict[str, Any] | None = None
        async with state.hub.watch(pk) as changed:
            while True:
                # Clear before reading: a change that lands while we read sets it again, so
                # it is seen on the next turn instead of waiting for the fallback poll.
                changed.clear()
                try:
                    current = documents.document_view(
                        await documents.get_document(state.db, owner, document_id)
                    )
                except Exception as exc:
                    # Deleted, or the database went away: say so, then end the stream.
                    failure = as_domain_error(exc)
                    if failure is None:
                        raise
                    yield ServerSentEvent(
                        json.dumps({"code": failure.code, "detail": failure.detail}),
                        event="error",
                    )
                    return
                if current != last:
                    status = current["status"]
                    event = status if status in documents.TERMINAL else "progress"
                    yield ServerSentEvent(json.dumps(current), event=event)
                    if status in documents.TERMINAL:
                        return
                    last = current
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), EVENTS_POLL_S)

    return EventSourceResponse(stream(), ping=15)


@router.get(
    "/documents/{document_id}/file",
    response_class=StreamingResponse,
    responses={200: {"content": {"*/*": {}}, "description": "the file, as uploaded"}},
)
async def document_file(document_id: DocumentId, state: State, owner: Owner) -> StreamingResponse:
    doc = await documents.get_document(state.db, owner, document_id)
    quoted = doc.filename.replace("\\", "_").replace('"', "_")
    headers = {
        "content-length": str(doc.size_bytes),
        "content-disposition": f"inline; filename*=UTF-8''{_rfc5987(quoted)}",
        # Uploaded HTML must never run as our origin's page.
        "content-security-policy": "sandbox",
        "x-content-type-options": "nosniff",
    }
    # Opened first: a storage outage is a 503 with a JSON body, not a download cut short.
    chunks = await opened(state.store.read(doc.blob_key))
    return StreamingResponse(chunks, media_type=doc.content_type, headers=headers)


def _rfc5987(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


@router.delete("/documents/{document_id}", status_code=204)
async def delete_document(document_id: DocumentId, state: State, owner: Owner) -> Response:
    await documents.delete_document(state.db, state.store, owner, document_id)
    return Response(status_code=204)
