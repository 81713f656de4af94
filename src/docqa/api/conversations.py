"""Conversation endpoints: create, list, read with turns, rename, delete; all owner-scoped.

`POST /api/v1/ask` with `conversation_id` asks within one (see `api/ask.py`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import AfterValidator, BaseModel, Field

from docqa import conversations
from docqa.api.deps import Owner, State
from docqa.api.errors import error_responses
from docqa.upload import storable_text_problem

router = APIRouter(prefix="/api/v1", tags=["conversations"], responses=error_responses(404))
ConversationId = Annotated[
    str, Path(max_length=64, description="the id `POST /api/v1/conversations` returned")
]


def _storable(value: str) -> str:
    if problem := storable_text_problem(value):
        raise ValueError(f"the title {problem}")
    return value


Title = Annotated[str, AfterValidator(_storable)]


class ConversationCreate(BaseModel):
    title: Title = Field(
        default="",
        max_length=conversations.TITLE_MAX,
        description="empty: the first question names it",
    )


class ConversationRename(BaseModel):
    title: Title = Field(max_length=conversations.TITLE_MAX, description="the new title")


@router.post("/conversations", status_code=201)
async def create_conversation(
    state: State, owner: Owner, body: ConversationCreate | None = None
) -> dict[str, Any]:
    """Start a conversation; ask in it with `conversation_id` and the server keeps the history."""
    return await conversations.create(state.db, owner, title=body.title if body else "")


@router.get("/conversations")
async def list_conversations(
    state: State,
    owner: Owner,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The caller's conversations, the most recently used first."""
    items, next_cursor = await conversations.list_conversations(
        state.db, owner, limit=limit, cursor=cursor
    )
    return {"conversations": items, "next_cursor": next_cursor}


@router.get("/conversations/{conversation_id}")
async def get_conversation(
    conversation_id: ConversationId, state: State, owner: Owner
) -> dict[str, Any]:
    """A conversation with its turns, oldest first: each question, its answer, sources (marked
    `deleted` when their document is gone) and quotes."""
    return await conversations.get(state.db, owner, conversation_id)


@router.patch("/conversations/{conversation_id}")
async def rename_conversation(
    conversation_id: ConversationId, body: ConversationRename, state: State, owner: Owner
) -> dict[str, Any]:
    return await conversations.rename(state.db, owner, conversation_id, body.title)


@router.delete("/conversations/{conversation_id}", status_code=204)
async def delete_conversation(
    conversation_id: ConversationId, state: State, owner: Owner
) -> Response:
    await conversations.delete_conversation(state.db, owner, conversation_id)
    return Response(status_code=204)
