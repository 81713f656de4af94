"""Conversations: the turns asked in one, kept by the server so that a follow-up needs no history
from the client and a reloaded page can show them again.

A turn is stored when its answer ends (or when the client goes away, with what had been
streamed, marked `interrupted`). Its sources and quotes are copies of what the client was sent,
so a past answer stays readable after its documents are deleted; reading it back marks those
sources `deleted`. Every query is scoped by owner inside the SQL; nothing here knows about HTTP.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from docqa.answer import Answer, ChatMessage
from docqa.db.engine import Database
from docqa.db.models import Conversation, ConversationTurn, Document
from docqa.errors import DocqaError, InvalidRequest

log = logging.getLogger(__name__)

# The turns a follow-up carries: 50 messages, as many as `/ask` takes in `history`.
HISTORY_TURNS = 25
TITLE_MAX = 200
# A conversation without a title is named after its first question, cut to about this length.
AUTO_TITLE = 80


class ConversationNotFound(DocqaError):
    status_code = 404
    code = "conversation_not_found"


@dataclass(frozen=True)
class Thread:
    """A conversation opened for a new question: where its turn goes, and what came before."""

    pk: uuid.UUID
    conversation_id: str
    history: tuple[ChatMessage, ...]


def _public_id(pk: uuid.UUID) -> str:
    return pk.hex


def _parse_id(conversation_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(conversation_id)
    except ValueError:
        raise _not_found(conversation_id) from None


def _not_found(conversation_id: str) -> ConversationNotFound:
    return ConversationNotFound(f"There is no conversation with the id '{conversation_id}'.")


def clean_title(title: str) -> str:
    """A title as stored: one line, trimmed, at most `TITLE_MAX` characters."""
    title = " ".join(title.split())
    if len(title) > TITLE_MAX:
        raise InvalidRequest(f"A title has at most {TITLE_MAX} characters.")
    return title


def _auto_title(question: str) -> str:
    words = " ".join(question.split())
    if len(words) <= AUTO_TITLE:
        return words
    cut = words[:AUTO_TITLE].rsplit(" ", 1)[0] or words[:AUTO_TITLE]
    return cut.rstrip(" ,;:") + "…"


def conversation_view(row: Conversation, turn_count: int) -> dict[str, Any]:
    """The public JSON of a conversation, without its turns."""
    return {
        "conversation_id": _public_id(row.pk),
        "title": row.title,
        "turn_count": turn_count,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


def turn_view(turn: ConversationTurn, existing: set[uuid.UUID]) -> dict[str, Any]:
    """One stored turn; a source whose document no longer exists is marked `deleted`."""
    sources = [
        {**source, "deleted": pk not in existing}
        for source, pk in zip(turn.sources, turn.source_documents, strict=False)
    ]
    view: dict[str, Any] = {
        "turn_id": turn.id,
        "question": turn.question,
        "standalone_question": turn.standalone,
        "answer": turn.answer,
        "sources": sources,
        "quotes": turn.quotes,
        "answered": turn.answered,
        "mode": turn.mode,
        "finish_reason": turn.finish_reason,
        "interrupted": turn.interrupted,
        "document_ids": turn.document_ids,
        "timings_ms": turn.timings,
        "created_at": turn.created_at.isoformat(),
    }
    if turn.citations is not None:
        view["citations"] = turn.citations
    return view


async def _owned(db: Database, owner_id: str, conversation_id: str) -> Conversation:
    pk = _parse_id(conversation_id)
    async with db.session() as session:
        row = (
            await session.execute(
                select(Conversation).where(Conversation.pk == pk, Conversation.owner_id == owner_id)
            )
        ).scalar_one_or_none()
    if row is None:
        raise _not_found(conversation_id)
    return row


async def create(db: Database, owner_id: str, *, title: str = "") -> dict[str, Any]:
    """A new, empty conversation. Without a title it takes its first question's words."""
    row = Conversation(owner_id=owner_id, title=clean_title(title))
    async with db.session() as session, session.begin():
        session.add(row)
        await session.flush()
        await session.refresh(row)
    return conversation_view(row, 0)


def _turn_count() -> Any:
    return (
        select(func.count())
        .where(ConversationTurn.conversation_pk == Conversation.pk)
        .correlate(Conversation)
        .scalar_subquery()
    )


def _encode_cursor(row: Conversation) -> str:
    raw = f"{row.updated_at.isoformat()}|{row.pk.hex}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, pk = raw.split("|")
        return dt.datetime.fromisoformat(when), uuid.UUID(pk)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("The cursor is not one this server gave out.") from None


