"""The nginx gateway (deploy/nginx.conf, run by a real nginx) in front of both API processes:
upload, the 413s, progress events, answers streamed token by token, request ids."""

from __future__ import annotations

import json
import re
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from docqa.client import sse_events
from tests.cluster import METRICS_AUTH, Cluster, wait_ready
from tests.conftest import unique_copy
from tests.gateway import Nginx
from tests.stack import unique_id

MB = 1024 * 1024


def _api_logs(cluster: Cluster) -> str:
    logs = cluster.logs()
    return logs["api-1"] + logs["api-2"]


def _request_lines(
    cluster: Cluster, request_id: str, wait_s: float = 3.0
) -> list[dict[str, object]]:
    """The API's log lines for one request (written just after its response: wait a little)."""
    deadline = time.monotonic() + wait_s
    while True:
        lines = []
        for line in _api_logs(cluster).splitlines():
            if request_id in line and line.startswith("{"):
                entry = json.loads(line)
                if entry.get("msg") == "request" and entry.get("request_id") == request_id:
                    lines.append(entry)
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


async def test_upload_events_and_ask_through_the_gateway(
    cluster: Cluster, gateway: Nginx, shared_data: Path, tmp_path: Path
) -> None:
    key = await cluster.new_key("gateway-flow")
    pdf = unique_copy(shared_data / "pdfs" / "pdfminer_samples" / "naacl06-shinyama.pdf", tmp_path)
    async with cluster.client(gateway.url, key.secret) as client:
        with pdf.open("rb") as f:
            files = {"file": ("paper.pdf", f, "application/pdf")}
            async with client.stream("POST", "/api/v1/upload", files=files) as response:
                assert response.status_code == 200
                await response.aread()
        assert response.headers["content-type"] == "application/json"
        doc_id = response.json()["document_id"]
        started = time.monotonic()
        seen: list[tuple[float, str, dict[str, object]]] = []
        async with client.stream("GET", f"/api/v1/documents/{doc_id}/events") as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            async for event, data in sse_events(events):
                seen.append((time.monotonic() - started, event, json.loads(data)))
        names = [name for _, name, _ in seen]
        assert names[-1] == "ready"
        assert set(names[:-1]) == {"progress"}
        # Events are not held back by the gateway: the first came at once, long before the end.
        assert seen[0][0] < 1.5
        assert seen[0][2]["status"] != "ready"
        assert seen[-1][0] - seen[0][0] > 0.5
        async with client.stream(
            "POST",
            "/api/v1/ask",
            json={"question": "What is this paper about?", "document_id": doc_id},
        ) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/event-stream")
            kinds = [event async for event, _ in sse_events(answer)]
        assert kinds[0] == "sources"
        assert "message" in kinds
        assert kinds[-1] == "done"


def _assert_file_too_large(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, str] = response.json()
    assert "File too large" in body["detail"]
    assert body["code"] == "file_too_large"
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_the_seed_413_through_the_gateway_is_json_from_nginx(
    cluster: Cluster, gateway: Nginx
) -> None:
    key = await cluster.new_key("gateway-413")
    request_id = f"gw413-{uuid.uuid4().hex}"
    async with cluster.client(gateway.url, key.secret) as client:
        files = {"file": ("large.pdf", b"x" * (60 * MB), "application/pdf")}
        response = await client.post(
            "/api/v1/upload", files=files, headers={"x-request-id": request_id}
        )
    body = _assert_file_too_large(response)
    assert body["request_id"] == request_id
    assert "File too large" in response.text  # the seed's own check
    # nginx answered from Content-Length alone: the body never reached an API process.
    assert _request_lines(cluster, request_id) == []
    assert request_id in gateway.logs()


