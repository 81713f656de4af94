"""Ingestion end to end against the model alone, measured in the same run.

Two cases, each compared with the embedding model alone encoding exactly the same chunks (same
precision, batches of `DOCQA_EMBEDDING_BATCH_SIZE`), timed before and after the end-to-end run;
the faster of the two is the baseline, so load from other processes cannot flatter the ratio.

- `large`: one real filing (3M_2018_10K.pdf by default), uploaded and watched on its events
  stream until ready. Target: end to end / model alone ≤ 1.3.
- `small`: `--docs` one-page text documents of about 250 words (5,000 by default), cut from the
  pages of real PDFs (mmlongbench, then pdfs/) into a temporary directory, uploaded at once by
  `--clients` concurrent clients, and timed from the first upload until every one is ready.
  Target: ≤ 1.5. This is what a synced folder of notes, e-mails or tickets looks like.

Both print the worker's per-stage spans (documents.timings), the machine's load average, and
the CPU time each part used: the model alone, and the worker, the API, PostgreSQL and the
uploading client during the end-to-end run. On a machine other work keeps busy, wall times swing
with that work; CPU seconds do not, and their ratio bounds what a quiet machine would show
(there, both runs keep the cores busy, so wall time follows CPU time).

Run: .venv/bin/python benchmarks/bench_ingest.py [large|small] [--docs N] [--pdf PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import psycopg
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import BenchStack, bench_stack, pct, shared_file
from docqa import formats
from docqa.formats.page import ReadContext
from docqa.ingest.chunk import ChunkSpec, chunk_pages
from docqa.ingest.embed import LocalEmbedder, Tokenizer, cpu_supports_bf16
from docqa.ingest.extract import Limits, extract_pages
from docqa.process import keep_freed_memory
from docqa.settings import Settings

WORDS_PER_DOC = 250
T = TypeVar("T")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} CPUs"


class CpuMeter:
    """CPU seconds (user + system) of processes and their children, live or already reaped."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.start = self._now()

    @staticmethod
    def _tree(proc: psutil.Process) -> float:
        try:
            t = proc.cpu_times()
            if proc.pid == os.getpid():  # this process: its children are the stack's
                return float(t.user + t.system)
            total = t.user + t.system + t.children_user + t.children_system
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    c = child.cpu_times()
                    total += c.user + c.system
            return total
        except psutil.Error:
            return 0.0

    def _now(self) -> dict[str, float]:
        return {name: self._tree(proc) for name, proc in self.procs.items()}

    def used(self) -> dict[str, float]:
        end = self._now()
        return {name: end[name] - self.start[name] for name in end}


def stack_pids(stack: BenchStack) -> dict[str, int]:
    postmaster = (stack.workdir / "pg" / "postmaster.pid").read_text().split()[0]
    assert stack.worker is not None
    assert stack.worker.popen is not None
    assert stack.api.popen is not None
    return {
        "worker": stack.worker.popen.pid,
        "api": stack.api.popen.pid,
        "postgres": int(postmaster),
        "client": os.getpid(),
    }


def cpu_report(used: dict[str, float], alone_cpu_s: float) -> None:
    total = sum(used.values())
    parts = "  ".join(f"{name} {seconds:.1f}" for name, seconds in used.items())
    print(f"CPU s during end to end: {total:.1f}  ({parts})")
    print(f"CPU s of the model alone: {alone_cpu_s:.1f}")
    print(f"CPU ratio end-to-end / model: {total / alone_cpu_s:.2f}")


