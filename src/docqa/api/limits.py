"""Request bodies: authenticated before they are read, bounded and timed as they stream.

`BodyGuard` is the one place that receives a body. For every request that carries one it:
- answers 413 at once when `Content-Length` is over the limit: `DOCQA_MAX_UPLOAD_MB` (plus the
  multipart framing) for uploads, `DOCQA_MAX_JSON_KB` for any other body;
- in keys mode, checks the API key before reading a byte, so a caller without a valid key
  cannot make the server hold anything (FastAPI reads a JSON body before it runs dependencies);
- counts the bytes as they arrive, whatever `Content-Length` said (or with chunked encoding);
- gives up on a client that sends nothing for `DOCQA_BODY_TIMEOUT_S` (408).

Bodies other than uploads are small, so they are read here in full and handed on; an upload
streams through. A refusal is raised from `receive` when the app asks for the body, so that the
one error-mapping place (docqa.api.errors) answers it; the upload route first removes the
partial file.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docqa.auth import authenticate, credential_from_header
from docqa.errors import BadUpload, BodyTimeout, BodyTooLarge, DocqaError
from docqa.settings import Settings
from docqa.upload import FORM_OVERHEAD_BYTES, file_too_large

UPLOAD_PATHS = frozenset({"/api/v1/upload"})
# Bodies that carry a whole conversation (chat clients resend every turn each time) may be this
# many times the JSON limit.
CONVERSATION_PATHS = frozenset({"/v1/chat/completions", "/api/v1/ask"})
CONVERSATION_FACTOR = 8


class BodyGuard:
    def __init__(
        self, app: ASGIApp, *, settings: Settings, upload_paths: frozenset[str] = UPLOAD_PATHS
    ) -> None:
        self.app = app
        self.settings = settings
        self.upload_paths = upload_paths
        self.json_limit = settings.max_json_kb * 1024
        self.upload_limit = settings.max_upload_bytes + FORM_OVERHEAD_BYTES
        self.timeout_s = settings.body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        declared: int | None = None
        if (raw_length := headers.get("content-length")) is not None:
            declared = int(raw_length) if raw_length.strip().isdigit() else -1
        if not chunked and not declared:
            await self.app(scope, receive, send)  # no body to guard
            return
        upload = scope["path"] in self.upload_paths
        limit = self._limit(scope["path"], upload)
        try:
            if declared is not None and declared < 0:
                raise BadUpload("The Content-Length header is not a number.")
            if declared is not None and declared > limit:
                raise self._too_large(upload, limit)
            if self.settings.auth == "keys":
                await self._authenticate(scope, headers)
        except Exception as exc:  # a DocqaError, or the key lookup met a database that is down
            await self.app(scope, _raising(exc), send)
            return
        if upload:
            await self.app(scope, self._streaming(receive, upload=True, limit=limit), send)
            return
        try:
            body = await self._read_all(receive, limit)
        except DocqaError as exc:
            await self.app(scope, _raising(exc), send)
            return
        if body is None:
            return  # the client went away; there is nobody to answer
        await self.app(scope, _replay(body, receive), send)

    def _limit(self, path: str, upload: bool) -> int:
        if upload:
            return self.upload_limit
        if path in CONVERSATION_PATHS:
            return self.json_limit * CONVERSATION_FACTOR
        return self.json_limit

    def _too_large(self, upload: bool, limit: int) -> DocqaError:
        if upload:
            return file_too_large(self.settings.max_upload_bytes)
        return BodyTooLarge(
            f"The request body is larger than {limit // 1024} KB, the limit for this address."
        )

    async def _authenticate(self, scope: Scope, headers: Headers) -> None:
        state = scope["app"].state.docqa
        principal = await authenticate(
            state.db, credential_from_header(headers.get("authorization"))
        )
        # `get_caller` takes it from here instead of looking the key up again.
        scope.setdefault("state", {}).update(principal=principal, key_id=principal.key_id)

    def _streaming(self, receive: Receive, *, upload: bool, limit: int) -> Receive:
        """`receive`, counting body bytes against `limit` and timing each wait for more."""
        total = 0
        done = False

        async def counted() -> Message:
            nonlocal total, done
            if done:  # the body is complete: this waits for a disconnect, for as long as it takes
                return await receive()
            message = await self._timed(receive)
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > limit:
                    raise self._too_large(upload, limit)
                done = not message.get("more_body", False)
            return message

        return counted

    async def _read_all(self, receive: Receive, limit: int) -> bytes | None:
        chunks: list[bytes] = []
        counted = self._streaming(receive, upload=False, limit=limit)
        while True:
            message = await counted()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _timed(self, receive: Receive) -> Message:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await receive()
        except TimeoutError:
            raise BodyTimeout(
                f"The request body stopped arriving: nothing came for {self.timeout_s:g} "
                "seconds, so the request was given up."
            ) from None


def _raising(failure: Exception) -> Receive:
    """A `receive` that fails with `failure`: the app answers it when it asks for the body,
    through the error handlers (and with its route named in logs and metrics); a route that
    never reads its body answers as if there were none."""

    async def receive() -> Message:
        raise failure

    return receive


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        message: dict[str, Any] = {"type": "http.request", "body": body, "more_body": False}
        return message

    return replay
