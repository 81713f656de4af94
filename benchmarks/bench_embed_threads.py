"""Query embedding latency: the model on its own thread against calls from many threads, and
bf16 weights against fp32.

PyTorch's CPU kernels keep a team of OpenMP threads per calling thread, and each team spins for a
while after a call. `LocalEmbedder` runs every forward pass on a lane of its own, one core each,
which keeps no team. The baseline calls the same model the way a plain
`asyncio.to_thread(model.encode, ...)` would, from whichever executor thread is free, on every
core. Once several threads have called the model their teams stay, so the order is fixed:
docqa's lanes first, the baseline after, in the same process.

Run: .venv/bin/python benchmarks/bench_embed_threads.py [--queries 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import cpu_note, pct
from docqa.ingest.embed import LocalEmbedder, cpu_supports_bf16

WARMUP = 10


def questions(n: int) -> list[str]:
    subjects = ["revenue growth", "operating income", "the board", "net debt", "risk factors"]
    return [f"What does the report say about {subjects[i % 5]} in {2000 + i}?" for i in range(n)]


async def timed(call: Callable[[str], Awaitable[object]], qs: list[str]) -> list[float]:
    out: list[float] = []
    for i, q in enumerate(qs):
        started = time.perf_counter()
        await call(q)
        if i >= WARMUP:
            out.append((time.perf_counter() - started) * 1000)
    return out


def report(name: str, values: list[float]) -> None:
    print(f"  {name:<44} p50 {statistics.median(values):6.2f} ms   p99 {pct(values, 99):6.2f} ms")


async def main(n: int) -> None:
    qs = questions(n + WARMUP)
    embedder = LocalEmbedder()
    fp32 = LocalEmbedder("fp32")
    print(
        f"bench_embed_threads: {n} queries, {cpu_note()}, bf16 CPU: {cpu_supports_bf16()}, "
        f"docqa's precision: {embedder.precision}, {embedder.lanes} one-core lanes"
    )

    def on_lane(model: LocalEmbedder) -> Callable[[str], Awaitable[object]]:
        async def call(q: str) -> object:
            return await asyncio.to_thread(model.embed_query, q)

        return call

    def on_any_thread(threads: int) -> Callable[[str], Awaitable[object]]:
        def encode(q: str) -> object:
            torch.set_num_threads(threads)
            return embedder._encode([q])

        async def call(q: str) -> object:
            return await asyncio.to_thread(encode, q)

        return call

    report("a lane, one core (docqa)", await timed(on_lane(embedder), qs))
    report("a lane, fp32 weights, one core", await timed(on_lane(fp32), qs))
    # Baseline: the same pass on whichever executor thread asyncio hands out, on every core. It
    # leaves spinning thread teams behind, so it runs after the others, and the last line shows
    # what it leaves behind for docqa's lanes.
    report(
        f"baseline: any executor thread, {os.cpu_count()} cores",
        await timed(on_any_thread(os.cpu_count() or 1), qs),
    )
    report("a lane, one core, after the baseline", await timed(on_lane(embedder), qs))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=200)
    asyncio.run(main(parser.parse_args().queries))
