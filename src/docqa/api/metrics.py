"""`GET /metrics` (Prometheus text format) and the middleware that times and logs each request."""

from __future__ import annotations

import logging
import secrets
import time

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docqa.api.deps import State
from docqa.auth import credential_from_header
from docqa.errors import MetricsForbidden, Unauthorized
from docqa.metrics import REQUEST_SECONDS, read_cluster, render
from docqa.settings import Settings

log = logging.getLogger("docqa.requests")
router = APIRouter(tags=["operations"])

# Probes and scrapes arrive every few seconds; they are timed but not logged.
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, state: State) -> Response:
    """This process's metrics, and the cluster's read from the database (see docqa.metrics)."""
    check_metrics_access(state.settings, request.headers.get("authorization"))
    return Response(render(await read_cluster(state.db)), media_type=CONTENT_TYPE_LATEST)


def check_metrics_access(settings: Settings, authorization: str | None) -> None:
    """Metrics count every owner's documents: open with auth off (loopback only), and with
    DOCQA_AUTH=keys only to `Bearer <DOCQA_METRICS_TOKEN>`, never to an owner's API key."""
    if settings.auth != "keys":
        return
    if settings.metrics_token is None:
        raise MetricsForbidden(
            "With DOCQA_AUTH=keys, /metrics is served only to the metrics token, and none is "
            "set: set DOCQA_METRICS_TOKEN and scrape with `Authorization: Bearer <token>`."
        )
    sent = credential_from_header(authorization)
    expected = settings.metrics_token.get_secret_value()
    if sent is None:
        raise Unauthorized(
            "/metrics needs the metrics token as a bearer token.", invalid_token=False
        )
    if not secrets.compare_digest(sent.encode(), expected.encode()):
        raise Unauthorized("This is not the metrics token.", invalid_token=True)


def _route_template(scope: Scope) -> str:
    # The template (`/api/v1/documents/{document_id}`), never the raw path: one series per
    # route, whatever ids clients send. Paths no route matched share one label.
    route: BaseRoute | None = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"


class RequestMetricsMiddleware:
    """Observe `docqa_http_request_duration_seconds` and log one line per request.

    The log line carries the method, route template, status, duration and key id (from
    `request.state`), and never headers, query strings or bodies: no keys, no document text.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = str(scope.get("method", ""))
            REQUEST_SECONDS.labels(method=method, route=route, status=str(status)).observe(elapsed)
            if route not in _QUIET_ROUTES:
                state = scope.get("state") or {}
                log.info(
                    "request",
                    extra={
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 1),
                        "key_id": state.get("key_id"),
                    },
                )