def model_alone(chunks: list[ChunkSpec], precision: str, settings: Settings) -> tuple[float, float]:
    """Wall and CPU seconds for the model alone to embed `chunks`, in the batches a worker
    would fill: the faster of one batch at a time on every core, and docqa's lanes (one batch
    per core, side by side). Both are printed."""
    embedder = LocalEmbedder(precision, settings.embedding_batch_size)
    embedder.embed_query("warm up")
    texts = [c.text for c in chunks]
    size = settings.embedding_batch_size
    torch.set_num_threads(os.cpu_count() or 1)  # this thread's passes use every core
    embedder._encode(texts[:size])  # and warm its thread team up
    t0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(0, len(texts), size):
        embedder._encode(texts[i : i + size])  # on this thread, with every core
    one = time.perf_counter() - t0, time.process_time() - cpu0
    t0, cpu0 = time.perf_counter(), time.process_time()
    embedder.embed_documents(texts)
    lanes = time.perf_counter() - t0, time.process_time() - cpu0
    print(
        f"model alone: one batch at a time on {torch.get_num_threads()} cores {one[0]:.2f} s, "
        f"{embedder.lanes} one-core lanes {lanes[0]:.2f} s"
    )
    return min(one, lanes)


def timed_client(run: Coroutine[Any, Any, T]) -> T:
    """Run the bench's client. Its collector is kept off what this process already holds (the
    pages, chunks and model of the baseline): a full collection over them, triggered by the
    upload's allocations, once paused the client for 0.3 s before its first request was sent,
    which is the client's time, not the service's."""
    gc.collect()
    gc.freeze()
    try:
        return asyncio.run(run)
    finally:
        gc.unfreeze()


def stage_report(database_url: str, total_s: float) -> None:
    """Per-stage spans from documents.timings. Stages overlap within a document, and documents
    overlap with each other: one document's spans are shares of its time, not of the run's."""
    with psycopg.connect(database_url) as conn:
        rows = [
            r[0] for r in conn.execute("SELECT timings FROM documents WHERE timings IS NOT NULL")
        ]
        (sessions,) = conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone() or (0,)
    keys = sorted({k for t in rows for k in t if k.endswith("_s")})
    # Connections opened in the whole run, the bench's own included: each costs PostgreSQL a new
    # backend, which a pool that closes its overflow pays again and again.
    print(f"database sessions opened: {sessions}")
    print(f"worker stage spans over {len(rows)} documents:")
    for key in keys:
        values = [float(t[key]) for t in rows if key in t]
        share = f"({100 * values[0] / total_s:5.1f}% of end to end)" if len(rows) == 1 else ""
        print(
            f"  {key:14s} median {1000 * statistics.median(values):9.1f} ms  "
            f"p90 {1000 * pct(values, 90):9.1f} ms  {share}"
        )
    # How many documents shared each one's last transaction (`records.endings`).
    together = [float(t["ended_together"]) for t in rows if "ended_together" in t]
    if together:
        print(
            f"documents ending in one transaction: median {statistics.median(together):.0f}, "
            f"p90 {pct(together, 90):.0f}, most {max(together):.0f}"
        )


def compare(
    total_s: float, alone: list[tuple[float, float]], used: dict[str, float], target: float
) -> None:
    """End to end against the faster model-alone run, in wall time and in CPU time."""
    alone_s, alone_cpu_s = min(alone)
    runs = ", ".join(f"{wall:.2f}" for wall, _ in alone)
    print(load())
    print(f"end to end s: {total_s:.2f}")
    print(f"model alone, same chunks s: {alone_s:.2f}  (runs: {runs})")
    print(f"ratio end-to-end / model  : {total_s / alone_s:.2f}  (target ≤ {target})")
    cpu_report(used, alone_cpu_s)


# -- large: one filing ------------------------------------------------------------------------


async def ingest_one(url: str, pdf: Path) -> tuple[float, dict[str, object]]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        t0 = time.perf_counter()
        with pdf.open("rb") as f:
            response = await client.post(
                "/api/v1/upload", files={"file": (pdf.name, f, "application/pdf")}
            )
        doc_id = response.json()["document_id"]
        # Watch the events stream, as the web page does, rather than polling the API.
        async with client.stream("GET", f"/api/v1/documents/{doc_id}/events") as events:
            async for line in events.aiter_lines():
                if line.startswith("event:") and line[6:].strip() in ("ready", "failed"):
                    break
        doc = (await client.get(f"/api/v1/documents/{doc_id}")).json()
        return time.perf_counter() - t0, doc


