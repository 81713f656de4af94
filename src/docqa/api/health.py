"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from docqa import __version__
from docqa.api.deps import State
from docqa.api.errors import error_response
from docqa.db import migrate
from docqa.db.engine import PGVECTOR_SQL, pgvector_problem

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, Any]:
    """The process is up and serving. `service` tells a docqa server from anything else on the
    port (`docqa` client commands look for one on 127.0.0.1:8000)."""
    return {"status": "ok", "service": "docqa", "version": __version__}


@router.get("/readyz", response_model=None)
async def readyz(state: State) -> dict[str, Any] | JSONResponse:
    """The database answers, its schema is at the newest migration and its pgvector is 0.8+."""
    try:
        async with asyncio.timeout(3):
            async with state.db.session() as session:
                result = await session.execute(text("SELECT version_num FROM alembic_version"))
                current = result.scalar_one_or_none()
                vector = (await session.execute(text(PGVECTOR_SQL))).one()
    except Exception:
        return error_response(503, "The database is not reachable.", "database_unavailable")
    head = migrate.head_revision()
    if current != head:
        return error_response(
            503,
            f"The database schema is at {current}, not {head}: run `docqa migrate`.",
            "migrations_pending",
        )
    problem = pgvector_problem(vector.installed, vector.available)
    if problem is not None:
        return error_response(503, problem, "pgvector_outdated")
    return {"status": "ready", "schema": current}
