"""Per-key rate limits (429 + Retry-After), enforced the same by every API process because they
live in PostgreSQL: asks and uploads per minute, and answer streams open at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psycopg
import pytest

from docqa.client import sse_events
from docqa.db.engine import Database, open_database
from docqa.errors import RateLimited
from docqa.ratelimit import WINDOW_S, Limiter, retry_after
from docqa.settings import Settings
from tests.cluster import (
    ASKS_PER_MINUTE,
    STREAM_LEASE_S,
    UPLOADS_PER_MINUTE,
    Cluster,
    wait_ready,
)
from tests.stack import Proc, free_port, unique_id, wait_http


def _assert_429(response: httpx.Response, limit: str) -> int:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["code"] == "rate_limited"
    assert body["limit"] == limit
    assert body["request_id"] == response.headers["x-request-id"]
    seconds = int(response.headers["retry-after"])
    assert body["retry_after_s"] == seconds
    return seconds


async def test_uploads_per_minute_hold_across_both_api_processes(cluster: Cluster) -> None:
    key = await cluster.new_key("uploader")
    empty = {"file": ("empty.txt", b"", "text/plain")}  # counted, then refused as empty: cheap
    responses = []
    for i in range(UPLOADS_PER_MINUTE + 1):
        async with cluster.client(cluster.apis[i % 2], key.secret) as client:
            responses.append(await client.post("/api/v1/upload", files=empty))
    assert [r.status_code for r in responses[:-1]] == [400] * UPLOADS_PER_MINUTE
    seconds = _assert_429(responses[-1], "uploads")
    assert 1 <= seconds <= 2 * WINDOW_S
    assert "per minute" in responses[-1].json()["detail"]
    # The limit is per key: another key (same moment, same processes) is not affected.
    other = await cluster.new_key("other-uploader")
    async with cluster.client(cluster.apis[1], other.secret) as client:
        assert (await client.post("/api/v1/upload", files=empty)).status_code == 400


async def test_asks_per_minute_hold_across_both_api_processes(cluster: Cluster) -> None:
    key = await cluster.new_key("asker")
    payload = {"question": "anything?", "document_id": unique_id()}
    statuses = []
    for i in range(ASKS_PER_MINUTE):
        async with cluster.client(cluster.apis[i % 2], key.secret) as client:
            statuses.append((await client.post("/api/v1/ask", json=payload)).status_code)
    assert statuses == [404] * ASKS_PER_MINUTE
    async with cluster.client(cluster.apis[0], key.secret) as client:
        _assert_429(await client.post("/api/v1/ask", json=payload), "asks")


@contextlib.asynccontextmanager
async def _open_answer(client: httpx.AsyncClient, question: str) -> AsyncIterator[httpx.Response]:
    """An answer stream, held open after its first delta arrived."""
    async with client.stream("POST", "/api/v1/ask", json={"question": question}) as response:
        assert response.status_code == 200, await response.aread()
        events = sse_events(response)
        async for event, _ in events:
            if event == "message":
                break
        yield response


def _live_leases(cluster: Cluster, subject: str) -> int:
    with psycopg.connect(cluster.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM stream_leases WHERE subject = %s AND expires_at > now()",
            (subject,),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def _ready_document(cluster: Cluster, key: str, folder: Path, word: str) -> None:
    path = folder / f"{word}.md"
    path.write_text(f"# Notes\n\nThe {word} is stored in the north barn.\n")
    async with cluster.client(cluster.apis[0], key) as client:
        with path.open("rb") as f:
            files = {"file": (path.name, f, "text/markdown")}
            response = await client.post("/api/v1/upload", files=files)
        assert response.status_code == 200, response.text
        await wait_ready(client, response.json()["document_id"])


async def test_one_stream_at_a_time_and_the_slot_returns_when_the_client_leaves(
    cluster: Cluster, tmp_path: Path
) -> None:
    key = await cluster.new_key("streamer")
    word = unique_id("grain").replace("-", "")
    await _ready_document(cluster, key.secret, tmp_path, word)
    tokens = [f"part{i} " for i in range(40)]
    await cluster.mock_llm.script({"match": word, "tokens": tokens, "delay_s": 0.25})
    async with (
        cluster.client(cluster.apis[0], key.secret) as first,
        cluster.client(cluster.apis[1], key.secret) as second,
    ):
        async with _open_answer(first, f"Where is the {word}?"):
            assert _live_leases(cluster, key.id) == 1
            # The other process sees the same lease: a second stream for this key is refused.
            refused = await second.post("/api/v1/ask", json={"question": "Where?"})
            assert _assert_429(refused, "streams") >= 1
            assert "at a time" in refused.json()["detail"]
        # The client left mid-answer: the slot comes back now, not when the lease would lapse.
        await _until_no_leases(cluster, key.id, within_s=2)
        # Asking again the moment an answer ends works: one stream at a time, back to back.
        for _ in range(2):
            async with second.stream("POST", "/api/v1/ask", json={"question": "Where?"}) as again:
                assert again.status_code == 200
                events = [e async for e, _ in sse_events(again)]
            assert events[0] == "sources"
            assert events[-1] == "done"
    await _until_no_leases(cluster, key.id, within_s=2)  # a finished stream gives its slot back


async def _until_no_leases(cluster: Cluster, subject: str, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while _live_leases(cluster, subject) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert _live_leases(cluster, subject) == 0


async def test_a_killed_process_stops_holding_its_streams(cluster: Cluster, tmp_path: Path) -> None:
    key = await cluster.new_key("crasher")
    word = unique_id("kiln").replace("-", "")
    await _ready_document(cluster, key.secret, tmp_path, word)
    await cluster.mock_llm.script(
        {"match": word, "tokens": [f"t{i} " for i in range(80)], "delay_s": 0.25}
    )
    port = free_port()
    doomed = Proc(
        ["serve", "--host", "127.0.0.1", "--port", str(port)],
        cluster.procs["api-1"].env,
        tmp_path / "doomed-api.log",
    ).start()
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", doomed, timeout=120)
        async with cluster.client(f"http://127.0.0.1:{port}", key.secret) as client:
            with contextlib.suppress(httpx.HTTPError):
                async with _open_answer(client, f"Where is the {word}?"):
                    doomed.kill()
                    killed = time.monotonic()
    finally:
        doomed.stop()
    async with cluster.client(cluster.apis[0], key.secret) as client:
        _assert_429(await client.post("/api/v1/ask", json={"question": "x"}), "streams")
        while _live_leases(cluster, key.id):
            assert time.monotonic() - killed < STREAM_LEASE_S + 2, "the lease never lapsed"
            await asyncio.sleep(0.1)
        lapsed = time.monotonic() - killed
        assert lapsed <= STREAM_LEASE_S + 1
        async with client.stream("POST", "/api/v1/ask", json={"question": "x"}) as response:
            assert response.status_code == 200
            await response.aread()


# --- the limiter against the database, without HTTP -------------------------------------------


@pytest.fixture
async def limiter_db(cluster: Cluster) -> AsyncIterator[Database]:
    db = await open_database(Settings(database_url=cluster.database_url), pool_size=20)
    yield db
    await db.close()


def _limiter(db: Database, **settings: object) -> Limiter:
    return Limiter(db, Settings(database_url=db.url, **settings))  # type: ignore[arg-type]


async def test_racing_requests_never_exceed_the_limit(limiter_db: Database) -> None:
    limiter = _limiter(limiter_db)
    subject = unique_id("race")

    async def one() -> bool:
        try:
            await limiter.hit(subject, "uploads", 5)
        except RateLimited:
            return False
        return True

    results = await asyncio.gather(*(one() for _ in range(20)))
    assert sum(results) == 5


async def test_racing_streams_never_exceed_the_limit(limiter_db: Database) -> None:
    limiter = _limiter(limiter_db, rate_concurrent_streams=3)
    subject = unique_id("streams")
    entered: list[int] = []
    release = asyncio.Event()

    async def one(i: int) -> None:
        with contextlib.suppress(RateLimited):
            async with limiter.stream(subject):
                entered.append(i)
                await release.wait()

    tasks = [asyncio.create_task(one(i)) for i in range(10)]
    await asyncio.sleep(1.0)
    assert len(entered) == 3
    release.set()
    await asyncio.gather(*tasks)
    async with limiter.stream(subject):
        pass  # all three gave their slots back


async def test_a_held_stream_is_renewed_and_an_abandoned_one_lapses(limiter_db: Database) -> None:
    limiter = _limiter(limiter_db, rate_concurrent_streams=1, stream_lease_s=0.6)
    held, abandoned = unique_id("held"), unique_id("abandoned")
    async with limiter.stream(held):
        await asyncio.sleep(1.5)  # more than two lease lengths: renewals keep it
        with pytest.raises(RateLimited) as refused:
            async with limiter.stream(held):
                pass
        assert refused.value.response_headers()["Retry-After"].isdigit()
    # A lease nobody renews or releases (its process died) stops counting after its length.
    assert await limiter._try_acquire(abandoned, 1) is not None
    assert await limiter._try_acquire(abandoned, 1) is None
    await asyncio.sleep(0.8)
    assert await limiter._try_acquire(abandoned, 1) is not None


@pytest.mark.parametrize(
    ("prev", "curr", "limit", "elapsed", "expected"),
    [
        (0, 3, 5, 10, 0.0),  # room left
        (0, 5, 5, 10, 50 + 12),  # full: next window, once this one has faded to 4
        (10, 0, 10, 0, 6.0),  # the previous window must fade by one request
        (10, 6, 10, 30, 12.0),  # within this window, as the previous one fades
        (4, 4, 4, 59, 1 + 15),  # full at the very end of a window
    ],
)
def test_retry_after_is_when_the_next_request_fits(
    prev: int, curr: int, limit: int, elapsed: float, expected: float
) -> None:
    wait = retry_after(prev, curr, limit, elapsed, 60)
    assert wait == pytest.approx(expected)
    if wait:
        # At that moment a request fits, and a little before it does not.
        def fits(t: float) -> bool:
            at = elapsed + t
            if at < 60:
                return prev * (1 - at / 60) + curr + 1 <= limit + 1e-9
            return curr * (1 - (at - 60) / 60) + 1 <= limit + 1e-9

        assert fits(wait)
        assert not fits(wait - 0.5)


async def test_cli_ingest_waits_out_the_upload_limit(tmp_path: Path) -> None:
    from docqa.cli_client import _upload

    calls: list[float] = []

    def server(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            body = {"detail": "Too many uploads", "code": "rate_limited", "retry_after_s": 1}
            return httpx.Response(429, json=body, headers={"retry-after": "1"})
        body = {"document_id": "d1", "status": "queued", "duplicate": False}
        return httpx.Response(200, json=body)

    path = tmp_path / "a.txt"
    path.write_text("hello")
    transport = httpx.MockTransport(server)
    async with httpx.AsyncClient(transport=transport, base_url="http://docqa") as client:
        uploaded = await _upload(client, path)
    assert uploaded is not None
    assert uploaded["document_id"] == "d1"
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.95, "it waited for Retry-After"
