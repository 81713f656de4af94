"""Processing one document: extract → chunk → embed → index, writing progress as it goes.

The stages overlap: pages stream out of the extraction process, are chunked as they arrive, and
the first batch is embedded while later pages are still being read; each batch is written while
the next one is embedded.

Re-running is safe: pages are rewritten, and chunks are written in numbered batches, one
transaction each, so a retry after a crash skips the batches already stored and never writes a
chunk twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert

from docqa.blobs import BlobNotFound, BlobStore
from docqa.db.engine import Database
from docqa.db.models import Chunk, Document, Page
from docqa.documents import set_progress
from docqa.errors import ExtractionFailed
from docqa.ingest.chunk import ChunkSpec, chunk_page
from docqa.ingest.embed import Embedder, Tokenizer, Vectors
from docqa.ingest.extract import ExtractedPage, Limits, check_has_text, extract_pages
from docqa.search.index import index_terms
from docqa.settings import Settings

log = logging.getLogger(__name__)

# Share of the progress bar each stage fills. Embedding dominates the time, so it gets most.
EXTRACT_SHARE, CHUNK_SHARE, EMBED_SHARE = 10.0, 2.0, 87.0


@dataclass
class Runtime:
    """What a worker process holds for the life of the process."""

    settings: Settings
    db: Database
    store: BlobStore
    embedder: Embedder
    tokenizer: Tokenizer


@dataclass
class _ExtractProgress:
    done: int = 0
    total: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


async def process_document(rt: Runtime, pk: uuid.UUID) -> str:
    """Run the whole pipeline for one document. Returns the final status.

    `ExtractionFailed` ends the document `failed` with its code. Any other exception propagates,
    so that the job queue retries it.
    """
    doc = await _load(rt.db, pk)
    if doc is None or doc.status in ("ready", "failed"):
        return doc.status if doc else "deleted"
    timings: dict[str, float] = {}
    started = time.perf_counter()
    async with rt.db.session() as session, session.begin():
        await set_progress(
            session,
            pk,
            status="processing",
            stage="extracting",
            progress_done=0,
            progress_total=0,
            percent=0.0,
            error_code=None,
            error_message=None,
        )
    try:
        pages, chunks = await _extract_and_index(rt, doc, timings)
    except ExtractionFailed as exc:
        # Chunks of the pages read before the failure must not stay searchable.
        async with rt.db.session() as session, session.begin():
            await session.execute(delete(Chunk).where(Chunk.document_pk == pk))
            await session.execute(update(Document).where(Document.pk == pk).values(chunk_count=0))
        await mark_failed(rt.db, pk, exc.code, exc.message)
        return "failed"
    await _store_pages(rt, doc, pages)
    async with rt.db.session() as session, session.begin():
        # The lexical index and the totals land with the status: a ready document is searchable.
        indexing = time.perf_counter()
        await index_terms(session, pk)
        timings["index_terms_s"] = time.perf_counter() - indexing
        timings["total_s"] = time.perf_counter() - started
        await set_progress(
            session,
            pk,
            status="ready",
            stage="ready",
            progress_done=len(chunks),
            progress_total=len(chunks),
            percent=100.0,
            timings={k: round(v, 4) for k, v in timings.items()},
        )
    log.info("document ready", extra={"document_pk": str(pk), "chunks": len(chunks), **timings})
    return "ready"


async def _load(db: Database, pk: uuid.UUID) -> Document | None:
    async with db.session() as session:
        return await session.get(Document, pk)


async def mark_failed(db: Database, pk: uuid.UUID, code: str, message: str) -> None:
    async with db.session() as session, session.begin():
        await set_progress(
            session, pk, status="failed", stage="failed", error_code=code, error_message=message
        )
    log.info("document failed", extra={"document_pk": str(pk), "code": code})


async def _extract_and_index(
    rt: Runtime, doc: Document, timings: dict[str, float]
) -> tuple[list[ExtractedPage], list[ChunkSpec]]:
    # Extraction reads a file: the blob itself on local storage, a temporary download on S3.
    # Only the store raises BlobNotFound, and the file is read only inside the block.
    try:
        async with rt.store.local_copy(doc.blob_key) as path:
            return await _extract_and_index_file(rt, doc, path, timings)
    except BlobNotFound:
        raise ExtractionFailed(
            "file_missing", "The uploaded file is no longer in storage."
        ) from None


async def _extract_and_index_file(
    rt: Runtime, doc: Document, path: Path, timings: dict[str, float]
) -> tuple[list[ExtractedPage], list[ChunkSpec]]:
    """Extract in a child process, chunk pages as they arrive, and embed and write batches as
    soon as they fill. Returns every page and chunk; raises `ExtractionFailed`."""
    limits = Limits(
        rt.settings.max_pages, rt.settings.extract_timeout_s, rt.settings.extract_memory_mb
    )
    loop = asyncio.get_running_loop()
    progress = _ExtractProgress()
    arrived: asyncio.Queue[ExtractedPage | None] = asyncio.Queue()

    def on_progress(done: int, total: int) -> None:
        progress.done, progress.total = done, total
        loop.call_soon_threadsafe(progress.changed.set)

    def on_page(page: ExtractedPage) -> None:
        loop.call_soon_threadsafe(arrived.put_nowait, page)

    t0 = time.perf_counter()
    extraction = asyncio.ensure_future(
        asyncio.to_thread(extract_pages, path, doc.kind, limits, on_progress, on_page)
    )
    ended: list[float] = []

    def extraction_done(_: object) -> None:
        ended.append(time.perf_counter())
        # Scheduled after every page the thread handed over, so it always arrives last.
        arrived.put_nowait(None)

    extraction.add_done_callback(extraction_done)
    ticker = asyncio.ensure_future(_report_extraction(rt, doc, extraction, progress))
    chunks: list[ChunkSpec] = []
    stored = await _stored_seqs(rt, doc.pk)
    indexer = _Indexer(rt, doc, stored, chunks)
    size = rt.settings.embedding_batch_size
    chunk_s = 0.0
    try:
        while (page := await arrived.get()) is not None:
            t = time.perf_counter()
            for start, end, tokens in chunk_page(
                page, rt.tokenizer, rt.settings.chunk_tokens, rt.settings.chunk_overlap_tokens
            ):
                chunks.append(
                    ChunkSpec(len(chunks), page.page_no, start, end, page.text[start:end], tokens)
                )
            chunk_s += time.perf_counter() - t
            while len(chunks) - indexer.queued >= size:
                await indexer.add(chunks[indexer.queued : indexer.queued + size])
        # Every page is chunked: page progress stops, and from here on batches report
        # done/total chunks (a late page-progress write would move the bar backwards).
        await _stop(ticker)
        indexer.all_chunked = True
        pages = extraction.result()
        timings["extract_s"] = ended[0] - t0
        check_has_text(pages)
        if indexer.queued < len(chunks):
            await indexer.add(chunks[indexer.queued :])
        await indexer.finish()
    finally:
        await _stop(ticker)
        await indexer.cancel()
        if not extraction.done():
            extraction.cancel()
    timings["chunk_s"] = chunk_s
    # Stages overlap, so these are spans of wall time, not shares that add up to the total.
    timings["embed_s"] = indexer.embed_s
    timings["write_s"] = indexer.write_s
    timings["chunks_embedded"] = float(indexer.embedded)
    return pages, chunks


async def _stop(task: asyncio.Future[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _report_extraction(
    rt: Runtime, doc: Document, extraction: asyncio.Future[Any], progress: _ExtractProgress
) -> None:
    """Write page progress at most every 0.25 s while extraction runs."""
    while not extraction.done():
        await asyncio.wait([extraction], timeout=0.25)
        if progress.changed.is_set() and not extraction.done():
            progress.changed.clear()
            share = progress.done / progress.total if progress.total else 0.0
            async with rt.db.session() as session, session.begin():
                await set_progress(
                    session,
                    doc.pk,
                    progress_done=progress.done,
                    progress_total=progress.total,
                    percent=EXTRACT_SHARE * share,
                )


class _Indexer:
    """Embeds batches on a thread and writes each one while the next is embedded."""

    def __init__(
        self,
        rt: Runtime,
        doc: Document,
        stored: set[int],
        chunks: list[ChunkSpec],
    ) -> None:
        self.rt, self.doc, self.stored, self.chunks = rt, doc, stored, chunks
        self.queued = 0
        self.all_chunked = False
        self.written = len(stored)
        self.embedded = 0
        self.write_s = 0.0
        self._first_embed: float | None = None
        self._last_embed = 0.0
        self._pending: tuple[list[ChunkSpec], asyncio.Future[Vectors]] | None = None

    @property
    def embed_s(self) -> float:
        """From the first batch's start to the last batch's end: the model's busy span."""
        return self._last_embed - self._first_embed if self._first_embed is not None else 0.0

    async def _embed(self, batch: list[ChunkSpec]) -> Vectors:
        if self._first_embed is None:
            self._first_embed = time.perf_counter()
        vectors = await asyncio.to_thread(self.rt.embedder.embed_documents, [c.text for c in batch])
        self._last_embed = time.perf_counter()
        return vectors

    async def add(self, batch: list[ChunkSpec]) -> None:
        self.queued += len(batch)
        if all(c.seq in self.stored for c in batch):
            return  # written by an earlier attempt
        started = asyncio.ensure_future(self._embed(batch))
        self.embedded += len(batch)
        await self._flush()
        self._pending = (batch, started)

    async def _flush(self) -> None:
        if self._pending is None:
            return
        batch, future = self._pending
        self._pending = None
        vectors = await future
        t = time.perf_counter()
        self.written += len(batch)
        # The total is known once every page has been chunked.
        total = len(self.chunks) if self.all_chunked else None
        await _write_batch(self.rt, self.doc, batch, vectors, self.written, total)
        self.write_s += time.perf_counter() - t

    async def finish(self) -> None:
        await self._flush()

    async def cancel(self) -> None:
        if self._pending is not None:
            self._pending[1].cancel()
            with contextlib.suppress(BaseException):
                await self._pending[1]
            self._pending = None


