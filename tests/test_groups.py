"""Documents that start or end together share a transaction (`ingest.groups`): every one ends
ready with its own totals, pages and postings, exactly as if it had been written alone, every
claim gets its own document or status, and one document's failure stays its own. Real
PostgreSQL; the documents are written straight into it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import select

from docqa.db.engine import Database, open_database
from docqa.db.models import Document
from docqa.formats.page import Page
from docqa.ingest import records
from docqa.ingest.chunk import ChunkSpec
from docqa.ingest.groups import Grouped
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


@pytest.fixture
def owner(db: Database) -> Iterator[str]:
    """An owner of its own, whose documents are deleted after the test."""
    name = f"groups-{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(db.url) as conn:
        conn.execute("DELETE FROM documents WHERE owner_id = %s", (name,))


def _statuses(db: Database, owner: str) -> list[tuple[str, str]]:
    with psycopg.connect(db.url) as conn:
        rows = conn.execute(
            "SELECT document_id, status FROM documents WHERE owner_id = %s ORDER BY document_id",
            (owner,),
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


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
    return records.Ending(doc, [page], False, rows, len(rows), {}, 0.0)


def _postings(conn: psycopg.Connection[Any], owner: str) -> set[tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT document_pk, lexeme, block, first_id, entries FROM postings WHERE owner_id = %s",
        (owner,),
    ).fetchall()
    return {tuple(r) for r in rows}


async def test_documents_ending_together_share_one_transaction(db: Database, owner: str) -> None:
    docs = await _processing_documents(db, owner, 5)
    finisher = records.endings(db)
    await asyncio.gather(*(finisher(_ending(d, i)) for i, d in enumerate(docs)))
    with psycopg.connect(db.url) as conn:
        rows = conn.execute(
            """SELECT document_id, status, chunk_count, page_count, token_count,
                      progress_done, xmin::text
               FROM documents WHERE owner_id = %s ORDER BY document_id""",
            (owner,),
        ).fetchall()
        assert [r[:6] for r in rows] == [(d.document_id, "ready", 2, 1, 28, 2) for d in docs], rows
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


async def test_one_document_failing_does_not_fail_its_group(db: Database, owner: str) -> None:
    docs = await _processing_documents(db, owner, 3)
    # Deleted while its last batch was embedded: its rows can no longer be written.
    with psycopg.connect(db.url) as conn:
        conn.execute("DELETE FROM documents WHERE pk = %s", (docs[1].pk,))
    finisher = records.endings(db)
    results = await asyncio.gather(
        *(finisher(_ending(d, i)) for i, d in enumerate(docs)),
        return_exceptions=True,
    )
    assert results[0] is None, results
    assert results[2] is None, results
    assert isinstance(results[1], Exception), results
    assert _statuses(db, owner) == [("note-0", "ready"), ("note-2", "ready")]
    with psycopg.connect(db.url) as conn:
        orphans = conn.execute(
            "SELECT count(*) FROM chunks WHERE document_pk = %s", (docs[1].pk,)
        ).fetchone()
        assert orphans == (0,)


async def test_a_cancelled_wait_is_not_written(db: Database, owner: str) -> None:
    """A document whose job is cancelled (the worker stops) before its group is taken is left
    for the retry; the others are written."""
    docs = await _processing_documents(db, owner, 2)
    finisher = records.endings(db)
    first = asyncio.ensure_future(finisher(_ending(docs[0], 0)))
    second = asyncio.ensure_future(finisher(_ending(docs[1], 1)))
    await asyncio.sleep(0)  # both are waiting; no group has been taken yet
    first.cancel()
    await second
    with pytest.raises(asyncio.CancelledError):
        await first
    assert _statuses(db, owner) == [("note-0", "processing"), ("note-1", "ready")]


async def test_documents_taken_together_are_claimed_together(db: Database, owner: str) -> None:
    docs = await _processing_documents(db, owner, 4)
    with psycopg.connect(db.url) as conn:
        conn.execute("UPDATE documents SET status = 'queued' WHERE owner_id = %s", (owner,))
        conn.execute("UPDATE documents SET status = 'ready' WHERE pk = %s", (docs[1].pk,))
        conn.execute("DELETE FROM documents WHERE pk = %s", (docs[2].pk,))
        # An earlier attempt stored the first batch of the last one.
        conn.execute(
            """INSERT INTO chunks (document_pk, owner_id, seq, page_start, page_end, char_start,
                   char_end, token_count, text, embedding)
               VALUES (%s, %s, 0, 1, 1, 0, 4, 1, 'tide', CAST(%s AS vector))""",
            (docs[3].pk, owner, str([1.0] + [0.0] * 383)),
        )
    claims = records.claims(db)
    got = await asyncio.gather(*(claims(d.pk) for d in docs))
    assert [(c.doc.pk if c.doc else None, c.status, c.stored) for c in got] == [
        (docs[0].pk, "processing", set()),
        (None, "ready", set()),
        (None, "deleted", set()),
        (docs[3].pk, "processing", {0}),
    ]
    with psycopg.connect(db.url) as conn:
        rows = conn.execute(
            "SELECT status, xmin::text FROM documents WHERE pk = ANY(%s)",
            ([docs[0].pk, docs[3].pk],),
        ).fetchall()
    assert {r[0] for r in rows} == {"processing"}
    assert len({r[1] for r in rows}) == 1, "one transaction claimed both"


async def test_the_items_that_come_while_a_group_is_written_form_the_next() -> None:
    calls: list[list[int]] = []
    gate = asyncio.Event()

    async def write(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            await gate.wait()
        return [i * 10 for i in items]

    grouped = Grouped(write, most=3, weight=lambda i: i, most_weight=5)
    first = asyncio.ensure_future(grouped(1))
    for _ in range(10):
        await asyncio.sleep(0)
    assert calls == [[1]], "an item that comes alone is written at once"
    rest = [asyncio.ensure_future(grouped(i)) for i in (2, 3, 4, 1, 6)]
    gate.set()
    assert await asyncio.gather(first, *rest) == [10, 20, 30, 40, 10, 60]
    # At most 3 items and a weight of 5 a group, but an item heavier than that still goes.
    assert calls == [[1], [2, 3], [4, 1], [6]]


async def test_a_failing_group_is_written_again_one_by_one() -> None:
    calls: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        calls.append(items)
        if 13 in items:
            raise ValueError("unlucky")
        return items

    grouped = Grouped(write, most=10)
    results = await asyncio.gather(*(grouped(i) for i in (12, 13, 14)), return_exceptions=True)
    assert results[0] == 12
    assert isinstance(results[1], ValueError)
    assert results[2] == 14
    assert calls == [[12, 13, 14], [12], [13], [14]]
