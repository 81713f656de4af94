"""`docqa worker`: a process that only processes documents."""

from __future__ import annotations

import asyncio

from docqa.blobs import make_blob_store
from docqa.db import migrate
from docqa.db.engine import open_database
from docqa.formats.ocr import OcrUnavailable, check_settings
from docqa.ingest.embed import Tokenizer, make_embedder
from docqa.ingest.pipeline import Runtime
from docqa.jobs import build_job_app, run_worker
from docqa.process import freeze_startup_objects
from docqa.settings import Settings


async def worker_main(settings: Settings, name: str) -> None:
    try:
        check_settings(settings.ocr, settings.ocr_languages)
    except OcrUnavailable as exc:  # say what to install, not a traceback
        raise SystemExit(str(exc)) from None
    store = make_blob_store(settings)
    # Connections that stay open, and no overflow: when a batch of one-page documents is
    # embedded, dozens end at once, and connections opened for them and closed right after cost
    # PostgreSQL a new backend each (300 for 1,000 documents). They wait for one of these instead;
    # each holds it for one short transaction, never two at once.
    db = await open_database(settings, pool_size=10, max_overflow=0)
    try:
        if settings.migrate_on_start:
            await asyncio.to_thread(migrate.upgrade, db.url)
        runtime = Runtime(settings, db, store, make_embedder(settings), Tokenizer())
        # Load the model and start a sandbox before taking jobs, so the first job's timings are
        # the job's own.
        await asyncio.gather(
            asyncio.to_thread(runtime.embedder.embed_query, "warm up"),
            asyncio.to_thread(runtime.sandboxes.warm, settings.extract_memory_mb),
        )
        freeze_startup_objects()
        jobs = build_job_app(settings, db.url)
        try:
            async with jobs.open_async():
                await run_worker(jobs, runtime, install_signal_handlers=True, name=name)
        finally:
            await runtime.aclose()  # the extraction sandboxes and the embedding queue
    finally:
        await store.aclose()
        await db.close()
