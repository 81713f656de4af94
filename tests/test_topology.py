"""The scaled-out shape as plain processes: two API processes and two workers on one database,
behind nginx. Upload through one API, watch through the other, ask through either, and the jobs
are spread over both workers. Then: nothing secret, and no document text, in any log."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import psycopg
import pytest

from docqa.client import sse_events
from tests.cluster import WORKERS, Cluster, wait_ready
from tests.conftest import unique_copy
from tests.s3server import SECRET_KEY as S3_SECRET_KEY
from tests.s3server import S3Server


@pytest.fixture(params=["local", "s3"])
def scaled_out(request: pytest.FixtureRequest) -> Cluster:
    """The cluster with its blobs in a directory every process shares, then in an S3 bucket."""
    cluster: Cluster = request.getfixturevalue(
        "cluster" if request.param == "local" else "s3_cluster"
    )
    return cluster


def _ready_lines(log: str) -> list[str]:
    """The document pks a worker's log says it finished."""
    pks = []
    for line in log.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("msg") == "document ready":
                pks.append(str(entry["document_pk"]))
    return pks


async def _watch(cluster: Cluster, key: str, document_id: str) -> list[str]:
    async with (
        cluster.client(cluster.apis[1], key) as client,
        client.stream("GET", f"/api/v1/documents/{document_id}/events") as response,
    ):
        assert response.status_code == 200
        return [event async for event, _ in sse_events(response)]


async def _ask(cluster: Cluster, base_url: str, key: str, ids: list[str]) -> set[str]:
    payload = {"question": "What does this document describe?", "document_ids": ids}
    async with (
        cluster.client(base_url, key) as client,
        client.stream("POST", "/api/v1/ask", json=payload) as response,
    ):
        assert response.status_code == 200, await response.aread()
        events = [(event, data) async for event, data in sse_events(response)]
    assert events[-1][0] == "done"
    assert json.loads(events[-1][1])["finish_reason"] == "stop"
    sources = json.loads(next(data for event, data in events if event == "sources"))
    return {s["document_id"] for s in sources}


async def test_two_apis_and_two_workers_share_one_database(
    scaled_out: Cluster, sample_pdf: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    cluster = scaled_out
    key = await cluster.new_key("topology")
    pdfs = [unique_copy(sample_pdf, tmp_path) for _ in range(6)]
    ids: list[str] = []
    async with cluster.client(cluster.apis[0], key.secret) as client:
        for pdf in pdfs:
            with pdf.open("rb") as f:
                response = await client.post(
                    "/api/v1/upload", files={"file": (pdf.name, f, "application/pdf")}
                )
            assert response.status_code == 200, response.text
            ids.append(response.json()["document_id"])
    # Uploaded through API 1, watched live through API 2 (its own LISTEN connection).
    watched = await asyncio.gather(*(_watch(cluster, key.secret, i) for i in ids))
    for events in watched:
        assert events[-1] == "ready", events
    # Asked through either API, and through the gateway that spreads requests over both.
    bases = [*cluster.apis, *([cluster.gateway.url] if cluster.gateway else [])]
    for i, base in enumerate(bases):
        chosen = ids[2 * i : 2 * i + 2]
        assert await _ask(cluster, base, key.secret, chosen) <= set(chosen)
    with psycopg.connect(cluster.database_url) as conn:
        rows = conn.execute(
            "SELECT pk::text, blob_key FROM documents"
            " WHERE owner_id = %s AND document_id = ANY(%s)",
            (key.owner_id, ids),
        ).fetchall()
    pks = {pk for (pk, _) in rows}
    if cluster.bucket is not None:
        # The processes share no directory: every file went through the bucket.
        s3: S3Server = request.getfixturevalue("s3_server")
        assert {f"blobs/{blob_key}" for (_, blob_key) in rows} <= set(s3.keys(cluster.bucket))
        assert not list(cluster.data_dir.glob("*/blobs/*/*"))
        # and the workers' downloads for extraction were removed after it.
        assert list(cluster.data_dir.glob("worker-*/scratch"))
        assert not list(cluster.data_dir.glob("worker-*/scratch/*"))
        for name, text in cluster.logs().items():
            assert S3_SECRET_KEY not in text, f"{name} logged the S3 secret key"
    assert len(pks) == len(ids)
    logs = cluster.logs()
    done_by = {name: set(_ready_lines(logs[name])) & pks for name in WORKERS}
    print(f"\njobs per worker: { {name: len(done) for name, done in done_by.items()} }")
    assert all(done_by[name] for name in WORKERS), done_by
    assert set.union(*done_by.values()) == pks
    assert not set.intersection(*done_by.values()), "no document is processed twice"


async def test_logs_hold_no_secrets_and_no_document_text(cluster: Cluster, tmp_path: Path) -> None:
    key = await cluster.new_key("leak-check")
    secret_fact = f"vault-code-{uuid.uuid4().hex}"
    path = tmp_path / "vault.md"
    path.write_text(f"# Vault\n\nThe vault code is {secret_fact}, written on the blue card.\n")
    base = cluster.gateway.url if cluster.gateway else cluster.apis[0]
    async with cluster.client(base, key.secret) as client:
        with path.open("rb") as f:
            response = await client.post(
                "/api/v1/upload",
                files={"file": (path.name, f, "text/markdown")},
                data={"metadata": json.dumps({"note": secret_fact})},
            )
        assert response.status_code == 200
        doc_id = response.json()["document_id"]
        await wait_ready(client, doc_id)
        question = {"question": f"Is the vault code {secret_fact}?", "document_id": doc_id}
        async with client.stream("POST", "/api/v1/ask", json=question) as answer:
            assert answer.status_code == 200
            await answer.aread()
        # Failed requests too: a wrong key, and a key in the query string.
        await client.get("/api/v1/documents", headers={"authorization": f"Bearer {key.secret}x"})
        await client.get(f"/api/v1/documents?api_key={key.secret}")
    await asyncio.sleep(0.5)  # the last request lines are written after their responses
    logs = cluster.logs()
    assert set(logs) >= {"api-1", "api-2", *WORKERS}
    for name, text in logs.items():
        assert text, f"{name} logged nothing"
        assert cluster.db_password not in text, f"{name} logged the database password"
        for secret in cluster.keys:
            assert secret not in text, f"{name} logged an API key"
        assert secret_fact not in text, f"{name} logged document or question text"
    # The logs are still useful: JSON lines with request ids, and the key id (not the key).
    requests = _requests(logs["api-1"]) + _requests(logs["api-2"])
    assert requests
    assert all(e.get("request_id") for e in requests)
    assert any(e.get("key_id") == key.id for e in requests)


def _requests(log: str) -> list[dict[str, object]]:
    entries = (json.loads(line) for line in log.splitlines() if line.startswith("{"))
    return [e for e in entries if e.get("msg") == "request"]
