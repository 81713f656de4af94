"""Document records: create, read, list, delete, and the progress the worker reports.

Every query here is scoped by `owner_id` inside the SQL. Nothing in this module knows about HTTP.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, and_, cast, delete, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from docqa.blobs import BlobStore
from docqa.db.engine import Database
from docqa.db.models import Document
from docqa.errors import BadUpload, DocumentIdTaken, DocumentNotFound, InvalidRequest
from docqa.upload import ReceivedUpload

PROGRESS_CHANNEL = "docqa_documents"
TERMINAL = ("ready", "failed")


def document_view(doc: Document) -> dict[str, Any]:
    """The public JSON shape of a document (the contract's `GET /documents/{id}`)."""
    return {
        "document_id": doc.document_id,
        "status": doc.status,
        "filename": doc.filename,
        "content_type": doc.content_type,
        "size_bytes": doc.size_bytes,
        "sha256": doc.sha256,
        "metadata": doc.meta,
        "progress": {
            "stage": doc.stage,
            "done": doc.progress_done,
            "total": doc.progress_total,
            "percent": round(doc.percent, 1),
        },
        "error": (
            {"code": doc.error_code, "message": doc.error_message}
            if doc.status == "failed"
            else None
        ),
        "page_count": doc.page_count,
        "chunk_count": doc.chunk_count,
        "created_at": doc.created_at.isoformat(),
        "updated_at": doc.updated_at.isoformat(),
    }


@dataclass
class Created:
    document: Document
    duplicate: bool


async def _by_public_id(session: AsyncSession, owner_id: str, document_id: str) -> Document | None:
    result = await session.execute(
        select(Document).where(Document.owner_id == owner_id, Document.document_id == document_id)
    )
    return result.scalar_one_or_none()


async def _by_sha(session: AsyncSession, owner_id: str, sha256: str) -> Document | None:
    result = await session.execute(
        select(Document).where(Document.owner_id == owner_id, Document.sha256 == sha256)
    )
    return result.scalar_one_or_none()


async def _existing(db: Database, owner_id: str, upload: ReceivedUpload) -> Document | None:
    """The document this upload duplicates, or None; raises if its chosen id is taken."""
    async with db.session() as session:
        same_bytes = await _by_sha(session, owner_id, upload.file.sha256)
        if upload.document_id is not None:
            taken = await _by_public_id(session, owner_id, upload.document_id)
            if taken is not None and taken is not same_bytes:
                raise DocumentIdTaken(
                    f"A different document already has the id '{upload.document_id}'."
                )
        return same_bytes


async def create_document(
    db: Database, store: BlobStore, owner_id: str, upload: ReceivedUpload
) -> Created:
    """Record an upload whose bytes are in `upload.file.writer`, or find its duplicate.

    The blob is committed under its final key only once the row exists; on any failure both
    are gone again.
    """
    writer = upload.file.writer
    try:
        existing = await _existing(db, owner_id, upload)
    except BaseException:
        await writer.abort()
        raise
    if existing is not None:
        await writer.abort()
        return Created(existing, duplicate=True)
    pk = uuid.uuid4()
    doc = Document(
        pk=pk,
        owner_id=owner_id,
        document_id=upload.document_id or uuid.uuid4().hex,
        filename=upload.file.filename,
        content_type=upload.file.content_type,
        kind=upload.file.kind,
        size_bytes=upload.file.size_bytes,
        sha256=upload.file.sha256,
        blob_key=f"{pk.hex[:2]}/{pk.hex}",
        meta=upload.metadata,
    )
    try:
        async with db.session() as session, session.begin():
            session.add(doc)
            await session.flush()
            await writer.commit(doc.blob_key)
    except IntegrityError:
        # A concurrent upload of the same bytes (or id) won the race.
        await writer.abort()
        existing = await _existing(db, owner_id, upload)
        if existing is None:
            raise BadUpload("The upload clashed with another one; please try again.") from None
        return Created(existing, duplicate=True)
    except BaseException:
        await writer.abort()
        await store.delete(doc.blob_key)
        raise
    return Created(doc, duplicate=False)


async def get_document(db: Database, owner_id: str, document_id: str) -> Document:
    async with db.session() as session:
        doc = await _by_public_id(session, owner_id, document_id)
    if doc is None:
        raise DocumentNotFound(f"There is no document with the id '{document_id}'.")
    return doc


def _encode_cursor(doc: Document) -> str:
    raw = f"{doc.created_at.isoformat()}|{doc.pk}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, pk = raw.split("|")
        return dt.datetime.fromisoformat(created), uuid.UUID(pk)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("The cursor is not one this server gave out.") from None


async def list_documents(
    db: Database, owner_id: str, *, limit: int, cursor: str | None, status: str | None
) -> tuple[list[Document], str | None]:
    """Newest first, `limit` at a time; returns the page and the cursor for the next one."""
    query = select(Document).where(Document.owner_id == owner_id)
    if status is not None:
        query = query.where(Document.status == status)
    if cursor is not None:
        created, pk = _decode_cursor(cursor)
        query = query.where(
            or_(
                Document.created_at < created,
                and_(Document.created_at == created, Document.pk < pk),
            )
        )
    query = query.order_by(Document.created_at.desc(), Document.pk.desc()).limit(limit + 1)
    async with db.session() as session:
        docs = list((await session.execute(query)).scalars())
    next_cursor = _encode_cursor(docs[limit - 1]) if len(docs) > limit else None
    return docs[:limit], next_cursor


async def delete_document(db: Database, store: BlobStore, owner_id: str, document_id: str) -> None:
    """Remove the row (pages and chunks cascade), then the stored file and its page images.

    Conversations that cited it keep their copies of its passages (see `conversations`)."""
    async with db.session() as session, session.begin():
        result = await session.execute(
            delete(Document)
            .where(Document.owner_id == owner_id, Document.document_id == document_id)
            .returning(Document.blob_key, Document.pk, notify_returned())
        )
        row = result.one_or_none()
        if row is None:
            raise DocumentNotFound(f"There is no document with the id '{document_id}'.")
    await store.delete(row.blob_key)
    await store.delete_prefix(f"pages/{row.pk.hex}/")


async def notify_changed(session: AsyncSession, pk: uuid.UUID) -> None:
    """Wake every event stream watching document `pk` when the transaction commits."""
    await session.execute(
        text("SELECT pg_notify(:channel, :pk)"), {"channel": PROGRESS_CHANNEL, "pk": str(pk)}
    )


def notify_returned() -> Any:
    """A RETURNING column that wakes every event stream watching the updated row's document when
    the transaction commits: the notification rides on the UPDATE, not a round trip of its own,
    and is sent only for a row that was updated."""
    return func.pg_notify(PROGRESS_CHANNEL, cast(Document.pk, String))


async def set_progress(session: AsyncSession, pk: uuid.UUID, **values: Any) -> None:
    """Update a document's status/progress and wake every event stream watching it.

    Runs inside the caller's transaction, so progress lands together with the work it reports.
    """
    values["updated_at"] = func.now()
    await session.execute(
        update(Document).where(Document.pk == pk).values(**values).returning(notify_returned())
    )