async def test_413_without_content_length_through_the_gateway(
    cluster: Cluster, gateway: Nginx
) -> None:
    key = await cluster.new_key("gateway-413-chunked")
    boundary = "gw-boundary"

    async def body() -> AsyncIterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="large.pdf"\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4\n'
        ).encode()
        for _ in range(60):
            yield b"x" * MB
        yield f"\r\n--{boundary}--\r\n".encode()

    async with cluster.client(gateway.url, key.secret) as client:
        response = await client.post(
            "/api/v1/upload",
            content=body(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
    assert "content-length" not in response.request.headers
    _assert_file_too_large(response)


async def test_413_from_the_api_passes_through_the_gateway(
    cluster: Cluster, gateway: Nginx
) -> None:
    """Under nginx's 51 MB but over what the API allows: the API's own JSON comes through."""
    key = await cluster.new_key("gateway-413-api")
    request_id = f"api413-{uuid.uuid4().hex}"
    async with cluster.client(gateway.url, key.secret) as client:
        files = {
            "file": ("big.pdf", b"%PDF-1.4\n" + b"x" * (50 * MB + 512 * 1024), "application/pdf")
        }
        response = await client.post(
            "/api/v1/upload", files=files, headers={"x-request-id": request_id}
        )
    _assert_file_too_large(response)
    [line] = _request_lines(cluster, request_id)
    assert line["status"] == 413
    assert line["route"] == "/api/v1/upload"


async def test_request_ids_cross_the_gateway(cluster: Cluster, gateway: Nginx) -> None:
    key = await cluster.new_key("gateway-ids")
    async with cluster.client(gateway.url, key.secret) as client:
        chosen = f"client-{uuid.uuid4().hex}"
        response = await client.get("/api/v1/documents", headers={"x-request-id": chosen})
        assert response.status_code == 200
        assert response.headers.get_list("x-request-id") == [chosen]
        assert len(_request_lines(cluster, chosen)) == 1
        # None sent: nginx makes one, and the API logs under that same id.
        generated = (await client.get("/api/v1/documents")).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        assert len(_request_lines(cluster, generated)) == 1
        # One that could break a log line or a JSON body is replaced, not passed on.
        unsafe = await client.get("/api/v1/documents", headers={"x-request-id": 'a"b c'})
        assert re.fullmatch(r"[0-9a-f]{32}", unsafe.headers["x-request-id"])


async def test_metrics_stay_inside_the_network(cluster: Cluster, gateway: Nginx) -> None:
    async with httpx.AsyncClient() as client:
        outside = await client.get(f"{gateway.url}/metrics")
        assert outside.status_code == 404
        assert outside.json()["code"] == "not_found"
        inside = await client.get(f"{cluster.apis[0]}/metrics", headers=METRICS_AUTH)
        assert inside.status_code == 200
        assert "docqa_http_request_duration_seconds" in inside.text


@dataclass
class Timing:
    first_delta_s: float = 0.0
    total_s: float = 0.0
    arrivals: list[float] = field(default_factory=list)


async def _timed_answer(base_url: str, key: str, question: str) -> Timing:
    timing = Timing()
    async with httpx.AsyncClient(
        base_url=base_url, headers={"authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        started = time.perf_counter()
        async with client.stream("POST", "/api/v1/ask", json={"question": question}) as response:
            assert response.status_code == 200
            async for event, _ in sse_events(response):
                if event == "message":
                    timing.arrivals.append(time.perf_counter() - started)
        timing.total_s = time.perf_counter() - started
    timing.first_delta_s = timing.arrivals[0]
    return timing


async def test_first_delta_arrives_through_the_gateway_as_soon_as_directly(
    cluster: Cluster, gateway: Nginx, tmp_path: Path
) -> None:
    direct_key = await cluster.new_key("timing-direct")
    # The same owner, a second key: each path stays under the per-key ask limit.
    gateway_key = await cluster.new_key("timing-gateway", owner=direct_key.owner_id)
    word = unique_id("saffron").replace("-", "")
    path = tmp_path / "notes.md"
    path.write_text(f"# Notes\n\nThe {word} crates arrive on Tuesdays at the east gate.\n")
    async with cluster.client(cluster.apis[0], direct_key.secret) as client:
        with path.open("rb") as f:
            response = await client.post(
                "/api/v1/upload", files={"file": (path.name, f, "text/markdown")}
            )
        await wait_ready(client, response.json()["document_id"])
    for api in cluster.apis:  # warm both processes (query embedding, model connection)
        await _timed_answer(api, direct_key.secret, "Which gate?")
    rounds = 3
    # A slow model: 12 tokens, 0.25 s apart. Buffered anywhere, the deltas would bunch up.
    tokens = [f"tok{i} " for i in range(12)]
    await cluster.mock_llm.script(
        {"match": word, "tokens": tokens, "delay_s": 0.25, "times": 2 * rounds}
    )
    question = f"When do the {word} crates arrive?"
    direct: list[Timing] = []
    via: list[Timing] = []
    for i in range(rounds):
        direct.append(await _timed_answer(cluster.apis[i % 2], direct_key.secret, question))
        via.append(await _timed_answer(gateway.url, gateway_key.secret, question))

    def ms(timings: list[Timing]) -> list[int]:
        return [round(t.first_delta_s * 1000) for t in timings]

    totals = [[round(t.total_s, 2) for t in ts] for ts in (direct, via)]
    print(
        f"\nfirst delta (ms): direct {ms(direct)}, through nginx {ms(via)}; "
        f"whole answer (s): direct {totals[0]}, through nginx {totals[1]}"
    )
    assert statistics.median(ms(via)) - statistics.median(ms(direct)) < 250
    for timing in via:
        assert len(timing.arrivals) == len(tokens)
        assert timing.first_delta_s < timing.total_s / 3
        # Token by token: the deltas arrive spread out, as the model sends them.
        gaps = [b - a for a, b in zip(timing.arrivals, timing.arrivals[1:], strict=False)]
        assert min(gaps) > 0.12, gaps
