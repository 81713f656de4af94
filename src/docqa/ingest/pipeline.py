"""Processing one document: extract → chunk → embed → index, writing progress as it goes.

Re-running is safe: pages are rewritten, and chunks are written in numbered batches, one
transaction each, so a retry after a crash skips the batches already stored and never writes a
chunk twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert

from docqa.blobs import BlobStore
from docqa.db.engine import Database
from docqa.db.models import Chunk, Document, Page
from docqa.documents import set_progress
from docqa.errors import ExtractionFailed
from docqa.ingest.chunk import ChunkSpec, chunk_pages
from docqa.ingest.embed import Embedder, Tokenizer, Vectors
from docqa.ingest.extract import ExtractedPage, Limits, check_has_text, extract_pages
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
        pages = await _extract(rt, doc, timings)
    except ExtractionFailed as exc:
        await mark_failed(rt.db, pk, exc.code, exc.message)
        return "failed"
    t0 = time.perf_counter()
    chunks = await asyncio.to_thread(
        chunk_pages, pages, rt.tokenizer, rt.settings.chunk_tokens, rt.settings.chunk_overlap_tokens
    )
    timings["chunk_s"] = time.perf_counter() - t0
    await _store_pages(rt, doc, pages, len(chunks))
    await _embed_and_index(rt, doc, chunks, timings)
    timings["total_s"] = time.perf_counter() - started
    async with rt.db.session() as session, session.begin():
        await set_progress(
            session,
            pk,
            status="ready",
            stage="ready",
            progress_done=len(chunks),
            progress_total=len(chunks),
            percent=100.0,
            chunk_count=len(chunks),
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


async def _extract(rt: Runtime, doc: Document, timings: dict[str, float]) -> list[ExtractedPage]:
    path = rt.store.local_path(doc.blob_key)
    if path is None or not path.exists():
        raise ExtractionFailed("file_missing", "The uploaded file is no longer in storage.")
    limits = Limits(
        rt.settings.max_pages, rt.settings.extract_timeout_s, rt.settings.extract_memory_mb
    )
    progress = _ExtractProgress()
    loop = asyncio.get_running_loop()

    def on_progress(done: int, total: int) -> None:
        progress.done, progress.total = done, total
        loop.call_soon_threadsafe(progress.changed.set)

    t0 = time.perf_counter()
    task = asyncio.ensure_future(
        asyncio.to_thread(extract_pages, path, doc.kind, limits, on_progress)
    )
    # Report extraction progress at most every 0.25 s rather than once per page.
    while not task.done():
        await asyncio.wait([task], timeout=0.25)
        if progress.changed.is_set():
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
    pages = task.result()
    check_has_text(pages)
    timings["extract_s"] = time.perf_counter() - t0
    return pages


async def _store_pages(
    rt: Runtime, doc: Document, pages: list[ExtractedPage], chunk_total: int
) -> None:
    async with rt.db.session() as session, session.begin():
        await session.execute(delete(Page).where(Page.document_pk == doc.pk))
        if pages:
            await session.execute(
                insert(Page),
                [{"document_pk": doc.pk, "page_no": p.page_no, "text": p.text} for p in pages],
            )
        await set_progress(
            session,
            doc.pk,
            page_count=len(pages),
            stage="embedding",
            progress_done=0,
            progress_total=chunk_total,
            percent=EXTRACT_SHARE + CHUNK_SHARE,
        )


async def _stored_seqs(rt: Runtime, pk: uuid.UUID) -> set[int]:
    async with rt.db.session() as session:
        result = await session.execute(select(Chunk.seq).where(Chunk.document_pk == pk))
        return set(result.scalars())


async def _embed_and_index(
    rt: Runtime, doc: Document, chunks: list[ChunkSpec], timings: dict[str, float]
) -> None:
    """Embed in batches on a thread while the previous batch is written, one transaction each."""
    stored = await _stored_seqs(rt, doc.pk)
    size = rt.settings.embedding_batch_size
    batches = [chunks[i : i + size] for i in range(0, len(chunks), size)]
    todo = [b for b in batches if not all(c.seq in stored for c in b)]
    done = len(chunks) - sum(len(b) for b in todo)
    embed_s = write_s = 0.0

    async def embed(batch: list[ChunkSpec]) -> tuple[Vectors, float]:
        t = time.perf_counter()
        vectors = await asyncio.to_thread(rt.embedder.embed_documents, [c.text for c in batch])
        return vectors, time.perf_counter() - t

    pending = asyncio.ensure_future(embed(todo[0])) if todo else None
    for index, batch in enumerate(todo):
        assert pending is not None
        vectors, spent = await pending
        embed_s += spent
        pending = asyncio.ensure_future(embed(todo[index + 1])) if index + 1 < len(todo) else None
        t = time.perf_counter()
        done += len(batch)
        await _write_batch(rt, doc, batch, vectors, done, len(chunks))
        write_s += time.perf_counter() - t
    timings["embed_s"] = embed_s
    timings["write_s"] = write_s
    timings["chunks_embedded"] = float(sum(len(b) for b in todo))


async def _write_batch(
    rt: Runtime, doc: Document, batch: list[ChunkSpec], vectors: Vectors, done: int, total: int
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
        await set_progress(
            session,
            doc.pk,
            progress_done=done,
            progress_total=total,
            chunk_count=select(func.count()).where(Chunk.document_pk == doc.pk).scalar_subquery(),
            percent=EXTRACT_SHARE + CHUNK_SHARE + EMBED_SHARE * done / max(total, 1),
        )
