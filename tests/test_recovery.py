"""A worker killed with SIGKILL mid-document: the job is retried, the document ends `ready`,
and no chunk or page is written twice. Runs on its own database so the shared worker cannot
interfere."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import unique_copy, upload_file, wait_terminal
from tests.stack import new_database, stack_env, start_api, start_worker, unique_id

pytestmark = pytest.mark.slow


async def test_sigkilled_worker_recovers_without_duplicates(
    database_url: str, shared_data: Path, tmp_path: Path
) -> None:
    url = new_database(database_url, "docqa_recovery")
    env = stack_env(url, tmp_path / "data", DOCQA_EMBEDDING_BATCH_SIZE="4")
    api, base_url = start_api(env, tmp_path, "recovery-api")
    first = start_worker(env, tmp_path, "doomed-worker")
    second = None
    try:
        pdf = unique_copy(shared_data / "pdfs" / "pdfjs_test" / "tracemonkey.pdf", tmp_path)
        doc_id = unique_id("kill")
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            assert (await upload_file(client, pdf, document_id=doc_id)).status_code == 200
            # Kill the worker once some, but not all, chunks are stored.
            deadline = time.monotonic() + 120
            while True:
                doc = (await client.get(f"/api/v1/documents/{doc_id}")).json()
                if doc["chunk_count"] > 0 and doc["status"] == "processing":
                    break
                assert doc["status"] != "ready", "finished before it could be killed"
                assert time.monotonic() < deadline, doc
                await asyncio.sleep(0.05)
            first.kill()
            killed_at = doc["chunk_count"]
            await asyncio.sleep(1)
            stuck = (await client.get(f"/api/v1/documents/{doc_id}")).json()
            assert stuck["status"] == "processing"
            # The API kept serving throughout.
            assert (await client.get("/healthz")).status_code == 200
            second = start_worker(env, tmp_path, "rescue-worker")
            doc = await wait_terminal(client, doc_id, timeout=180)
        assert doc["status"] == "ready", doc
        assert doc["chunk_count"] > killed_at
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM chunks c "
                "JOIN documents d ON d.pk = c.document_pk WHERE d.document_id = %s",
                (doc_id,),
            ).fetchone()
            pages = conn.execute(
                "SELECT count(*), count(DISTINCT page_no) FROM pages p "
                "JOIN documents d ON d.pk = p.document_pk WHERE d.document_id = %s",
                (doc_id,),
            ).fetchone()
            attempts = conn.execute(
                "SELECT attempts FROM procrastinate_jobs ORDER BY id DESC LIMIT 1"
            ).fetchone()
        assert rows is not None
        total, distinct, low, high = rows
        assert total == distinct == doc["chunk_count"], "no chunk appears twice"
        assert (low, high) == (0, total - 1), "no chunk is missing"
        # Written once reading ended, while later batches were embedded: the retry replaced
        # them rather than adding a second copy.
        assert pages == (doc["page_count"], doc["page_count"]), pages
        # The job row was deleted on success, or shows the retry.
        assert attempts is None or attempts[0] >= 1
        assert "retrying stalled job" in second.log_path.read_text()
    finally:
        for proc in (second, first, api):
            if proc is not None:
                proc.stop()


@pytest.mark.parametrize(("status", "marked"), [("processing", True), ("ready", False)])
async def test_a_late_failure_never_undoes_a_ready_document(
    database_url: str, tmp_path: Path, status: str, marked: bool
) -> None:
    """A second run of a document's job (retried after a database outage while the first still
    ran) can fail after the first finished the document: the document stays ready."""
    import uuid

    from docqa.db.engine import open_database
    from docqa.ingest.pipeline import mark_failed
    from docqa.settings import Settings

    url = new_database(database_url, "docqa_late_failure")
    with psycopg.connect(url) as conn:
        pk = conn.execute(
            """INSERT INTO documents (owner_id, document_id, filename, content_type, kind,
                   size_bytes, sha256, blob_key, status)
               VALUES ('local', %s, 'a.pdf', 'application/pdf', 'pdf', 1, %s, 'none', %s)
               RETURNING pk""",
            (unique_id("late"), uuid.uuid4().hex * 2, status),
        ).fetchone()[0]
    db = await open_database(Settings(database_url=url, data_dir=tmp_path), pool_size=1)
    try:
        assert await mark_failed(db, pk, "processing_error", "It failed.") is marked
    finally:
        await db.close()
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT status FROM documents WHERE pk = %s", (pk,)).fetchone()
    assert row[0] == ("failed" if marked else "ready")