def large(pdf: Path, settings: Settings, precision: str, env: dict[str, str]) -> None:
    pages = extract_pages(pdf, "pdf", Limits(settings.max_pages, 300, 2048))
    chunks = chunk_pages(pages, Tokenizer(), settings.chunk_tokens, settings.chunk_overlap_tokens)
    print(load())
    alone = [model_alone(chunks, precision, settings)]
    with bench_stack(worker=True, **env) as stack:
        # Let the worker load its model before the clock starts, as a running service has.
        time.sleep(8)
        meter = CpuMeter(stack_pids(stack))
        total_s, doc = timed_client(ingest_one(stack.url, pdf))
        used = meter.used()
        assert doc["status"] == "ready", doc
        assert stack.worker is not None
        stack.worker.stop()
        print(f"== {pdf.name}: {doc['page_count']} pages, {len(chunks)} chunks, {precision} ==")
        stage_report(stack.database_url, total_s)
    alone.append(model_alone(chunks, precision, settings))
    compare(total_s, alone, used, 1.3)
    if precision == "bf16":
        fp32_s, _ = model_alone(chunks, "fp32", settings)
        bf16_s = min(alone)[0]
        print(f"model alone fp32 s: {fp32_s:.2f}  (bf16 is {fp32_s / bf16_s:.2f}x faster)")


# -- small: many one-page text documents ------------------------------------------------------


def page_texts() -> Iterator[tuple[str, str]]:
    """(name, text) of every page of the real PDFs with enough words, in a fixed order."""
    import pypdfium2 as pdfium

    root = shared_file("mmlongbench", "documents").parent.parent
    sources = sorted((root / "mmlongbench" / "documents").glob("*.pdf"))
    sources += sorted((root / "pdfs").rglob("*.pdf"))
    for path in sources:
        try:
            pdf = pdfium.PdfDocument(path)
        except pdfium.PdfiumError:
            continue  # the encrypted and broken files of pdfs/
        for i in range(len(pdf)):
            yield f"{path.stem}-p{i + 1}", pdf[i].get_textpage().get_text_range()


