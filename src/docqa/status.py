"""What `GET /api/v1/status` and `docqa status` report: is each part of the system working?

The database (reachable, schema current, embedded or not), the workers (how many sent a
heartbeat recently), the ingest queue (jobs waiting and running), the caller's documents by
status, and the model servers (reachable, or why not). Each part is checked on its own, so one
part down never hides the state of the others.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
from sqlalchemy import text

from docqa import __version__
from docqa.db import migrate
from docqa.db.engine import Database
from docqa.jobs import QUEUES
from docqa.settings import Settings

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 3.0
STATUSES = ("queued", "processing", "ready", "failed")

_SCHEMA_SQL = text("SELECT version_num FROM alembic_version")
_WORKERS_SQL = text(
    "SELECT count(*) FROM procrastinate_workers "
    "WHERE last_heartbeat > now() - make_interval(secs => :window)"
)
_QUEUE_SQL = text(
    "SELECT status::text, count(*) FROM procrastinate_jobs "
    "WHERE queue_name = ANY(:queues) AND status IN ('todo', 'doing') GROUP BY 1"
)
_DOCUMENTS_SQL = text(
    "SELECT status, count(*) FROM documents WHERE owner_id = :owner GROUP BY status"
)


async def read_status(settings: Settings, db: Database, owner_id: str) -> dict[str, Any]:
    """The whole report. `documents` counts only `owner_id`'s; the rest is the deployment's."""
    database, models = await asyncio.gather(_database(settings, db, owner_id), _models(settings))
    return {
        "version": __version__,
        "auth": settings.auth or "off",
        "worker_in_process": settings.worker,
        **database,
        **models,
    }


async def _database(settings: Settings, db: Database, owner_id: str) -> dict[str, Any]:
    # A worker heartbeats every HEARTBEAT_INTERVAL_S; one silent for STALLED_AFTER_S is dead.
    window = settings.stalled_after_s
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S), db.session() as session:
            schema = (await session.execute(_SCHEMA_SQL)).scalar_one_or_none()
            lanes = int((await session.execute(_WORKERS_SQL, {"window": window})).scalar_one())
            # A worker process heartbeats once per queue it serves (docqa.jobs.run_worker).
            workers = -(-lanes // len(QUEUES))
            queue = await session.execute(_QUEUE_SQL, {"queues": list(QUEUES)})
            jobs: dict[str, int] = {str(s): int(n) for s, n in queue}
            owned = await session.execute(_DOCUMENTS_SQL, {"owner": owner_id})
            docs: dict[str, int] = {str(s): int(n) for s, n in owned}
    except Exception:
        log.warning("status: the database did not answer", exc_info=True)
        return {
            "database": {
                "reachable": False,
                "embedded": db.embedded is not None,
                "detail": "The database is not reachable.",
            },
            "workers": None,
            "queue": None,
            "documents": None,
        }
    head = migrate.head_revision()
    return {
        "database": {
            "reachable": True,
            "embedded": db.embedded is not None,
            "schema": schema,
            "schema_current": schema == head,
        },
        "workers": {"alive": workers, "window_s": window},
        "queue": {"waiting": jobs.get("todo", 0), "running": jobs.get("doing", 0)},
        "documents": {status: docs.get(status, 0) for status in STATUSES},
    }


async def _models(settings: Settings) -> dict[str, Any]:
    llm: dict[str, Any] = {"mode": "extractive", "configured": False}
    embedding: dict[str, Any] = {"mode": "local", "model": settings.embedding_model}
    checks = []
    if settings.llm_base_url:
        llm = {"mode": "llm", "configured": True, "model": settings.llm_model}
        checks.append((llm, settings.llm_base_url, settings.llm_api_key.get_secret_value()))
    if settings.embedding_base_url:
        embedding = {"mode": "remote", "model": settings.embedding_model}
        checks.append(
            (embedding, settings.embedding_base_url, settings.embedding_api_key.get_secret_value())
        )
    if checks:
        async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_S) as client:
            results = await asyncio.gather(*(_probe(client, url, key) for _, url, key in checks))
        for (entry, _, _), result in zip(checks, results, strict=True):
            entry.update(result)
    return {"llm": llm, "embedding": embedding}


async def _probe(client: httpx.AsyncClient, base_url: str, api_key: str) -> dict[str, Any]:
    """Ask an OpenAI-compatible server for its models, the cheapest call most of them serve.
    `reachable`: it answered at all; `ok`: nothing suggests that answering will fail. The
    sentence never holds the URL: a caller with any key may read this report."""
    try:
        response = await client.get(
            base_url.rstrip("/") + "/models", headers={"authorization": f"Bearer {api_key}"}
        )
    except httpx.TimeoutException:
        return {"reachable": False, "ok": False, "detail": f"No answer in {CHECK_TIMEOUT_S:g} s."}
    except httpx.HTTPError as exc:
        return {"reachable": False, "ok": False, "detail": f"Not reachable ({type(exc).__name__})."}
    code = response.status_code
    if code in (401, 403):
        return {"reachable": True, "ok": False, "detail": f"It refused the API key (HTTP {code})."}
    if code == 404:  # some servers list no models; the chat endpoint may still be there
        return {"reachable": True, "ok": True, "detail": "Reachable (it lists no models)."}
    if code >= 400:
        return {"reachable": True, "ok": False, "detail": f"It answered HTTP {code}."}
    return {"reachable": True, "ok": True, "detail": "Reachable."}
