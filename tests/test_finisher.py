"""Documents that end together share their last transaction (`records.Finisher`): every one ends
ready with its own totals, pages and postings, exactly as if it had been written alone, and one
document's failure stays its own. Real PostgreSQL; the documents are written straight into it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import select

from docqa.db.engine import Database, open_database
from docqa.db.models import Document
from docqa.formats.page import Page
from docqa.ingest import records
from docqa.ingest.chunk import ChunkSpec
from docqa.search.index import index_terms
from docqa.settings import Settings

TEXTS = [
    "Harbour pilots board inbound freighters at the outer buoy before dawn.",
    "The pilots' cutter carries two pilots and a deckhand on every night shift.",
    "Tide tables decide when the deepest freighters may cross the harbour bar.",
]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await open_database(Settings(database_url=database_url), pool_size=2)
    yield database
    await database.close()


async def _processing_documents(db: Database, owner: str, count: int) -> list[Document]:
    """`count` documents being processed, as a worker has them when their last (here, only)
    batch is embedded."""
    pks = []
    with psycopg.connect(db.url) as conn:
        for i in range(count):
            row = conn.execute(
                """INSERT INTO documents (owner_id, document_id, filename, content_type, kind,
                       size_bytes, sha256, blob_key, status)
                   VALUES (%s, %s, 'note.txt', 'text/plain', 'txt', 1, %s, 'none', 'processing')
                   RETURNING pk""",
                (owner, f"note-{i}", uuid.uuid4().hex * 2),
            ).fetchone()
            assert row is not None
            pks.append(row[0])
    async with db.session() as session:
        docs = (await session.scalars(select(Document).where(Document.pk.in_(pks)))).all()
    return sorted(docs, key=lambda d: d.document_id)


def _ending(doc: Document, n: int) -> records.Ending:
    """Document `n`'s last batch: two chunks of its one page, embedded."""
    text = TEXTS[n % len(TEXTS)] + f" Note {n}."
    page = Page(1, text + " " + text)
    rows = []
    for seq, (start, end) in enumerate(((0, len(text)), (len(text) + 1, len(page.text)))):
        row = records.chunk_row(doc, ChunkSpec(seq, 1, start, end, page.text[start:end], 14), page)
        row["embedding"] = [float(seq + 1)] + [0.0] * 383
        rows.append(row)
    return records.Ending(doc, [page], rows, len(rows), {}, 0.0)


def _postings(conn: psycopg.Connection[Any], owner: str) -> set[tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT document_pk, lexeme, block, first_id, entries FROM postings WHERE owner_id = %s",
        (owner,),
    ).fetchall()
    return {tuple(r) for r in rows}


async def test_documents_ending_together_share_one_transaction(db: Database) -> None:
    owner = f"finisher-{uuid.uuid4().hex[:8]}"
    docs = await _processing_documents(db, owner, 5)
    finisher = records.Finisher(db)
    try:
        await asyncio.gather(*(finisher.finish(_ending(d, i)) for i, d in enumerate(docs)))
        with psycopg.connect(db.url) as conn:
            rows = conn.execute(
                """SELECT document_id, status, chunk_count, page_count, token_count,
                          progress_done, xmin::text
                   FROM documents WHERE owner_id = %s ORDER BY document_id""",
                (owner,),
            ).fetchall()
            assert [r[:6] for r in rows] == [(d.document_id, "ready", 2, 1, 28, 2) for d in docs], (
                rows
            )
            assert len({r[6] for r in rows}) == 1, "one transaction made them all ready"
            pages = conn.execute(
                "SELECT count(*) FROM pages WHERE document_pk = ANY(%s)", ([d.pk for d in docs],)
            ).fetchone()
            assert pages == (5,)
            grouped = _postings(conn, owner)
            conn.execute("DELETE FROM postings WHERE owner_id = %s", (owner,))
        # The same postings as each document indexed alone, in a transaction of its own.
        for doc in docs:
            async with db.session() as session, session.begin():
                await index_terms(session, [doc.pk])
        with psycopg.connect(db.url) as conn:
            assert grouped
            assert _postings(conn, owner) == grouped
    finally:
        with psycopg.connect(db.url) as conn:
            conn.execute("DELETE FROM documents WHERE owner_id = %s", (owner,))


async def test_one_document_failing_does_not_fail_its_group(db: Database) -> None:
    owner = f"finisher-{uuid.uuid4().hex[:8]}"
    docs = await _processing_documents(db, owner, 3)
    # Deleted while its last batch was embedded: its rows can no longer be written.
    with psycopg.connect(db.url) as conn:
        conn.execute("DELETE FROM documents WHERE pk = %s", (docs[1].pk,))
    finisher = records.Finisher(db)
    try:
        results = await asyncio.gather(
            *(finisher.finish(_ending(d, i)) for i, d in enumerate(docs)),
            return_exceptions=True,
        )
        assert results[0] is None, results
        assert results[2] is None, results
        assert isinstance(results[1], Exception), results
        with psycopg.connect(db.url) as conn:
            statuses = conn.execute(
                "SELECT document_id, status FROM documents WHERE owner_id = %s "
                "ORDER BY document_id",
                (owner,),
            ).fetchall()
            assert statuses == [("note-0", "ready"), ("note-2", "ready")]
            orphans = conn.execute(
                "SELECT count(*) FROM chunks WHERE document_pk = %s", (docs[1].pk,)
            ).fetchone()
            assert orphans == (0,)
    finally:
        with psycopg.connect(db.url) as conn:
            conn.execute("DELETE FROM documents WHERE owner_id = %s", (owner,))


async def test_a_cancelled_wait_is_not_written(db: Database) -> None:
    """A document whose job is cancelled (the worker stops) before its group is taken is left
    for the retry; the others are written."""
    owner = f"finisher-{uuid.uuid4().hex[:8]}"
    docs = await _processing_documents(db, owner, 2)
    finisher = records.Finisher(db)
    try:
        first = asyncio.ensure_future(finisher.finish(_ending(docs[0], 0)))
        second = asyncio.ensure_future(finisher.finish(_ending(docs[1], 1)))
        await asyncio.sleep(0)  # both are waiting; no group has been taken yet
        first.cancel()
        await second
        with pytest.raises(asyncio.CancelledError):
            await first
        with psycopg.connect(db.url) as conn:
            statuses = conn.execute(
                "SELECT document_id, status FROM documents WHERE owner_id = %s "
                "ORDER BY document_id",
                (owner,),
            ).fetchall()
        assert statuses == [("note-0", "processing"), ("note-1", "ready")]
    finally:
        with psycopg.connect(db.url) as conn:
            conn.execute("DELETE FROM documents WHERE owner_id = %s", (owner,))