async def _store_pages(rt: Runtime, doc: Document, pages: list[ExtractedPage]) -> None:
    async with rt.db.session() as session, session.begin():
        await session.execute(delete(Page).where(Page.document_pk == doc.pk))
        if pages:
            await session.execute(
                insert(Page),
                [{"document_pk": doc.pk, "page_no": p.page_no, "text": p.text} for p in pages],
            )
        await set_progress(session, doc.pk, page_count=len(pages))


async def _stored_seqs(rt: Runtime, pk: uuid.UUID) -> set[int]:
    async with rt.db.session() as session:
        result = await session.execute(select(Chunk.seq).where(Chunk.document_pk == pk))
        return set(result.scalars())


async def _write_batch(
    rt: Runtime,
    doc: Document,
    batch: list[ChunkSpec],
    vectors: Vectors,
    done: int,
    total: int | None,
) -> None:
    rows: list[dict[str, Any]] = [
        {
            "document_pk": doc.pk,
            "owner_id": doc.owner_id,
            "seq": c.seq,
            "page_start": c.page_no,
            "page_end": c.page_no,
            "char_start": c.char_start,
            "char_end": c.char_end,
            "token_count": c.token_count,
            "text": c.text,
            "embedding": vector,
        }
        for c, vector in zip(batch, vectors, strict=True)
    ]
    async with rt.db.session() as session, session.begin():
        await session.execute(
            insert(Chunk).values(rows).on_conflict_do_nothing(constraint="uq_chunks_document_seq")
        )
        count = select(func.count()).where(Chunk.document_pk == doc.pk).scalar_subquery()
        if total is None:  # still extracting: the page progress stays on the bar
            await set_progress(session, doc.pk, chunk_count=count)
        else:
            await set_progress(
                session,
                doc.pk,
                stage="embedding",
                progress_done=done,
                progress_total=total,
                chunk_count=count,
                percent=EXTRACT_SHARE + CHUNK_SHARE + EMBED_SHARE * done / max(total, 1),
            )
