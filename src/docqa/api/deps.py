"""FastAPI dependencies, as `Annotated` aliases the views declare."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from docqa.state import AppState

LOCAL_OWNER = "local"


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.docqa
    return state


def get_owner(request: Request) -> str:
    """The owner every query is scoped to. With authentication off, one local owner."""
    return LOCAL_OWNER


State = Annotated[AppState, Depends(get_state)]
Owner = Annotated[str, Depends(get_owner)]
