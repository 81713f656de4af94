"""What processing writes to the database, in as few transactions as a document allows.

A one-page document pays for every transaction it opens: with thousands of them in a synced
folder, round trips and commits cost more than the model. So a run writes its start in one
transaction (the status, and which chunk batches an earlier attempt already stored), the
chunk batches in between (one each, as they are embedded), and everything else in one last
transaction: the last batch, the pages, the lexical index, the totals and the status `ready`. A
document small enough for one batch is processed in two transactions. A larger one stores its
pages as soon as it is read, while its last batches are embedded (`write_pages`), so that its
last transaction, which the person waits for, is shorter. Pages are served only once their
document is ready (`docqa.pages`), and a failed document's are deleted with its chunks.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import ARRAY, Integer, delete, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from docqa.db.engine import Database
from docqa.db.models import Chunk, Document
from docqa.db.models import Page as PageRow
from docqa.documents import TERMINAL, notify_returned, set_progress
from docqa.formats.geometry import rects_for_span
from docqa.formats.page import Page
from docqa.ingest.chunk import ChunkSpec
from docqa.search.index import index_terms


async def start(db: Database, pk: uuid.UUID) -> tuple[Document | None, str, set[int]]:
    """Claim document `pk`: status `processing`, progress back to 0. Returns the document, its
    status, and the chunk numbers an earlier attempt stored; the document is None (with its
    status, or "deleted") when it is gone or already ready or failed.

    One statement: the claim returns the stored chunk numbers and sends the notification."""
    stored_seqs = (
        select(func.coalesce(func.array_agg(Chunk.seq), literal([], ARRAY(Integer))))
        .where(Chunk.document_pk == Document.pk)
        .scalar_subquery()
    )
    async with db.session() as session, session.begin():
        claimed = await session.execute(
            update(Document)
            .where(Document.pk == pk, Document.status.not_in(TERMINAL))
            .values(
                status="processing",
                stage="extracting",
                progress_done=0,
                progress_total=0,
                percent=0.0,
                error_code=None,
                error_message=None,
                updated_at=func.now(),
            )
            .returning(Document, stored_seqs, notify_returned())
        )
        row = claimed.one_or_none()
        if row is None:
            status = await session.scalar(select(Document.status).where(Document.pk == pk))
            return None, status or "deleted", set()
        return row[0], "processing", set(row[1])


async def write_chunks(db: Database, rows: list[dict[str, Any]]) -> None:
    """One batch of chunks, in a transaction of its own (a retry skips the batches stored)."""
    async with db.session() as session, session.begin():
        await _insert_chunks(session, rows)


async def _insert_chunks(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(
            insert(Chunk).values(rows).on_conflict_do_nothing(constraint="uq_chunks_document_seq")
        )


async def write_pages(db: Database, doc: Document, pages: list[Page]) -> None:
    """The document's pages, in a transaction of their own (replacing an earlier attempt's)."""
    async with db.session() as session, session.begin():
        await _replace_pages(session, doc, pages)


async def _replace_pages(session: AsyncSession, doc: Document, pages: list[Page]) -> None:
    await session.execute(delete(PageRow).where(PageRow.document_pk == doc.pk))
    if pages:
        await session.execute(insert(PageRow), [_page_row(doc, p) for p in pages])


async def finish(
    db: Database,
    doc: Document,
    pages: list[Page] | int,
    last_rows: list[dict[str, Any]],
    chunks: int,
    timings: dict[str, float],
    started: float,
) -> None:
    """The last chunk batch, the pages, the lexical index, the totals and `ready`, together: a
    ready document is searchable, and one that is not has no postings. `pages` is the pages
    to write, or how many `write_pages` already wrote."""
    async with db.session() as session, session.begin():
        t = time.perf_counter()
        await _insert_chunks(session, last_rows)
        timings["write_s"] = timings.get("write_s", 0.0) + time.perf_counter() - t
        if isinstance(pages, list):
            await _replace_pages(session, doc, pages)
        t = time.perf_counter()
        await index_terms(session, doc.pk)
        timings["index_terms_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - started
        await set_progress(
            session,
            doc.pk,
            status="ready",
            stage="ready",
            progress_done=chunks,
            progress_total=chunks,
            percent=100.0,
            page_count=len(pages) if isinstance(pages, list) else pages,
            chunk_count=select(func.count()).where(Chunk.document_pk == doc.pk).scalar_subquery(),
            token_count=select(func.coalesce(func.sum(Chunk.token_count), 0))
            .where(Chunk.document_pk == doc.pk)
            .scalar_subquery(),
            timings={k: round(v, 4) for k, v in timings.items()},
        )


async def discard_chunks(db: Database, pk: uuid.UUID) -> None:
    """A failed document's chunks and pages: what was read before the failure must not stay
    searchable, nor be kept."""
    async with db.session() as session, session.begin():
        await session.execute(delete(Chunk).where(Chunk.document_pk == pk))
        await session.execute(delete(PageRow).where(PageRow.document_pk == pk))
        await session.execute(update(Document).where(Document.pk == pk).values(chunk_count=0))


def chunk_row(doc: Document, chunk: ChunkSpec, page: Page) -> dict[str, Any]:
    # Formats without page images have no words, so no rectangles to show: [].
    rects = rects_for_span(page.words, chunk.char_start, chunk.char_end) if page.words else []
    return {
        "document_pk": doc.pk,
        "owner_id": doc.owner_id,
        "seq": chunk.seq,
        "page_start": chunk.page_no,
        "page_end": chunk.page_no,
        "char_start": chunk.char_start,
        "char_end": chunk.char_end,
        "token_count": chunk.token_count,
        "text": chunk.text,
        "heading": chunk.heading,
        "rects": rects,
    }


def _page_row(doc: Document, page: Page) -> dict[str, Any]:
    return {
        "document_pk": doc.pk,
        "page_no": page.number,
        "text": page.text,
        "ocr": page.ocr,
        "tables": len(page.tables),
        "heading": page.heading,
        "words": [list(w) for w in page.words] if page.words else None,
    }
