"""Query embedding latency: the model on its own thread against calls from many threads, and
bf16 weights against fp32.

PyTorch's CPU kernels keep a team of OpenMP threads per calling thread, and each team spins for a
while after a call. `LocalEmbedder` runs every forward pass on one thread of its own. The
baseline calls the same model the way a plain `asyncio.to_thread(model.encode, ...)` would, from
whichever executor thread is free. Once several threads have called the model their teams stay,
so the order is fixed: the embedder's own thread first, the baseline after, in the same process.

Run: .venv/bin/python benchmarks/bench_embed_threads.py [--queries 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cpu_note, pct
from docqa.ingest.embed import QUERY_THREADS, LocalEmbedder, cpu_supports_bf16

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
        f"docqa's precision: {embedder.precision}, {QUERY_THREADS} thread(s) per query"
    )

    def on_own_thread(model: LocalEmbedder, threads: int) -> Callable[[str], Awaitable[object]]:
        async def call(q: str) -> object:
            return await asyncio.to_thread(model._on_model_thread, [q], threads)

        return call

    def on_any_thread(threads: int) -> Callable[[str], Awaitable[object]]:
        async def call(q: str) -> object:
            return await asyncio.to_thread(embedder._encode, [q], threads)

        return call

    docqa = on_own_thread(embedder, QUERY_THREADS)
    report(f"own thread, {QUERY_THREADS} core (docqa)", await timed(docqa, qs))
    report("own thread, 2 cores", await timed(on_own_thread(embedder, 2), qs))
    report("own thread, fp32 weights, 1 core", await timed(on_own_thread(fp32, 1), qs))
    # Baseline: the same pass on whichever executor thread asyncio hands out. It leaves a
    # spinning thread team behind, so it runs after the others, and the last line shows what
    # it leaves behind for the embedder's own thread.
    report("baseline: any executor thread, 2 cores", await timed(on_any_thread(2), qs))
    report("own thread, 2 cores, after the baseline", await timed(on_own_thread(embedder, 2), qs))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=200)
    asyncio.run(main(parser.parse_args().queries))
