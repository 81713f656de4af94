"""Schema migrations on a real PostgreSQL: data written under an older revision survives an
upgrade and is usable afterwards, and the chain downgrades cleanly."""

from __future__ import annotations

import uuid

import psycopg
from alembic import command

from docqa.db import migrate
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
    migrate.upgrade(url)
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