async def list_conversations(
    db: Database, owner_id: str, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """The owner's conversations, the most recently used first, `limit` at a time; returns the
    page and the cursor for the next one."""
    query = select(Conversation, _turn_count()).where(Conversation.owner_id == owner_id)
    if cursor is not None:
        when, pk = _decode_cursor(cursor)
        query = query.where(
            or_(
                Conversation.updated_at < when,
                and_(Conversation.updated_at == when, Conversation.pk < pk),
            )
        )
    query = query.order_by(Conversation.updated_at.desc(), Conversation.pk.desc()).limit(limit + 1)
    async with db.session() as session:
        rows = list((await session.execute(query)).tuples())
    next_cursor = _encode_cursor(rows[limit - 1][0]) if len(rows) > limit else None
    return [conversation_view(row, count) for row, count in rows[:limit]], next_cursor


async def get(db: Database, owner_id: str, conversation_id: str) -> dict[str, Any]:
    """A conversation with its turns, oldest first."""
    row = await _owned(db, owner_id, conversation_id)
    async with db.session() as session:
        turns = list(
            (
                await session.execute(
                    select(ConversationTurn)
                    .where(ConversationTurn.conversation_pk == row.pk)
                    .order_by(ConversationTurn.id)
                )
            ).scalars()
        )
        cited = {pk for turn in turns for pk in turn.source_documents}
        existing: set[uuid.UUID] = set()
        if cited:
            existing = set(
                (
                    await session.execute(
                        select(Document.pk).where(
                            Document.pk.in_(cited), Document.owner_id == owner_id
                        )
                    )
                ).scalars()
            )
    view = conversation_view(row, len(turns))
    view["turns"] = [turn_view(turn, existing) for turn in turns]
    return view


async def rename(db: Database, owner_id: str, conversation_id: str, title: str) -> dict[str, Any]:
    pk = _parse_id(conversation_id)
    async with db.session() as session, session.begin():
        row = (
            await session.execute(
                update(Conversation)
                .where(Conversation.pk == pk, Conversation.owner_id == owner_id)
                .values(title=clean_title(title))
                .returning(Conversation)
            )
        ).scalar_one_or_none()
        if row is None:
            raise _not_found(conversation_id)
        count = (
            await session.execute(
                select(func.count()).where(ConversationTurn.conversation_pk == pk)
            )
        ).scalar_one()
    return conversation_view(row, count)


async def delete_conversation(db: Database, owner_id: str, conversation_id: str) -> None:
    """Remove a conversation and its turns (they cascade)."""
    pk = _parse_id(conversation_id)
    async with db.session() as session, session.begin():
        result = await session.execute(
            delete(Conversation)
            .where(Conversation.pk == pk, Conversation.owner_id == owner_id)
            .returning(Conversation.pk)
        )
        if result.one_or_none() is None:
            raise _not_found(conversation_id)


def _history(turns: list[ConversationTurn]) -> tuple[ChatMessage, ...]:
    """The messages a follow-up carries: each answered turn's question and answer, as a client
    would send them in `history`. A turn that failed, or has no text, is left out."""
    out: list[ChatMessage] = []
    for turn in turns:
        if turn.finish_reason == "error" or not turn.answer.strip():
            continue
        out.append({"role": "user", "content": turn.question})
        out.append({"role": "assistant", "content": turn.answer})
    return tuple(out)


async def open_thread(db: Database, owner_id: str, conversation_id: str) -> Thread:
    """The conversation a question is asked in, with its last turns as history."""
    row = await _owned(db, owner_id, conversation_id)
    async with db.session() as session:
        recent = list(
            (
                await session.execute(
                    select(ConversationTurn)
                    .where(ConversationTurn.conversation_pk == row.pk)
                    .order_by(ConversationTurn.id.desc())
                    .limit(HISTORY_TURNS)
                )
            ).scalars()
        )
    return Thread(row.pk, _public_id(row.pk), _history(recent[::-1]))


def _fold(text: str) -> str:
    return " ".join(text.split())


async def record_turn(
    db: Database,
    thread: Thread,
    *,
    question: str,
    document_ids: list[str],
    answer: Answer,
    done: dict[str, Any],
    interrupted: bool,
) -> int | None:
    """Store a turn as its answer ended (`done` is the `done` event's payload). Returns the
    turn's id, or None when the conversation was deleted meanwhile."""
    quotes = list(done.get("quotes", []))
    if interrupted:  # only the quotes of the part that was streamed
        shown = _fold(answer.text)
        quotes = [q for q in quotes if _fold(str(q.get("text", ""))) in shown]
    turn = ConversationTurn(
        conversation_pk=thread.pk,
        question=question,
        standalone=answer.question,
        answer=answer.text,
        sources=answer.source_views(),
        source_documents=[hit.document_pk for hit in answer.sources],
        quotes=quotes,
        citations=done.get("citations"),
        answered=bool(done.get("answered")),
        mode=answer.mode,
        finish_reason=str(done.get("finish_reason") or "stop"),
        interrupted=interrupted,
        document_ids=document_ids,
        timings=dict(done.get("timings_ms") or {}),
    )
    try:
        async with db.session() as session, session.begin():
            session.add(turn)
            await session.flush()
            await session.execute(
                update(Conversation)
                .where(Conversation.pk == thread.pk)
                .values(
                    updated_at=func.now(),
                    title=case(
                        (Conversation.title == "", _auto_title(question)),
                        else_=Conversation.title,
                    ),
                )
            )
    except IntegrityError:  # the conversation was deleted while this answer streamed
        log.info("conversation deleted before its turn was stored")
        return None
    return turn.id
