"""The one place where errors become HTTP responses, and the request-id middleware."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docqa.errors import DocqaError
from docqa.logs import request_id_var
from docqa.metrics import ERRORS

log = logging.getLogger(__name__)
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def error_body(detail: str, code: str, /, **extra: Any) -> dict[str, Any]:
    return {"detail": detail, "code": code, "request_id": request_id_var.get(), **extra}


def error_response(status: int, detail: str, code: str, /, **extra: Any) -> JSONResponse:
    ERRORS.labels(code=code).inc()
    return JSONResponse(error_body(detail, code, **extra), status_code=status)


_HTTP_CODES = {
    404: ("not_found", "There is nothing at this address."),
    405: ("method_not_allowed", "This address does not accept that method."),
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DocqaError)
    async def domain_error(request: Request, exc: DocqaError) -> JSONResponse:
        response = error_response(exc.status_code, exc.detail, exc.code, **exc.extra)
        response.headers.update(exc.response_headers())
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
            problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        detail = "The request is not valid: " + "; ".join(problems) + "."
        return error_response(422, detail, "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, sentence = _HTTP_CODES.get(exc.status_code, ("http_error", str(exc.detail)))
        response = error_response(exc.status_code, sentence, code)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette runs this handler outside every middleware, after RequestIdMiddleware has
        # reset its context variable; the id is still in the request's scope.
        rid = getattr(request.state, "request_id", None)
        token = request_id_var.set(rid) if rid and request_id_var.get() is None else None
        try:
            log.error("unhandled error", exc_info=exc)
            response = error_response(500, "Something went wrong on the server.", "internal_error")
        finally:
            if token is not None:
                request_id_var.reset(token)
        if rid:
            response.headers["x-request-id"] = rid
        return response


class RequestIdMiddleware:
    """Give every request an id (or keep a sane incoming `X-Request-ID`), for logs and bodies."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _SAFE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id_var.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
