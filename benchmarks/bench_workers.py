"""More workers, faster batches? The same real PDFs ingested by one worker, then by two worker
processes each held to one core.

Each run gets a fresh PostgreSQL, an API process with no worker of its own, and its workers;
every PDF is uploaded at once, and the run is timed from the first upload until the last
document is ready. The single worker runs as `docqa worker` does by default (both cores); each of
the two is started under `taskset -c N` with `OMP_NUM_THREADS=1`, so that together they use the
same two cores without oversubscribing them. Printed: the wall time of each run, the speed-up,
the load average, and the sum of the worker stage spans (documents.timings), which say where the
time goes: on two cores the embedding model is most of the work, and it already keeps both
cores busy in one worker, so the ceiling for the model-bound part is about 1x here; what a
second process can win is the overlap of reading, writing and waiting with the model.

Run: .venv/bin/python benchmarks/bench_workers.py [--docs 20] [--env DOCQA_X=value ...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.stack import Proc, start_worker

from benchmarks.common import bench_stack, shared_file


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} CPUs"


def pdfs(count: int) -> list[Path]:
    """The `count` smallest mmlongbench PDFs (real filings, reports, papers and manuals)."""
    folder = shared_file("mmlongbench", "documents")
    return sorted(folder.glob("*.pdf"), key=lambda p: p.stat().st_size)[:count]


def pinned_worker(env: dict[str, str], log_path: Path, name: str, core: int) -> Proc:
    """`docqa worker` held to one core."""
    return Proc(
        ["worker", "--name", name],
        env | {"OMP_NUM_THREADS": "1"},
        log_path,
        launcher=("taskset", "-c", str(core)),
    )


async def ingest(url: str, files: list[Path]) -> tuple[float, list[dict[str, Any]]]:
    """Upload every file at once; the wall time until all are ready, and their documents."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        started = time.perf_counter()

        async def upload(path: Path) -> str:
            with path.open("rb") as f:
                r = await client.post(
                    "/api/v1/upload", files={"file": (path.name, f, "application/pdf")}
                )
            r.raise_for_status()
            return str(r.json()["document_id"])

        ids = set(await asyncio.gather(*(upload(p) for p in files)))
        while True:
            r = await client.get("/api/v1/documents", params={"limit": 200})
            docs = [d for d in r.json()["documents"] if d["document_id"] in ids]
            if any(d["status"] == "failed" for d in docs):
                raise SystemExit(f"a document failed: {[d for d in docs if d['error']]}")
            if len(docs) == len(ids) and all(d["status"] == "ready" for d in docs):
                return time.perf_counter() - started, docs
            await asyncio.sleep(0.2)


def stages(database_url: str) -> dict[str, float]:
    """The worker stage spans (documents.timings), summed over the documents."""
    total: dict[str, float] = {}
    with psycopg.connect(database_url) as conn:
        for (timings,) in conn.execute("SELECT timings FROM documents WHERE timings IS NOT NULL"):
            for key, value in timings.items():
                if key.endswith("_s"):
                    total[key] = total.get(key, 0.0) + float(value)
    return total


def run(
    files: list[Path], workers: int, env: dict[str, str]
) -> tuple[float, dict[str, float], int]:
    with bench_stack(worker=False, **env) as st:
        procs: list[Proc] = []
        try:
            if workers == 1:
                procs.append(start_worker(st.env, st.workdir, "w0"))
            else:
                for core in range(workers):
                    procs.append(
                        pinned_worker(st.env, st.workdir / f"w{core}.log", f"w{core}", core).start()
                    )
            wall, docs = asyncio.run(ingest(st.url, files))
            return wall, stages(st.database_url), sum(int(d["chunk_count"]) for d in docs)
        finally:
            for proc in procs:
                proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument(
        "--env", action="append", default=[], help="DOCQA_X=value for the stack (to compare)"
    )
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs at least 2 CPUs")
    files = pdfs(args.docs)
    size = sum(p.stat().st_size for p in files) / 1e6
    print(f"== {len(files)} mmlongbench PDFs ({size:.1f} MB), {load()} ==")
    results = {}
    for workers in (1, 2):
        wall, spans, chunks = run(files, workers, env)
        results[workers] = wall
        label = "1 worker (both cores)" if workers == 1 else "2 workers (one core each)"
        print(f"{label:28s} wall {wall:7.1f} s   {chunks} chunks   {load()}")
        print(
            "   stage spans summed: "
            + "  ".join(f"{k} {v:.1f}" for k, v in sorted(spans.items()) if k != "total_s")
        )
    print(f"speed-up with 2 workers: {results[1] / results[2]:.2f}x")


if __name__ == "__main__":
    main()
