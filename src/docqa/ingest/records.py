"""What processing writes to the database, in as few transactions as a document allows.

A one-page document pays for every transaction it opens: with thousands of them in a synced
folder, round trips and commits cost more than the model. So a run writes its start in one
transaction (the status, and which chunk batches an earlier attempt already stored), the
chunk batches in between (one each, as they are embedded), and everything else in one last
transaction: the last batch, the pages, the lexical index, the totals and the status `ready`. A
document small enough for one batch is processed in two transactions, and those are shared with
the other documents starting or ending at the same moment (`claims`, `endings`:
`docqa.ingest.groups`). A larger one stores its pages as soon as it is read, while its last
batches are embedded (`write_pages`), so that its last transaction, which the person waits
for, is shorter. Pages are served only once their
document is ready (`docqa.pages`), and a failed document's are deleted with its chunks.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ARRAY, Integer, Text, bindparam, delete, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession

from docqa.db.engine import Database
from docqa.db.models import Chunk, Document
from docqa.db.models import Page as PageRow
from docqa.documents import PROGRESS_CHANNEL, TERMINAL, notify_returned
from docqa.formats.geometry import rects_for_span
from docqa.formats.page import Page
from docqa.ingest.chunk import ChunkSpec
from docqa.ingest.groups import Grouped
from docqa.search.index import index_terms


@dataclass
class Claim:
    """A claimed document (None when it is gone, or already ready or failed), its status, and
    the chunk numbers an earlier attempt stored."""

    doc: Document | None
    status: str
    stored: set[int]


async def claim(db: Database, pks: list[uuid.UUID]) -> list[Claim]:
    """Claim documents `pks`: status `processing`, progress back to 0, in one statement that
    also returns the chunk numbers earlier attempts stored and sends each notification."""
    stored_seqs = (
        select(func.coalesce(func.array_agg(Chunk.seq), literal([], ARRAY(Integer))))
        .where(Chunk.document_pk == Document.pk)
        .scalar_subquery()
    )
    async with db.session() as session, session.begin():
        claimed = await session.execute(
            update(Document)
            .where(Document.pk.in_(pks), Document.status.not_in(TERMINAL))
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
        found = {row[0].pk: Claim(row[0], "processing", set(row[1])) for row in claimed}
        if len(found) < len(set(pks)):
            others = await session.execute(
                select(Document.pk, Document.status).where(
                    Document.pk.in_([pk for pk in pks if pk not in found])
                )
            )
            found.update({pk: Claim(None, status, set()) for pk, status in others})
    return [found.get(pk) or Claim(None, "deleted", set()) for pk in pks]


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
        await _replace_pages(session, [(doc, pages)])


async def _replace_pages(session: AsyncSession, read: list[tuple[Document, list[Page]]]) -> None:
    """Documents' pages, in place of any an earlier attempt wrote."""
    await session.execute(
        delete(PageRow).where(PageRow.document_pk.in_([doc.pk for doc, _ in read]))
    )
    rows = [_page_row(doc, page) for doc, pages in read for page in pages]
    if rows:
        await session.execute(insert(PageRow), rows)


@dataclass
class Ending:
    """What a document's last transaction writes: its last chunk batch, its pages (unless
    `write_pages` stored them already), its postings and `ready`."""

    doc: Document
    pages: list[Page]
    pages_stored: bool
    last_rows: list[dict[str, Any]]
    chunks: int
    timings: dict[str, float]
    started: float


# Makes each document of a group ready, with its totals, and wakes its event streams; only rows
# that are updated notify.
_READY_SQL = text(
    f"""
    UPDATE documents d
    SET status = 'ready', stage = 'ready', progress_done = v.chunks, progress_total = v.chunks,
        percent = 100, page_count = v.pages, timings = v.timings::jsonb, updated_at = now(),
        chunk_count = (SELECT count(*) FROM chunks c WHERE c.document_pk = d.pk),
        token_count = (SELECT coalesce(sum(c.token_count), 0) FROM chunks c
                       WHERE c.document_pk = d.pk)
    FROM unnest(:pks, :chunks, :pages, :timings) AS v(pk, chunks, pages, timings)
    WHERE d.pk = v.pk
    RETURNING pg_notify('{PROGRESS_CHANNEL}', d.pk::text)
    """  # noqa: S608 (constant text)
).bindparams(
    bindparam("pks", type_=ARRAY(UUID(as_uuid=True))),
    bindparam("chunks", type_=ARRAY(Integer)),
    bindparam("pages", type_=ARRAY(Integer)),
    bindparam("timings", type_=ARRAY(Text)),
)


async def finish(db: Database, endings: list[Ending]) -> list[None]:
    """The documents' last chunk batches, pages, postings, totals and `ready`, in one
    transaction: a ready document is searchable, and one that is not has no postings. Several
    documents that end at once (the one-page notes of one embedding batch) share it."""
    pks = [e.doc.pk for e in endings]
    async with db.session() as session, session.begin():
        t = time.perf_counter()
        await _insert_chunks(session, [row for e in endings for row in e.last_rows])
        write_s = time.perf_counter() - t
        read = [(e.doc, e.pages) for e in endings if not e.pages_stored]
        if read:
            await _replace_pages(session, read)
        t = time.perf_counter()
        await index_terms(session, pks)
        index_s = time.perf_counter() - t
        now = time.perf_counter()
        for e in endings:
            e.timings["write_s"] = e.timings.get("write_s", 0.0) + write_s
            e.timings["index_terms_s"] = index_s
            e.timings["total_s"] = now - e.started
            e.timings["ended_together"] = float(len(endings))
        await session.execute(
            _READY_SQL,
            {
                "pks": pks,
                "chunks": [e.chunks for e in endings],
                "pages": [len(e.pages) for e in endings],
                "timings": [
                    json.dumps({k: round(v, 4) for k, v in e.timings.items()}) for e in endings
                ],
            },
        )
    return [None] * len(endings)


def claims(db: Database) -> Grouped[uuid.UUID, Claim]:
    """The worker's claims, grouped: the jobs taken while one group is claimed share a
    transaction."""
    return Grouped(functools.partial(claim, db), most=64)


# A chunk row is a dozen bound parameters, and PostgreSQL takes at most 65,535 in a statement.
ENDING_ROWS = 1_024


def endings(db: Database) -> Grouped[Ending, None]:
    """The worker's last transactions, grouped: the documents that end while one group is
    written share the next one."""
    return Grouped(
        functools.partial(finish, db),
        most=64,
        weight=lambda e: len(e.last_rows),
        most_weight=ENDING_ROWS,
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
