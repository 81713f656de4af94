"""Schema migrations on a real PostgreSQL: data written under an older revision survives an
upgrade and is usable afterwards, and the chain downgrades cleanly."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import psycopg
from alembic import command

from docqa.db import migrate
from docqa.search.index import BLOCK, RECORD
from tests.postings import read_blocks
from tests.stack import new_database


def test_0004_indexes_existing_ready_documents(pg_server_url: str) -> None:
    """Documents made ready before the postings existed are searchable by BM25 after the
    upgrade: their postings and token totals are built from the stored chunks."""
    url = new_database(pg_server_url, "docqa_migrate", revision="0003")
    texts = ["Comets have icy tails.", "A comet's tail points away from the sun, comets glow."]
    with psycopg.connect(url, autocommit=True) as conn:
        pks = {}
        for status in ("ready", "processing"):
            row = conn.execute(
                """INSERT INTO documents (owner_id, document_id, filename, content_type, kind,
                       size_bytes, sha256, blob_key, status, chunk_count)
                   VALUES ('o', %s, 'c.txt', 'text/plain', 'text', 1, %s, 'none', %s, 2)
                   RETURNING pk""",
                (status, uuid.uuid4().hex * 2, status),
            ).fetchone()
            assert row is not None
            pks[status] = row[0]
            for seq, text in enumerate(texts):
                conn.execute(
                    """INSERT INTO chunks (document_pk, owner_id, seq, page_start, page_end,
                           char_start, char_end, token_count, text, embedding)
                       VALUES (%s, 'o', %s, 1, 1, 0, 1, %s, %s,
                           array_fill(0.1, ARRAY[384])::vector)""",
                    (row[0], seq, 10 + seq, text),
                )
    migrate.upgrade(url, "0007")
    with psycopg.connect(url, autocommit=True) as conn:
        ready_ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM chunks WHERE document_pk = %s ORDER BY id", (pks["ready"],)
            )
        ]
        comet = conn.execute(
            "SELECT chunk_ids, tfs, dls FROM postings WHERE lexeme = 'comet'"
        ).fetchall()
        # Only the ready document: one still processing gets its postings when it is done.
        assert comet == [(ready_ids, [1, 2], [10, 11])]
        totals = conn.execute(
            "SELECT status, token_count FROM documents ORDER BY status"
        ).fetchall()
        assert totals == [("processing", 21), ("ready", 21)]
        assert conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_chunks_tsv'"
        ).fetchone() == (0,)
    command.downgrade(migrate.alembic_config(url), "0003")
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('postings')").fetchone() == (None,)
        assert conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_chunks_tsv'"
        ).fetchone() == (1,)


# Migration 0008's record: chunk id int8, term frequency int2, length int4, big-endian.
ENTRY_0008 = np.dtype([("chunk_id", ">i8"), ("tf", ">i2"), ("dl", ">i4")])


def _ready_document(conn: psycopg.Connection[Any], chunks: int) -> uuid.UUID:
    """A ready document of owner 'o' with `chunks` chunks (none stored): its key."""
    row = conn.execute(
        """INSERT INTO documents (owner_id, document_id, filename, content_type, kind,
               size_bytes, sha256, blob_key, status, chunk_count)
           VALUES ('o', 'd', 'c.txt', 'text/plain', 'text', 1, %s, 'none', 'ready', %s)
           RETURNING pk""",
        (uuid.uuid4().hex * 2, chunks),
    ).fetchone()
    assert row is not None
    pk: uuid.UUID = row[0]
    return pk


def _postings_key(conn: psycopg.Connection[Any]) -> str:
    """The definition of the postings' primary key index."""
    row = conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'postings_pkey'"
    ).fetchone()
    assert row is not None
    definition: str = row[0]
    return definition


