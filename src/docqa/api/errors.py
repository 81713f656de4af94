"""The one place where errors become HTTP responses, and the request-id middleware."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from procrastinate.exceptions import ConnectorException
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docqa.errors import DocqaError, as_domain_error
from docqa.logs import request_id_var
from docqa.metrics import ERRORS

log = logging.getLogger(__name__)
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class ErrorBody(BaseModel):
    """Every error response: a sentence for people, a stable code for programs."""

    detail: str = Field(description="what went wrong, as a sentence")
    code: str = Field(description="stable snake_case code, e.g. `document_not_found`")
    request_id: str | None = Field(description="the request's id, as in the server's logs")


_STATUS_MEANINGS = {
    400: "the request cannot be used as sent",
    401: "no valid API key (only with DOCQA_AUTH=keys)",
    404: "no such document",
    408: "the client stopped sending its body",
    409: "a conflict: the document is not ready, or its id is taken",
    413: "the body is over its limit",
    415: "the file's type is not supported, or its bytes do not match it",
    422: "the request is not valid",
    429: "a rate limit was reached; see Retry-After",
    502: "the model server failed",
    503: "the database (or the model server) is unavailable; see Retry-After",
    507: "the server's storage is full",
}
# Statuses any API route may answer: no key, a body over its limit or too slow, a request
# that does not validate, the database away.
COMMON_ERRORS = (401, 408, 413, 422, 503)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` declaring the contract's error body for `statuses` (and the common
    ones), so that generated clients and schema checks know every answer a route gives."""
    return {
        status: {"model": ErrorBody, "description": _STATUS_MEANINGS[status]}
        for status in sorted({*COMMON_ERRORS, *statuses})
    }


def error_body(detail: str, code: str, /, **extra: Any) -> dict[str, Any]:
    return {"detail": detail, "code": code, "request_id": request_id_var.get(), **extra}


def error_response(status: int, detail: str, code: str, /, **extra: Any) -> JSONResponse:
    ERRORS.labels(code=code).inc()
    return JSONResponse(error_body(detail, code, **extra), status_code=status)


def domain_response(exc: DocqaError) -> JSONResponse:
    response = error_response(exc.status_code, exc.detail, exc.code, **exc.extra)
    response.headers.update(exc.response_headers())
    return response


def failure_response(exc: BaseException) -> JSONResponse:
    """The response for an exception no handler knew: its domain meaning (the database is
    down, the disk is full), or a logged 500 that says nothing of the internals."""
    mapped = as_domain_error(exc)
    if mapped is not None:
        log.warning("request failed: %s", mapped.code, exc_info=exc)
        return domain_response(mapped)
    log.error("unhandled error", exc_info=exc)
    return error_response(500, "Something went wrong on the server.", "internal_error")


_HTTP_CODES = {
    404: ("not_found", "There is nothing at this address."),
    405: ("method_not_allowed", "This address does not accept that method."),
}
# Infrastructure failures: handled inside the middleware stack (not by Starlette's outermost
# 500 handler, which re-raises and so makes the server drop the connection).
_INFRASTRUCTURE_ERRORS: tuple[type[Exception], ...] = (
    sqlalchemy.exc.SQLAlchemyError,
    psycopg.Error,
    ConnectorException,
    OSError,
)
# Sentences for the rules a generic validation message says badly.
_FIELD_RULES = {
    "document_id": "must be 1 to 64 letters, digits, '.', '_' or '-', and not '.' or '..'",
}


def _problem(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
    where = ".".join(loc)
    message = str(err.get("msg", "")).removeprefix("Value error, ")
    field = next((p for p in reversed(loc) if not p.isdigit()), "")
    if err.get("type") == "string_pattern_mismatch" and field.rstrip("s") in _FIELD_RULES:
        message = _FIELD_RULES[field.rstrip("s")]
    return f"{where}: {message}" if where else message


def _json_problem(err: dict[str, Any], body: Any) -> str:
    ctx = err.get("ctx") or {}
    reason = str(ctx.get("error", "")) or "it cannot be parsed"
    loc: Sequence[Any] = err.get("loc", ())
    pos = loc[-1] if loc and isinstance(loc[-1], int) else None
    if pos is not None and isinstance(body, str | bytes):
        doc = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        line = doc.count("\n", 0, pos) + 1
        column = pos - doc.rfind("\n", 0, pos)
        return f"The request body is not valid JSON: {reason} at line {line}, column {column}."
    return f"The request body is not valid JSON: {reason}."


def _body_problem(cause: BaseException | None) -> str | None:
    if isinstance(cause, UnicodeDecodeError):
        return "The request body is not valid JSON: it is not UTF-8 text."
    if isinstance(cause, RecursionError):
        return "The request body is not valid JSON that docqa reads: it is nested too deeply."
    return None


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:
                methods |= route.methods
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DocqaError)
    async def domain_error(request: Request, exc: DocqaError) -> JSONResponse:
        return domain_response(exc)

    async def infrastructure(request: Request, exc: Exception) -> JSONResponse:
        return failure_response(exc)

    for error_class in _INFRASTRUCTURE_ERRORS:
        app.add_exception_handler(error_class, infrastructure)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        broken = next((e for e in errors if e.get("type") == "json_invalid"), None)
        if broken is not None:
            return error_response(422, _json_problem(broken, exc.body), "invalid_request")
        problems = [_problem(err) for err in errors]
        detail = "The request is not valid: " + "; ".join(problems).rstrip(".") + "."
        return error_response(422, detail, "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI's "There was an error parsing the body": answer its cause instead (a
            # refusal `BodyGuard` raised while the body was read, or undecodable bytes).
            if (refusal := as_domain_error(exc.__cause__)) is not None:
                return domain_response(refusal)
            if problem := _body_problem(exc.__cause__):
                return error_response(422, problem, "invalid_request")
        code, sentence = _HTTP_CODES.get(exc.status_code, ("http_error", str(exc.detail)))
        response = error_response(exc.status_code, sentence, code)
        if exc.headers:
            response.headers.update(exc.headers)
        if exc.status_code == 405:
            # Starlette names only the first route on the path; list them all.
            response.headers["allow"] = ", ".join(_allowed_methods(request))
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette runs this handler outside every middleware, after RequestIdMiddleware has
        # reset its context variable; the id is still in the request's scope.
        rid = getattr(request.state, "request_id", None)
        token = request_id_var.set(rid) if rid and request_id_var.get() is None else None
        try:
            response = failure_response(exc)
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

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:
                raise  # part of a response is out: only closing the connection can tell
            # Answered here rather than re-raised to the server, which would drop the
            # connection a client may be about to reuse.
            await failure_response(exc)(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