def write_corpus(folder: Path, count: int) -> list[Path]:
    """`count` text files of about WORDS_PER_DOC words, a page (or part of a long page) each."""
    files: list[Path] = []
    for name, text in page_texts():
        words = text.split()
        parts = round(len(words) / WORDS_PER_DOC)
        for k in range(parts):
            piece = words[k * len(words) // parts : (k + 1) * len(words) // parts]
            lines = [" ".join(piece[j : j + 12]) for j in range(0, len(piece), 12)]
            path = folder / f"{name}-{k + 1}.txt"
            path.write_text("\n".join(lines) + "\n")
            files.append(path)
            if len(files) == count:
                return files
    raise SystemExit(f"the shared PDFs hold only {len(files)} pages' worth of text")


def chunk_files(files: list[Path], settings: Settings) -> list[ChunkSpec]:
    """The chunks the worker will make: the same reader and chunker, run in this process."""
    read = formats.get("text").reader()
    tokenizer = Tokenizer()
    chunks: list[ChunkSpec] = []
    for path in files:
        pages = list(read(path, ReadContext(max_pages=settings.max_pages)))
        chunks += chunk_pages(
            pages, tokenizer, settings.chunk_tokens, settings.chunk_overlap_tokens
        )
    return chunks


async def upload_all(url: str, files: list[Path], clients: int) -> float:
    """Upload every file with `clients` concurrent connections; returns the seconds taken."""
    todo = iter(files)
    t0 = time.perf_counter()

    async def client_loop(client: httpx.AsyncClient) -> None:
        for path in todo:
            response = await client.post(
                "/api/v1/upload", files={"file": (path.name, path.read_bytes(), "text/plain")}
            )
            assert response.status_code == 200, response.text

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    return time.perf_counter() - t0


def wait_all_done(database_url: str, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM documents WHERE status IN ('ready', 'failed')"
            ).fetchone()
            if row and row[0] >= count:
                return
            time.sleep(0.2)
    raise SystemExit(f"not every document was done after {timeout_s:.0f} s")


async def run_small(url: str, database_url: str, files: list[Path], clients: int) -> float:
    t0 = time.perf_counter()
    uploading = asyncio.ensure_future(upload_all(url, files, clients))
    waiting = asyncio.ensure_future(
        asyncio.to_thread(wait_all_done, database_url, len(files), 7200)
    )
    upload_s = await uploading
    await waiting
    total_s = time.perf_counter() - t0
    print(f"uploads took {upload_s:.1f} s ({len(files) / upload_s:.0f} documents/s)")
    return total_s


def check_stored(database_url: str, files: list[Path], chunks: list[ChunkSpec]) -> None:
    """Every document ready, holding exactly the chunks the chunker made for it."""
    with psycopg.connect(database_url) as conn:
        by_status = conn.execute("SELECT status, count(*) FROM documents GROUP BY status")
        statuses: dict[str, int] = dict(by_status.fetchall())
        stored = conn.execute("SELECT count(*), count(DISTINCT (document_pk, seq)) FROM chunks")
        rows, distinct = stored.fetchone() or (0, 0)
    assert statuses == {"ready": len(files)}, statuses
    assert rows == distinct == len(chunks), (rows, distinct, len(chunks))


def small(
    count: int, clients: int, settings: Settings, precision: str, env: dict[str, str]
) -> None:
    with tempfile.TemporaryDirectory(prefix="docqa-small-docs-") as tmp:
        files = write_corpus(Path(tmp), count)
        chunks = chunk_files(files, settings)
        words = sum(len(p.read_text().split()) for p in files)
        print(
            f"== {len(files)} text documents, {words / len(files):.0f} words and "
            f"{len(chunks) / len(files):.2f} chunks each, {precision} =="
        )
        print(load())
        alone = [model_alone(chunks, precision, settings)]
        env = {"DOCQA_RATE_UPLOADS_PER_MINUTE": "0", **env}
        with bench_stack(worker=True, **env) as stack:
            time.sleep(8)  # the worker loads its model, as a running service has
            meter = CpuMeter(stack_pids(stack))
            total_s = timed_client(run_small(stack.url, stack.database_url, files, clients))
            used = meter.used()
            assert stack.worker is not None
            stack.worker.stop()
            check_stored(stack.database_url, files, chunks)
            stage_report(stack.database_url, total_s)
        alone.append(model_alone(chunks, precision, settings))
    print(f"documents/s end to end: {len(files) / total_s:.1f}")
    compare(total_s, alone, used, 1.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("case", nargs="?", choices=("large", "small"), default="large")
    parser.add_argument("--pdf", type=Path, help="the large case's PDF")
    parser.add_argument("--docs", type=int, default=5000, help="the small case's documents")
    parser.add_argument("--clients", type=int, default=8, help="concurrent uploads")
    parser.add_argument(
        "--env", action="append", default=[], help="DOCQA_X=value for the stack (to compare)"
    )
    args = parser.parse_args()
    # The model alone runs in this process: with the allocator the worker has (`docqa worker`
    # and `serve` keep freed memory), so the baseline is the model at its best here too.
    keep_freed_memory()
    settings = Settings()
    precision = "bf16" if cpu_supports_bf16() else "fp32"
    env = dict(item.split("=", 1) for item in args.env)
    if args.case == "large":
        pdf = args.pdf or shared_file("mmlongbench", "documents", "3M_2018_10K.pdf")
        large(pdf, settings, precision, env)
    else:
        small(args.docs, args.clients, settings, precision, env)


if __name__ == "__main__":
    main()
