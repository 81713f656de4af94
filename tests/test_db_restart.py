"""PostgreSQL stops and starts again under a running API and worker (a PostgreSQL of this
test's own, not the session's). While it is away every API route answers 503
`database_unavailable` with Retry-After and open event streams get an `error` event; once it is
back, upload, events, ask and job pick-up through LISTEN/NOTIFY recover without restarting
docqa, and the document that was being processed ends ready with no chunk written twice."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from docqa.client import sse_events
from docqa.db import migrate
from tests.conftest import unique_copy, upload_file, wait_terminal
from tests.stack import PrivatePostgres, stack_env, start_api, start_worker, unique_id

pytestmark = pytest.mark.slow

PICKUP_TARGET_MS = 200


async def pickup_ms(client: httpx.AsyncClient, label: str) -> float:
    """Upload a tiny file; time from the upload's response to the first non-queued event."""
    response = await client.post(
        "/api/v1/upload",
        files={"file": (f"{label}.txt", f"pick-up probe {label} {time.time()}", "text/plain")},
    )
    assert response.status_code == 200, response.text
    uploaded = time.perf_counter()
    doc_id = response.json()["document_id"]
    async with client.stream("GET", f"/api/v1/documents/{doc_id}/events") as events:
        async for event, data in sse_events(events):
            if event != "error" and json.loads(data)["status"] != "queued":
                elapsed = (time.perf_counter() - uploaded) * 1000
                break
        else:
            raise AssertionError(f"{doc_id}: the stream ended before pick-up")
    await wait_terminal(client, doc_id, timeout=60)
    return elapsed


async def pickups(client: httpx.AsyncClient, label: str, n: int = 4) -> list[float]:
    out = []
    for i in range(n):
        out.append(await pickup_ms(client, f"{label}-{i}"))
        await asyncio.sleep(0.2)
    return out


async def collect(client: httpx.AsyncClient, doc_id: str, into: list[tuple[str, Any]]) -> None:
    async with client.stream("GET", f"/api/v1/documents/{doc_id}/events") as events:
        async for event, data in sse_events(events):
            into.append((event, json.loads(data)))


async def ask(client: httpx.AsyncClient, question: str, doc_id: str) -> list[str]:
    body = {"question": question, "document_id": doc_id}
    async with client.stream("POST", "/api/v1/ask", json=body) as response:
        assert response.status_code == 200, await response.aread()
        return [event async for event, _ in sse_events(response)]


def assert_unavailable(response: httpx.Response, what: str) -> None:
    assert response.status_code == 503, (what, response.status_code, response.text)
    body = response.json()
    assert body["code"] == "database_unavailable", (what, body)
    assert body["detail"], (what, body)
    assert body["request_id"], (what, body)
    assert int(response.headers["retry-after"]) > 0, what


async def test_database_restart_under_running_api_and_worker(
    shared_data: Path, tmp_path: Path
) -> None:
    pg = PrivatePostgres(tmp_path / "pg")
    migrate.upgrade(pg.url)
    env = stack_env(pg.url, tmp_path / "data", DOCQA_EMBEDDING_BATCH_SIZE="4")
    worker = start_worker(env, tmp_path, "restart-worker")
    api = None
    try:
        api, base_url = start_api(env, tmp_path, "restart-api")
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            before = await pickups(client, "before")
            print(f"pick-up before the restart, ms: {[round(x, 1) for x in before]}")

            # A document in the middle of processing when the database goes away.
            pdf = unique_copy(shared_data / "pdfs" / "pdfjs_test" / "tracemonkey.pdf", tmp_path)
            doc_id = unique_id("restart")
            assert (await upload_file(client, pdf, document_id=doc_id)).status_code == 200
            deadline = time.monotonic() + 120
            while True:
                doc = (await client.get(f"/api/v1/documents/{doc_id}")).json()
                if doc["status"] == "processing" and doc["chunk_count"] > 0:
                    break
                assert doc["status"] != "ready", "finished before the database went away"
                assert time.monotonic() < deadline, doc
                await asyncio.sleep(0.05)
            events: list[tuple[str, Any]] = []
            watcher = asyncio.create_task(collect(client, doc_id, events))
            await asyncio.sleep(0.5)

            pg.stop()
            down_at = time.monotonic()
            await asyncio.wait_for(watcher, 30)
            assert events[-1][0] == "error", events[-3:]
            assert events[-1][1]["code"] == "database_unavailable", events[-1]

            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 503
            assert_unavailable(await client.get("/api/v1/documents"), "list")
            assert_unavailable(await client.get(f"/api/v1/documents/{doc_id}"), "get")
            assert_unavailable(await client.get(f"/api/v1/documents/{doc_id}/events"), "events")
            assert_unavailable(await client.get(f"/api/v1/documents/{doc_id}/file"), "file")
            assert_unavailable(await client.delete(f"/api/v1/documents/{doc_id}"), "delete")
            gone = await client.post(
                "/api/v1/upload", files={"file": ("down.txt", b"uploaded while down", "text/plain")}
            )
            assert_unavailable(gone, "upload")
            asked = await client.post("/api/v1/ask", json={"question": "what is tracing?"})
            assert_unavailable(asked, "ask")
            # Nothing is left of the refused upload.
            blobs = tmp_path / "data" / "blobs" / "tmp"
            assert not list(blobs.iterdir()), list(blobs.iterdir())

            await asyncio.sleep(max(0.0, 3 - (time.monotonic() - down_at)))
            pg.start()
            deadline = time.monotonic() + 60
            while (await client.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, "the API never saw the database again"
                await asyncio.sleep(0.2)

            # The document that was interrupted is retried and ends ready, each chunk once.
            doc = await wait_terminal(client, doc_id, timeout=240)
            assert doc["status"] == "ready", doc
            with psycopg.connect(pg.url) as conn:
                row = conn.execute(
                    "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM chunks c "
                    "JOIN documents d ON d.pk = c.document_pk WHERE d.document_id = %s",
                    (doc_id,),
                ).fetchone()
            assert row is not None
            total, distinct, low, high = row
            assert total == distinct == doc["chunk_count"], "no chunk appears twice"
            assert (low, high) == (0, total - 1), "no chunk is missing"

            # Pick-up is back on LISTEN/NOTIFY (the worker's and the progress hub's).
            after = await pickups(client, "after")
            print(f"pick-up after the restart, ms: {[round(x, 1) for x in after]}")
            assert max(after) < PICKUP_TARGET_MS, after
            # Events, ask and upload work again without restarting anything.
            kinds = await ask(client, "What does tracing record?", doc_id)
            assert kinds[0] == "sources", kinds
            assert kinds[-1] == "done", kinds
            assert "error" not in kinds, kinds
            assert worker.popen is not None
            assert worker.popen.poll() is None, "the worker is still up"
            # ...and still sending heartbeats (a worker without them has its jobs retried).
            with psycopg.connect(pg.url) as conn:
                beat = conn.execute(
                    "SELECT extract(epoch FROM now() - max(last_heartbeat)) "
                    "FROM procrastinate_workers"
                ).fetchone()
            assert beat is not None
            assert beat[0] is not None
            assert float(beat[0]) < 5, beat
    finally:
        for proc in (api, worker):
            if proc is not None:
                proc.stop()
        pg.close()
