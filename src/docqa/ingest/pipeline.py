"""Processing one document: extract → chunk → embed → index, writing progress as it goes.

The stages overlap: pages stream out of the extraction process, are chunked as they arrive, and
the first batch is embedded while later pages are still being read; each batch is written while
the next one is embedded.

Re-running is safe: chunks are written in numbered batches, one transaction each, so a retry
after a crash skips the batches already stored and never writes a chunk twice; the last batch
lands with the pages, the postings and `ready` (`ingest.records`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from docqa.blobs import BlobNotFound, BlobStore
from docqa.db.engine import Database
from docqa.db.models import Chunk, Document
from docqa.documents import set_progress
from docqa.errors import ExtractionFailed
from docqa.formats.page import Page
from docqa.ingest import records
from docqa.ingest.batches import EmbedQueue
from docqa.ingest.chunk import ChunkSpec, chunk_page, heading_at
from docqa.ingest.embed import Embedder, Tokenizer, Vectors
from docqa.ingest.extract import Limits, ReadOptions, check_has_text, extract_pages, make_pool
from docqa.ingest.groups import Grouped
from docqa.ingest.sandbox import SandboxPool
from docqa.settings import Settings

log = logging.getLogger(__name__)

# Share of the progress bar for reading the file (pages read, or recognised where OCR runs) and
# for embedding; the rest is indexing at the end. Reading and embedding overlap.
READ_SHARE, OCR_READ_SHARE, DONE_SHARE = 10.0, 60.0, 99.0
# Progress is written at most this often, the first time after PROGRESS_FIRST_S: a document
# done sooner writes no progress, only its start and its end. Nor does one read in full whose
# chunks all fit in one embedding batch (a one-page note waiting its turn for the model among
# many): its next news is that it is ready.
PROGRESS_EVERY_S = 0.25
PROGRESS_FIRST_S = 1.0


@dataclass
class Runtime:
    """What a worker process holds for the life of the process: among it, the extraction
    sandboxes and the embedding queue that the documents in flight share."""

    settings: Settings
    db: Database
    store: BlobStore
    embedder: Embedder
    tokenizer: Tokenizer
    sandboxes: SandboxPool = field(init=False)
    embeddings: EmbedQueue = field(init=False)
    # Claims and last transactions of the documents in flight, grouped (`ingest.groups`).
    claims: Grouped[uuid.UUID, records.Claim] = field(init=False)
    endings: Grouped[records.Ending, None] = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.sandboxes = make_pool(s.extract_sandboxes, s.extract_sandbox_documents)
        self.embeddings = EmbedQueue(
            self.embedder, s.embedding_batch_size, lanes=self.embedder.lanes
        )
        self.claims = records.claims(self.db)
        self.endings = records.endings(self.db)

    async def aclose(self) -> None:
        await self.embeddings.aclose()
        self.sandboxes.close()


@dataclass
class _Progress:
    """Where one document's processing stands. Reading and embedding overlap, so the bar is a
    blend of both: the share of the file read, and the share of its chunks embedded out of those
    expected (the chunks so far, scaled by the share read). It never moves backwards."""

    pages_done: int = 0
    pages_total: int = 0
    ocr_done: int = 0
    ocr_total: int = 0
    read: bool = False  # every page is in
    chunks: int = 0  # chunks cut so far
    written: int = 0  # chunks embedded and stored (this attempt's and earlier ones')
    percent: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def read_share(self) -> float:
        if self.read:
            return 1.0
        if self.ocr_total:
            return self.ocr_done / self.ocr_total
        return self.pages_done / self.pages_total if self.pages_total else 0.0

    def view(self) -> dict[str, Any]:
        read = self.read_share()
        expected = self.chunks if self.read or read <= 0 else self.chunks / read
        embedded = min(1.0, self.written / expected) if expected else 0.0
        reading = OCR_READ_SHARE if self.ocr_total else READ_SHARE
        self.percent = max(self.percent, reading * read + (DONE_SHARE - reading) * embedded)
        if self.read:
            stage, done, total = "embedding", self.written, self.chunks
        elif self.ocr_total and self.ocr_done < self.ocr_total:
            stage, done, total = "ocr", self.ocr_done, self.ocr_total
        else:
            stage, done, total = "extracting", self.pages_done, self.pages_total
        return {
            "stage": stage,
            "progress_done": done,
            "progress_total": max(total, done),
            "percent": round(self.percent, 2),
        }


async def process_document(rt: Runtime, pk: uuid.UUID) -> str:
    """Run the whole pipeline for one document. Returns the final status.

    `ExtractionFailed` ends the document `failed` with its code. Any other exception propagates,
    so that the job queue retries it.
    """
    started = time.perf_counter()
    claimed = await rt.claims(pk)
    doc, stored = claimed.doc, claimed.stored
    if doc is None:
        return claimed.status
    try:
        ending = await _extract_and_index(rt, doc, stored, started)
    except ExtractionFailed as exc:
        await records.discard_chunks(rt.db, pk)
        await mark_failed(rt.db, pk, exc.code, exc.message)
        return "failed"
    await rt.endings(ending)
    log.info(
        "document ready",
        extra={"document_pk": str(pk), "chunks": ending.chunks, **ending.timings},
    )
    return "ready"


async def mark_failed(db: Database, pk: uuid.UUID, code: str, message: str) -> bool:
    """End the document `failed`, unless it is ready already: a second run of its job (one
    retried after a database outage, while the first was still going) may fail after the first
    finished it. Returns whether it was marked."""
    async with db.session() as session, session.begin():
        status = select(Document.status).where(Document.pk == pk).with_for_update()
        ready = await session.scalar(status) == "ready"
        if not ready:
            await set_progress(
                session, pk, status="failed", stage="failed", error_code=code, error_message=message
            )
    if ready:
        log.warning("document already ready: not failed", extra={"document_pk": str(pk)})
        return False
    log.info("document failed", extra={"document_pk": str(pk), "code": code})
    return True


async def _extract_and_index(
    rt: Runtime, doc: Document, stored: set[int], started: float
) -> records.Ending:
    # Extraction reads a file: the blob itself on local storage, a temporary download on S3.
    # Only the store raises BlobNotFound, and the file is read only inside the block.
    try:
        async with rt.store.local_copy(doc.blob_key) as path:
            return await _extract_and_index_file(rt, doc, path, stored, started)
    except BlobNotFound:
        raise ExtractionFailed(
            "file_missing", "The uploaded file is no longer in storage."
        ) from None


async def _extract_and_index_file(
    rt: Runtime, doc: Document, path: Path, stored: set[int], started: float
) -> records.Ending:
    """Extract in a child process, chunk pages as they arrive, and embed and write batches as
    soon as they fill. Returns what the document's last transaction writes (the last batch's
    rows, embedded but not yet written); raises `ExtractionFailed`."""
    settings = rt.settings
    timings: dict[str, float] = {}
    limits = Limits(
        settings.max_pages,
        settings.extract_timeout_s,
        settings.extract_memory_mb,
        max_extra_s=settings.ocr_timeout_s_per_page * settings.max_pages,
    )
    options = ReadOptions(
        ocr=settings.ocr == "on",
        ocr_languages=settings.ocr_languages,
        ocr_timeout_s_per_page=settings.ocr_timeout_s_per_page,
    )
    loop = asyncio.get_running_loop()
    progress = _Progress()
    arrived: asyncio.Queue[Page | None] = asyncio.Queue()

    def on_progress(stage: str, done: int, total: int) -> None:
        def update() -> None:
            if stage == "ocr":
                progress.ocr_done, progress.ocr_total = done, total
            else:
                progress.pages_done, progress.pages_total = done, total
            progress.changed.set()

        loop.call_soon_threadsafe(update)

    def on_page(page: Page) -> None:
        loop.call_soon_threadsafe(arrived.put_nowait, page)

    t0 = time.perf_counter()
    # On the pool's own threads: documents waiting for a sandbox hold no thread the loop needs.
    read = functools.partial(
        extract_pages, path, doc.kind, limits, on_progress, on_page, options, rt.sandboxes
    )
    extraction = loop.run_in_executor(rt.sandboxes.executor, read)
    ended: list[float] = []

    def extraction_done(_: object) -> None:
        ended.append(time.perf_counter())
        # Scheduled after every page the thread handed over, so it always arrives last.
        arrived.put_nowait(None)

    extraction.add_done_callback(extraction_done)
    progress.written = len(stored)
    ticker = asyncio.ensure_future(_report_progress(rt, doc, progress))
    chunks: list[ChunkSpec] = []
    pages: dict[int, Page] = {}
    indexer = _Indexer(rt, doc, stored, progress)
    size = settings.embedding_batch_size
    chunk_s = 0.0
    stored_pages: asyncio.Future[None] | None = None
    try:
        while (page := await arrived.get()) is not None:
            t = time.perf_counter()
            pages[page.number] = page
            for piece in chunk_page(
                page, rt.tokenizer, settings.chunk_tokens, settings.chunk_overlap_tokens
            ):
                chunks.append(
                    ChunkSpec(
                        len(chunks),
                        page.number,
                        piece.char_start,
                        piece.char_end,
                        piece.text,
                        piece.tokens,
                        heading_at(page, piece.char_start),
                    )
                )
            progress.chunks = len(chunks)
            chunk_s += time.perf_counter() - t
            while len(chunks) - indexer.queued >= size:
                await indexer.add(chunks[indexer.queued : indexer.queued + size], pages)
        every_page = extraction.result()
        progress.read = True
        progress.changed.set()
        timings["extract_s"] = ended[0] - t0
        check_has_text(every_page, ocr=options.ocr)
        if not chunks:
            # Text, but all of it page furniture (a stamped header on scanned pages, page
            # numbers): nothing to search, so the document is not ready for questions.
            raise ExtractionFailed(
                "no_text",
                "The only text in this file is its page headers, footers or numbers; the "
                "pages themselves could not be read.",
            )
        # A document of several batches stores its pages now, while the model embeds its last
        # batches, rather than in the last transaction (the 3M 10-K's 160 pages with their
        # words take 0.2 s to write). A one-batch document keeps them there: one transaction
        # fewer.
        if len(chunks) > size:
            stored_pages = asyncio.ensure_future(records.write_pages(rt.db, doc, every_page))
        if indexer.queued < len(chunks):
            await indexer.add(chunks[indexer.queued :], pages)
        last_rows = await indexer.finish()
        if stored_pages is not None:
            await stored_pages
    finally:
        await _stop(ticker)
        await indexer.cancel()
        if stored_pages is not None:
            stored_pages.cancel()  # nothing to cancel once written
            with contextlib.suppress(BaseException):
                await stored_pages
        if not extraction.done():
            extraction.cancel()
    timings["chunk_s"] = chunk_s
    # Stages overlap, so these are spans of wall time, not shares that add up to the total.
    timings["embed_s"] = indexer.embed_s
    timings["write_s"] = indexer.write_s
    timings["chunks_embedded"] = float(indexer.embedded)
    return records.Ending(
        doc, every_page, stored_pages is not None, last_rows, len(chunks), timings, started
    )


async def _stop(task: asyncio.Future[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _report_progress(rt: Runtime, doc: Document, progress: _Progress) -> None:
    """Write the document's progress whenever it changes, at most every `PROGRESS_EVERY_S`."""
    await asyncio.sleep(PROGRESS_FIRST_S)
    while True:
        await progress.changed.wait()
        progress.changed.clear()
        if progress.read and progress.chunks <= rt.settings.embedding_batch_size:
            continue
        async with rt.db.session() as session, session.begin():
            count = select(func.count()).where(Chunk.document_pk == doc.pk).scalar_subquery()
            await set_progress(session, doc.pk, chunk_count=count, **progress.view())
        await asyncio.sleep(PROGRESS_EVERY_S)


