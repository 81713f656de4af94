"""The ASGI application: `create_app(settings)` builds everything; nothing happens at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from docqa import __version__
from docqa.answer import Answerer
from docqa.api import ask as ask_api
from docqa.api import conversations as conversations_api
from docqa.api import documents as documents_api
from docqa.api import health as health_api
from docqa.api import metrics as metrics_api
from docqa.api import pages as pages_api
from docqa.api import status as status_api
from docqa.api.errors import RequestIdMiddleware, error_responses, install_error_handlers
from docqa.api.limits import BodyGuard
from docqa.api.metrics import RequestMetricsMiddleware
from docqa.api.web import install_web
from docqa.auth import NO_KEYS_SENTENCE, any_active_key
from docqa.blobs import make_blob_store
from docqa.db import migrate
from docqa.db.engine import UnsupportedDatabase, open_database
from docqa.formats.ocr import OcrUnavailable, check_settings
from docqa.ingest.embed import Tokenizer, make_embedder
from docqa.ingest.pipeline import Runtime
from docqa.jobs import build_job_app, run_worker
from docqa.process import freeze_startup_objects
from docqa.progress import ProgressHub
from docqa.protocols import mcp_server, openai_chat
from docqa.protocols.errors import ErrorShape, jsonrpc_shape, openai_shape
from docqa.search.rerank import make_reranker
from docqa.settings import Settings
from docqa.state import AppState

log = logging.getLogger(__name__)


class StartupRefused(RuntimeError):
    """The configuration is unsafe or unusable; the message says why and what to do."""


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    try:
        check_settings(settings.ocr, settings.ocr_languages)
    except OcrUnavailable as exc:  # an OCR language not installed: say which package
        log.error(str(exc))
        raise StartupRefused(str(exc)) from None
    try:
        db = await open_database(settings)
    except UnsupportedDatabase as exc:  # pgvector too old: say what to do, not a traceback
        log.error(str(exc))
        raise StartupRefused(str(exc)) from None
    try:
        if settings.migrate_on_start:
            await asyncio.to_thread(migrate.upgrade, db.url)
        if settings.auth == "keys" and not await any_active_key(db):
            log.error(NO_KEYS_SENTENCE)
            raise StartupRefused(NO_KEYS_SENTENCE)
        store = make_blob_store(settings)
        jobs = build_job_app(settings, db.url)
        await jobs.open_async()
        hub = ProgressHub(db.url)
        state = AppState(
            settings=settings,
            db=db,
            store=store,
            jobs=jobs,
            hub=hub,
            embedder=make_embedder(settings),
        )
        # One HTTP client to the rerank server, shared by every ask, closed on shutdown.
        state.reranker = make_reranker(settings)
        state.answerer = Answerer.from_settings(settings, db, state.embedder, state.reranker)
        runtime: Runtime | None = None
        if settings.worker:
            runtime = Runtime(settings, db, store, state.embedder, Tokenizer())
            state.worker_task = asyncio.create_task(
                run_worker(jobs, runtime, install_signal_handlers=False, name="serve-worker")
            )
        app.state.docqa = state
        # Load the embedding model in the background: the first query or job should not wait.
        warm = asyncio.create_task(asyncio.to_thread(state.embedder.embed_query, "warm up"))
        warm.add_done_callback(lambda _: freeze_startup_objects())
        log.info("docqa ready", extra={"worker": settings.worker})
        try:
            yield
        finally:
            warm.cancel()
            if state.worker_task is not None:
                state.worker_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await state.worker_task
            if runtime is not None:
                await runtime.aclose()  # the extraction sandboxes and the embedding queue
            await state.answerer.aclose()
            if state.reranker is not None:
                await state.reranker.aclose()
            await hub.stop()
            await jobs.close_async()
            await store.aclose()
    finally:
        await db.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the docqa application. Settings come from the environment when not given."""
    settings = settings or Settings()
    mcp = mcp_server.build_mcp(settings)
    app = FastAPI(
        title="docqa",
        version=__version__,
        summary="Answers questions about your own documents, with citations down to the page.",
        lifespan=mcp_server.with_mcp(_lifespan, mcp),
    )
    app.state.settings = settings
    # Innermost: the request's log line and metrics count the answers it gives too.
    app.add_middleware(BodyGuard, settings=settings)
    # Outside everything that answers errors: those of /v1 leave in OpenAI's shape.
    app.add_middleware(ErrorShape, prefix="/v1", reshape=openai_shape)
    app.add_middleware(ErrorShape, prefix=mcp_server.PATH, reshape=jsonrpc_shape)
    # Inside RequestIdMiddleware, so that the request log line carries the request id.
    app.add_middleware(RequestMetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    app.include_router(health_api.router)
    app.include_router(metrics_api.router)
    # Declared here: the common error answers (401, 503, ...) every API route may give.
    app.include_router(status_api.router, responses=error_responses())
    app.include_router(documents_api.router)
    app.include_router(pages_api.router)
    app.include_router(ask_api.router)
    app.include_router(conversations_api.router)
    app.include_router(openai_chat.router)
    mcp_server.install_mcp(app, mcp)
    install_web(app)
    return app
