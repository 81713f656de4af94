"""Errors in the shape each protocol's clients parse, for its own paths and nothing else.

Errors become HTTP responses in one place (`docqa.api.errors`, and the middleware that checks
keys and body limits before a route runs), always as `{"detail", "code", "request_id"}`.
`ErrorShape` sits outside all of that and re-shapes the finished error responses of one path
prefix, so every error there keeps its status, sentence, stable code and headers
(`WWW-Authenticate`, `Retry-After`), whoever answered it:
- `/v1` (OpenAI-compatible): `{"error": {"message", "type", "param", "code"}}`; an invalid
  body is a 400 `invalid_request_error`, as OpenAI answers it, not `/api/v1`'s 422;
- `/mcp`: a JSON-RPC error object, which MCP clients raise with its message as it stands.
`/api/v1` is untouched and keeps the contract's shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docqa.errors import DocqaError

_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
# Members of docqa's error body that the other shapes carry elsewhere (the request id travels
# in the `x-request-id` header).
_RENAMED = frozenset({"detail", "code", "request_id", "param"})
# JSON-RPC leaves -32000 to -32099 to servers: this one means "refused before the method ran"
# (no key, a limit, a body too large); `data.code` and `data.status` say which.
JSONRPC_REFUSED = -32001

Reshape = Callable[[int, dict[str, Any]], tuple[int, dict[str, Any]]]


class ModelNotFound(DocqaError):
    """A model name that is neither `docqa` nor `docqa:<one of your ready documents>`."""

    status_code = 404
    code = "model_not_found"


class UnsupportedParameter(DocqaError):
    """A request parameter docqa cannot honour (tools, n > 1, logprobs, images...)."""

    status_code = 400
    code = "unsupported_parameter"


class InvalidChat(DocqaError):
    """Messages docqa cannot read a question from."""

    status_code = 400
    code = "invalid_request"


def error_type(status: int) -> str:
    return _TYPES.get(status) or ("server_error" if status >= 500 else "invalid_request_error")


def error_object(
    status: int, message: str, code: str, param: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The `error` member of an OpenAI error body (also sent mid-stream, as a chunk)."""
    return {"message": message, "type": error_type(status), "param": param, "code": code, **extra}


def _extra(docqa: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in docqa.items() if k not in _RENAMED}


def openai_shape(status: int, docqa: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status = 400 if status == 422 else status
    error = error_object(status, str(docqa["detail"]), str(docqa["code"]), docqa.get("param"))
    return status, {"error": error | _extra(docqa)}


def jsonrpc_shape(status: int, docqa: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    data = {"code": docqa["code"], "status": status} | _extra(docqa)
    error = {"code": JSONRPC_REFUSED, "message": str(docqa["detail"]), "data": data}
    return status, {"jsonrpc": "2.0", "id": None, "error": error}


class ErrorShape:
    """Pure ASGI. Under `prefix`, responses below 400 pass through untouched (streams
    included); error responses, which are small JSON, are held until complete and re-shaped
    when they are docqa's."""

    def __init__(self, app: ASGIApp, *, prefix: str, reshape: Reshape) -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")
        self.reshape = reshape

    def _applies(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._applies(str(scope["path"])):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        held: list[bytes] = []

        async def send_reshaped(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            held.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            status, body = int(start["status"]), b"".join(held)
            try:
                docqa = json.loads(body)
            except ValueError:
                docqa = None
            headers = MutableHeaders(raw=list(start.get("headers", [])))
            if isinstance(docqa, dict) and {"detail", "code"} <= docqa.keys():
                status, shaped = self.reshape(status, docqa)
                body = json.dumps(shaped, ensure_ascii=False).encode()
                headers["content-type"] = "application/json"
            headers["content-length"] = str(len(body))
            await send({**start, "status": status, "headers": headers.raw})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_reshaped)
