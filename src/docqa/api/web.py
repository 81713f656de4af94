"""The web page: `/` returns index.html, `/static/*` the ES modules and stylesheet it loads.

The files live in the package (`docqa/web/`) and are served as they are: no build step.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

# The page renders model output and document text; this policy makes any slip that treats
# them as markup inert (no inline scripts, no foreign origins), on top of textContent-only code.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "content-security-policy": PAGE_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    # Revalidate on every load (ETag makes that a 304): a new release must not mix old modules.
    "cache-control": "no-cache",
}


class _Assets(StaticFiles):
    """Static files that browsers revalidate, so an upgrade never runs stale modules."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_revalidate(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"cache-control", b"no-cache"),
                    (b"x-content-type-options", b"nosniff"),
                ]
            await send(message)

        await super().__call__(scope, receive, send_revalidate)


def install_web(app: FastAPI) -> None:
    """Serve the page at `/` and its assets under `/static/`."""
    app.mount("/static", _Assets(directory=WEB_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", headers=_PAGE_HEADERS)
