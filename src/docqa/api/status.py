"""`GET /api/v1/status`: the state of the deployment, as `docqa status` shows it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from docqa.api.deps import Owner, State
from docqa.status import read_status

router = APIRouter(prefix="/api/v1", tags=["operations"])


@router.get("/status")
async def status(state: State, owner: Owner) -> dict[str, Any]:
    """Database, workers, queue depth, the caller's documents by status, model servers."""
    return await read_status(state.settings, state.db, owner)