class _Indexer:
    """Embeds batches (in the shared queue) and writes each one while later ones are embedded;
    the last one is left to the document's `records.Ending`. As many batches are embedded at
    once as the queue has lanes, and one more waits its turn, so that a lane is never idle
    while a batch is written."""

    def __init__(self, rt: Runtime, doc: Document, stored: set[int], progress: _Progress) -> None:
        self.rt, self.doc, self.stored, self.progress = rt, doc, stored, progress
        self.queued = 0
        self.embedded = 0
        self.write_s = 0.0
        self._first_embed: float | None = None
        self._last_embed = 0.0
        self._pending: deque[tuple[list[dict[str, Any]], asyncio.Future[Vectors]]] = deque()

    @property
    def embed_s(self) -> float:
        """From the first batch's start to the last batch's end: the model's busy span."""
        return self._last_embed - self._first_embed if self._first_embed is not None else 0.0

    async def _embed(self, batch: list[ChunkSpec]) -> Vectors:
        if self._first_embed is None:
            self._first_embed = time.perf_counter()
        # Shared with the other documents in flight: their chunks fill the same batches.
        vectors = await self.rt.embeddings.embed([c.text for c in batch])
        self._last_embed = time.perf_counter()
        return vectors

    async def add(self, batch: list[ChunkSpec], pages: dict[int, Page]) -> None:
        self.queued += len(batch)
        todo = [c for c in batch if c.seq not in self.stored]
        if not todo:
            return  # written by an earlier attempt
        rows = [records.chunk_row(self.doc, c, pages[c.page_no]) for c in todo]
        self._pending.append((rows, asyncio.ensure_future(self._embed(todo))))
        self.embedded += len(todo)
        while len(self._pending) > self.rt.embeddings.lanes:
            await self._flush()

    async def _embedded_rows(self) -> list[dict[str, Any]]:
        """The oldest pending batch's rows, with their vectors, once embedded."""
        if not self._pending:
            return []
        rows, future = self._pending[0]
        vectors = await future
        self._pending.popleft()
        for row, vector in zip(rows, vectors, strict=True):
            row["embedding"] = vector
        return rows

    async def _flush(self) -> None:
        rows = await self._embedded_rows()
        if not rows:
            return
        t = time.perf_counter()
        await records.write_chunks(self.rt.db, rows)
        self.progress.written += len(rows)
        self.progress.changed.set()
        self.write_s += time.perf_counter() - t

    async def finish(self) -> list[dict[str, Any]]:
        """The last batch's rows, embedded: written with the document's other final rows."""
        while len(self._pending) > 1:
            await self._flush()
        return await self._embedded_rows()

    async def cancel(self) -> None:
        while self._pending:
            _, future = self._pending.popleft()
            future.cancel()
            with contextlib.suppress(BaseException):
                await future