def test_0008_packs_postings_into_blocks_and_back(pg_server_url: str) -> None:
    """0008 converts each posting row's arrays into packed blocks of at most 32 chunks, in
    chunk order, and its downgrade gives the arrays back unchanged."""
    url = new_database(pg_server_url, "docqa_migrate_0008", revision="0007")
    with psycopg.connect(url, autocommit=True) as conn:
        pk = _ready_document(conn, chunks=70)
        # 70 chunks hold "comet" (three blocks: 32, 32 and 6); one holds "tail".
        ids = list(range(1000, 1070))
        tfs = [1 + i % 3 for i in range(70)]
        dls = [100 + i for i in range(70)]
        conn.execute(
            """INSERT INTO postings (owner_id, lexeme, document_pk, chunk_ids, tfs, dls)
               VALUES ('o', 'comet', %s, %s, %s, %s), ('o', 'tail', %s, '{1069}', '{300}',
               '{70000}')""",
            (pk, ids, tfs, dls, pk),
        )
    migrate.upgrade(url, "0008")
    with psycopg.connect(url, autocommit=True) as conn:
        blocks = conn.execute(
            "SELECT lexeme, block, entries FROM postings ORDER BY lexeme, block"
        ).fetchall()
        assert [(lexeme, block) for lexeme, block, _ in blocks] == [
            ("comet", 0),
            ("comet", 1),
            ("comet", 2),
            ("tail", 0),
        ]
        comet = np.concatenate(
            [
                np.frombuffer(entries, dtype=ENTRY_0008)
                for lexeme, _, entries in blocks
                if lexeme == "comet"
            ]
        )
        assert comet["chunk_id"].tolist() == ids
        assert comet["tf"].tolist() == tfs
        assert comet["dl"].tolist() == dls
        tail = np.frombuffer(blocks[-1][2], dtype=ENTRY_0008)
        assert tail.tolist() == [(1069, 300, 70000)]
        # The blocks ride in the primary key's index, for index-only scans.
        assert "INCLUDE (entries)" in _postings_key(conn)
    command.downgrade(migrate.alembic_config(url), "0007")
    with psycopg.connect(url, autocommit=True) as conn:
        back = conn.execute(
            "SELECT lexeme, chunk_ids, tfs, dls FROM postings ORDER BY lexeme"
        ).fetchall()
        assert back == [("comet", ids, tfs, dls), ("tail", [1069], [300], [70000])]


def test_0009_stores_ids_from_the_block_s_first_and_back(pg_server_url: str) -> None:
    """0009 turns each 14-byte record into an 8-byte one (the chunk id less the block's first,
    kept in `first_id`), block by block, and its downgrade gives 0008's records back."""
    url = new_database(pg_server_url, "docqa_migrate_0009", revision="0008")
    # 70 chunks hold "comet" (blocks of 32, 32 and 6, ids with gaps); "tail" is one chunk whose
    # length is beyond an int2 (clamped: docqa's chunks are at most 254 word pieces).
    ids = [5_000_000_000 + 3 * i + (i % 7) for i in range(70)]
    tfs = [1 + i % 3 for i in range(70)]
    dls = [100 + i for i in range(70)]
    rows = [
        ("comet", block, ids[block * 32 : (block + 1) * 32]) for block in range((70 + 31) // 32)
    ]
    with psycopg.connect(url, autocommit=True) as conn:
        pk = _ready_document(conn, chunks=70)
        old: list[tuple[str, int, bytes]] = []
        for lexeme, block, chunk_ids in rows:
            entries = np.zeros(len(chunk_ids), dtype=ENTRY_0008)
            at = ids.index(chunk_ids[0])
            entries["chunk_id"] = chunk_ids
            entries["tf"] = tfs[at : at + len(chunk_ids)]
            entries["dl"] = dls[at : at + len(chunk_ids)]
            old.append((lexeme, block, entries.tobytes()))
        tail = np.array([(ids[-1], 300, 70000)], dtype=ENTRY_0008).tobytes()
        old.append(("tail", 0, tail))
        for lexeme, block, entries_bytes in old:
            conn.execute(
                "INSERT INTO postings (owner_id, lexeme, document_pk, block, entries) "
                "VALUES ('o', %s, %s, %s, %s)",
                (lexeme, pk, block, entries_bytes),
            )
    migrate.upgrade(url, "0009")
    with psycopg.connect(url, autocommit=True) as conn:
        blocks = conn.execute(
            "SELECT lexeme, block, first_id, entries FROM postings ORDER BY lexeme, block"
        ).fetchall()
        assert [(lexeme, block) for lexeme, block, _, _ in blocks] == [
            ("comet", 0),
            ("comet", 1),
            ("comet", 2),
            ("tail", 0),
        ]
        assert all(
            len(entries) == RECORD.itemsize * min(BLOCK, 70 - 32 * block)
            for lexeme, block, _, entries in blocks
            if lexeme == "comet"
        )
        assert [first for _, _, first, _ in blocks[:3]] == [ids[0], ids[32], ids[64]]

        def read(lexeme: str) -> list[tuple[int, int, int]]:
            mine = [(first, entries) for name, _, first, entries in blocks if name == lexeme]
            return [tuple(p) for p in read_blocks(mine).tolist()]

        assert read("comet") == list(zip(ids, tfs, dls, strict=True))
        assert read("tail") == [(ids[-1], 300, 32767)]
        assert "INCLUDE (first_id, entries)" in _postings_key(conn)
    command.downgrade(migrate.alembic_config(url), "0008")
    with psycopg.connect(url, autocommit=True) as conn:
        back = conn.execute(
            "SELECT lexeme, block, entries FROM postings ORDER BY lexeme, block"
        ).fetchall()
    clamped = np.array([(ids[-1], 300, 32767)], dtype=ENTRY_0008).tobytes()
    assert back == [*old[:-1], ("tail", 0, clamped)]
