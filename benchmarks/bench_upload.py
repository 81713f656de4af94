"""Upload speed and memory, the early 413, and how fast a worker picks up a new job.

Baselines, measured in the same run:
- upload: the same bytes sent over loopback to an in-process sink that only reads them;
- early 413: a GET /healthz round trip on the same kind of raw connection;
- job pick-up: nothing to compare inside docqa; procrastinate's fallback poll is 5 s.

Run: .venv/bin/python benchmarks/bench_upload.py
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import bench_stack, summary

MB = 1024 * 1024


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            rss = sum(p.memory_info().rss for p in [self.proc, *self.proc.children(True)])
            self.peak = max(self.peak, rss)
            time.sleep(0.005)


async def settle(pid: int, quiet_s: float = 3.0, timeout_s: float = 60.0) -> None:
    """Wait until the process's RSS has not moved by more than 1 MB for `quiet_s`."""
    proc = psutil.Process(pid)
    deadline = time.monotonic() + timeout_s
    last, since = proc.memory_info().rss, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
        await asyncio.sleep(0.25)
        rss = proc.memory_info().rss
        if abs(rss - last) > MB:
            last, since = rss, time.monotonic()


def multipart(payload: bytes, name: str) -> tuple[bytes, str]:
    boundary = "benchboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/pdf\r\n\r\n"
    ).encode()
    return head + payload + f"\r\n--{boundary}--\r\n".encode(), boundary


async def sink_baseline(body: bytes) -> float:
    """Seconds to push `body` through a loopback socket into a reader that discards it."""
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        remaining = len(body)
        while remaining:
            remaining -= len(await reader.read(1 << 20))
        writer.write(b"ok")
        await writer.drain()
        writer.close()
        done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(body)
    await writer.drain()
    await reader.read(2)
    elapsed = time.perf_counter() - t0
    writer.close()
    server.close()
    return elapsed


def first_response_ms(port: int, request_head: bytes, body_prefix: bytes = b"") -> float:
    with socket.create_connection(("127.0.0.1", port)) as s:
        t0 = time.perf_counter()
        s.sendall(request_head + body_prefix)
        data = s.recv(65536)
        elapsed = (time.perf_counter() - t0) * 1000
    assert data.startswith(b"HTTP/1.1"), data[:50]
    return elapsed


async def main() -> None:
    payload = b"%PDF-1.7\n" + bytes(50 * MB - 9 - 400)
    body, boundary = multipart(payload, "big.pdf")
    with bench_stack(worker=True) as stack:
        port = int(stack.url.rsplit(":", 1)[1])
        assert stack.api.popen is not None
        # The API loads the embedding model in the background after it starts (+200 MB); wait
        # for its memory to settle so that the figure below is the upload's own.
        await settle(stack.api.popen.pid)
        async with httpx.AsyncClient(base_url=stack.url, timeout=120) as client:
            # Warm up the connection pool and the server's code paths.
            await client.post(
                "/api/v1/upload", files={"file": ("w.txt", b"warm up text", "text/plain")}
            )
            upload_s, baseline_s, growth = [], [], []
            for i in range(5):
                baseline_s.append(await sink_baseline(body))
                unique = body.replace(b"%PDF-1.7\n", f"%PDF-1.{i}\n".encode(), 1)
                sampler = RssSampler(stack.api.popen.pid)
                before = sum(
                    p.memory_info().rss for p in [sampler.proc, *sampler.proc.children(True)]
                )
                sampler.start()
                t0 = time.perf_counter()
                response = await client.post(
                    "/api/v1/upload",
                    content=unique,
                    headers={"content-type": f"multipart/form-data; boundary={boundary}"},
                )
                upload_s.append(time.perf_counter() - t0)
                sampler.running = False
                sampler.join()
                assert response.status_code == 200, response.text
                growth.append((sampler.peak - before) / MB)
        print("== 50 MB upload over loopback (5 runs) ==")
        print(f"docqa upload      s: {summary(upload_s)}")
        print(f"baseline raw sink s: {summary(baseline_s)}")
        print(f"server RSS growth MB: {summary(growth)}")

        too_big = 60 * MB
        head = (
            f"POST /api/v1/upload HTTP/1.1\r\nHost: x\r\nContent-Length: {too_big}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
        ).encode()
        early = [first_response_ms(port, head, body[:4096]) for _ in range(30)]
        health = [
            first_response_ms(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") for _ in range(30)
        ]
        print("== 60 MB upload with Content-Length: time to the 413 (ms, 30 runs) ==")
        print(f"413 before body   ms: {summary(early)}")
        print(f"baseline /healthz ms: {summary(health)}")

        # The upload runs above queued jobs of their own; pick-up is measured on an idle queue.
        await wait_idle(stack.url)
        pickup = await measure_pickup(stack.url)
        print("== job pick-up: upload response -> worker starts processing (ms, 20 runs) ==")
        print(f"pick-up           ms: {summary(pickup)}")
        print("baseline          ms: 5000 (procrastinate's poll interval without LISTEN/NOTIFY)")


async def wait_idle(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for status in ("queued", "processing"):
            while (await client.get("/api/v1/documents", params={"status": status})).json()[
                "documents"
            ]:
                await asyncio.sleep(0.2)


async def measure_pickup(url: str) -> list[float]:
    """Time from the upload's response to the first `processing` event on its stream."""
    out = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for i in range(20):
            # The stream starts with the current state, so a pick-up that beats the stream's
            # opening is still seen; the figure is then an upper bound.
            response = await client.post(
                "/api/v1/upload",
                files={"file": (f"p{i}.txt", f"pick-up probe {i} {time.time()}", "text/plain")},
            )
            t_uploaded = time.perf_counter()
            doc_id = response.json()["document_id"]
            async with client.stream("GET", f"/api/v1/documents/{doc_id}/events") as events:
                async for line in events.aiter_lines():
                    if line.startswith("data:"):
                        status = json.loads(line[5:])["status"]
                        if status != "queued":
                            out.append((time.perf_counter() - t_uploaded) * 1000)
                            break
            await asyncio.sleep(0.3)  # let the worker finish the tiny job
    return out


if __name__ == "__main__":
    asyncio.run(main())
