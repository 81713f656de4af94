"""The small-document lane (docqa.jobs): files up to DOCQA_SMALL_DOCUMENT_KB go to their own
queue, which a worker takes many at a time; larger ones to `ingest`. Checked against
procrastinate's in-memory connector: no database needed."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
from procrastinate.testing import InMemoryConnector

from docqa.jobs import _SIZE_SQL, QUEUE, SMALL_QUEUE, TASK_NAME, build_job_app, defer_processing
from docqa.settings import Settings


def _queues(connector: InMemoryConnector) -> dict[str, str]:
    return {job["args"]["document_pk"]: job["queue_name"] for job in connector.jobs.values()}


async def test_documents_go_to_the_lane_their_size_calls_for() -> None:
    app = build_job_app(Settings(small_document_kb=128), "postgresql://unused/docqa")
    small, edge, large = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with app.replace_connector(InMemoryConnector()) as app:
        connector = app.connector
        assert isinstance(connector, InMemoryConnector)
        await defer_processing(app, small, 3_000)
        await defer_processing(app, edge, 128 * 1024)
        await defer_processing(app, large, 128 * 1024 + 1)
        queues = _queues(connector)
    assert queues == {str(small): SMALL_QUEUE, str(edge): SMALL_QUEUE, str(large): QUEUE}
    assert {job["task_name"] for job in connector.jobs.values()} == {TASK_NAME}


async def test_a_zero_threshold_sends_everything_to_one_lane() -> None:
    app = build_job_app(Settings(small_document_kb=0), "postgresql://unused/docqa")
    pk = uuid.uuid4()
    with app.replace_connector(InMemoryConnector()) as app:
        await defer_processing(app, pk, 10)
        assert isinstance(app.connector, InMemoryConnector)
        assert _queues(app.connector) == {str(pk): QUEUE}


class SizedConnector(InMemoryConnector):
    """The in-memory connector, answering the size look-up from a table of its own."""

    def __init__(self, sizes: dict[uuid.UUID, int]) -> None:
        super().__init__()
        self.sizes = sizes
        self.lookups = 0

    async def execute_query_all_async(self, query: str, **arguments: Any) -> list[dict[str, Any]]:
        if query == _SIZE_SQL:
            self.lookups += 1
            pk = arguments["pk"]
            return [{"size_bytes": self.sizes[pk]}] if pk in self.sizes else []
        result: list[dict[str, Any]] = await super().execute_query_all_async(query, **arguments)
        return result


async def test_without_a_size_the_document_row_decides() -> None:
    app = build_job_app(Settings(small_document_kb=1), "postgresql://unused/docqa")
    small, large = uuid.uuid4(), uuid.uuid4()
    connector = SizedConnector({small: 1000, large: 5000})
    with app.replace_connector(connector) as app:
        await defer_processing(app, small)
        await defer_processing(app, large)
    assert connector.lookups == 2
    assert _queues(connector) == {str(small): SMALL_QUEUE, str(large): QUEUE}


async def test_status_counts_worker_processes_not_lanes(client: httpx.AsyncClient) -> None:
    """The test stack runs one worker process; it heartbeats once per lane, and is one worker."""
    deadline = time.monotonic() + 60
    while True:
        status = (await client.get("/api/v1/status")).json()
        if status["workers"]["alive"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert status["workers"]["alive"] == 1, status
    assert set(status["queue"]) == {"waiting", "running"}
