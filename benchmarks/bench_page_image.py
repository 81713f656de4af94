"""Page images against the real server: the time to draw a page at width 1,000 the first time
(cold: read the file, render in the sandbox, encode, store) and to serve it again (cached: read
from the blob store), and a 304 revalidation, timed from an HTTP client on loopback.

The stack is a throwaway PostgreSQL, one API process and one worker (benchmarks/common.py);
documents are ingested first, so the worker is idle while images are timed. Wall times on a
shared machine move with its load, so the CPU the API process and its render sandboxes used
per cold image is reported too (from /proc).

Targets: cold < 150 ms, cached < 5 ms (p50).

Run: .venv/bin/python benchmarks/bench_page_image.py [--rounds 20] [--format webp|png]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import bench_stack, pct, shared_file

WIDTH = 1000


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} CPUs"


def line(name: str, ms: list[float]) -> str:
    return (
        f"{name:34s} n={len(ms):4d}  min {min(ms):7.1f}  p50 {statistics.median(ms):7.1f}  "
        f"p90 {pct(ms, 90):7.1f}  max {max(ms):7.1f} ms"
    )


def cpu_seconds(pid: int) -> float:
    """CPU of a process and of its reaped children (the fork server's sandboxes), and of the
    fork server itself and its reaped children, all under `pid`."""
    tick = os.sysconf("SC_CLK_TCK")

    def own(p: int) -> float:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        # utime, stime, cutime, cstime are fields 14-17 (1-based) of the whole line.
        return sum(int(v) for v in fields[11:15]) / tick

    total = own(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:  # a child (the fork server started from a worker thread)
            total += own(int(stat.parent.name))
    return total


async def ready(client: httpx.AsyncClient, path: Path, content_type: str) -> str:
    with path.open("rb") as f:
        response = await client.post("/api/v1/upload", files={"file": (path.name, f, content_type)})
    response.raise_for_status()
    doc_id: str = response.json()["document_id"]
    while True:
        doc = (await client.get(f"/api/v1/documents/{doc_id}")).json()
        if doc["status"] == "ready":
            return doc_id
        if doc["status"] == "failed":
            raise SystemExit(f"{path.name} failed: {doc['error']}")
        await asyncio.sleep(0.5)


async def timed_get(client: httpx.AsyncClient, url: str, **kw: Any) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    response = await client.get(url, **kw)
    elapsed = (time.perf_counter() - t0) * 1000
    return elapsed, response


async def run(url: str, api_pid: int, rounds: int, fmt: str) -> None:
    paper = shared_file("pdfs", "pdfjs_test", "tracemonkey.pdf")
    scan = shared_file("formats", "ocrmypdf", "c02-22.pdf")
    photo = shared_file("formats", "donut", "sample_image_donut_document.png")
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        docs = {
            "text PDF (tracemonkey, 14 pages)": (await ready(client, paper, "application/pdf"), 14),
            "scanned PDF (c02-22)": (await ready(client, scan, "application/pdf"), 1),
            "image (3024 x 4032 PNG)": (await ready(client, photo, "image/png"), 1),
        }
        # The first image a fresh API draws starts the sandbox's fork server: not a page's cost.
        first_id = next(iter(docs.values()))[0]
        warm = f"/api/v1/documents/{first_id}/pages/1/image"
        await client.get(warm, params={"width": 300, "format": fmt})
        print(load())
        for name, (doc_id, pages) in docs.items():
            urls = [f"/api/v1/documents/{doc_id}/pages/{p}/image" for p in range(1, pages + 1)]
            params = {"width": WIDTH, "format": fmt}
            cold: list[float] = []
            cpu0 = cpu_seconds(api_pid)
            for page_url in urls:
                ms, response = await timed_get(client, page_url, params=params)
                response.raise_for_status()
                cold.append(ms)
            cpu_ms = 1000 * (cpu_seconds(api_pid) - cpu0) / len(urls)
            size_kb = len(response.content) / 1024
            etag = response.headers["etag"]
            cached: list[float] = []
            revalidated: list[float] = []
            for _ in range(rounds):
                for page_url in urls:
                    ms, response = await timed_get(client, page_url, params=params)
                    response.raise_for_status()
                    cached.append(ms)
                ms, response = await timed_get(
                    client, urls[-1], params=params, headers={"If-None-Match": etag}
                )
                assert response.status_code == 304
                revalidated.append(ms)
            print(f"== {name}, width {WIDTH}, {fmt}, last image {size_kb:.0f} KB ==")
            print(line("cold (drawn, stored)", cold) + f"  CPU {cpu_ms:.0f} ms/image")
            print(line("cached (read from the blob store)", cached))
            print(line("304 (If-None-Match)", revalidated))
        print(load())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="cached passes over the pages")
    parser.add_argument("--format", choices=("webp", "png"), default="webp")
    args = parser.parse_args()
    with bench_stack(worker=True) as stack:
        assert stack.api.popen is not None
        asyncio.run(run(stack.url, stack.api.popen.pid, args.rounds, args.format))


if __name__ == "__main__":
    main()
