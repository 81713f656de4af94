"""The job queue (procrastinate on the same PostgreSQL): the processing task, and the worker.

Upload defers one `process_document` job per document. Workers pick jobs up through
LISTEN/NOTIFY, send heartbeats, and retry the jobs of workers that stopped sending them
(killed, out of memory, machine gone), so no document stays `processing`.

A worker runs two lanes: files up to `SMALL_DOCUMENT_KB` go to their own queue, which a worker
takes many at a time (their chunks then share embedding batches), and larger files go to
`ingest`, taken `WORKER_CONCURRENCY` (2) at a time: a second big file keeps the model busy
while the first is read or written, and a worker never holds more big jobs than it runs while
another worker idles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections.abc import Iterable
from typing import Any

import procrastinate
from procrastinate import JobContext, RetryStrategy
from procrastinate.connector import Notify
from procrastinate.exceptions import AlreadyEnqueued, ConnectorException
from sqlalchemy import text

from docqa.documents import notify_changed
from docqa.ingest.pipeline import Runtime, mark_failed, process_document
from docqa.settings import Settings

log = logging.getLogger(__name__)

TASK_NAME = "docqa.process_document"
QUEUE = "ingest"
SMALL_QUEUE = "ingest_small"
# Every worker process runs one procrastinate worker per queue, each with its own heartbeat row.
QUEUES = (QUEUE, SMALL_QUEUE)

_SIZE_SQL = "SELECT size_bytes FROM documents WHERE pk = %(pk)s"

_ORPHANS_SQL = text(
    """
    UPDATE documents SET status = 'failed', stage = 'failed', updated_at = now(),
        error_code = 'processing_interrupted',
        error_message = 'Processing stopped and could not be resumed; please upload the file again.'
    WHERE status IN ('queued', 'processing')
      AND updated_at < now() - make_interval(secs => :grace)
      AND NOT EXISTS (
        SELECT 1 FROM procrastinate_jobs j
        WHERE j.task_name = :task AND j.args ->> 'document_pk' = documents.pk::text
          AND j.status IN ('todo', 'doing'))
    RETURNING pk
    """
)


# While the database is away, the job listener tries again this often (doubling from the first).
LISTEN_RETRY_S = (0.2, 2.0)


class ListeningConnector(procrastinate.PsycopgConnector):
    """procrastinate's psycopg connector, with a LISTEN that outlives a database outage.

    procrastinate (3.10) reconnects its LISTEN connection once when it breaks; if the
    database is still down at that moment the listener task ends with `ConnectorException`.
    Nothing restarts it: the worker's side-task monitor stops watching as soon as any side
    task returns, and the periodic deferrer returns at start when there are no periodic
    tasks. The worker then finds new jobs only by its 5 s poll. Here the listener keeps
    trying until the database answers, then LISTENs again.
    """

    async def listen_notify(self, on_notification: Notify, channels: Iterable[str]) -> None:
        channels = list(channels)
        delay = LISTEN_RETRY_S[0]
        while True:
            started = time.monotonic()
            try:
                await super().listen_notify(on_notification=on_notification, channels=channels)
            except ConnectorException:
                log.warning("job listener lost the database; listening again in %.1f s", delay)
            if time.monotonic() - started > 10 * LISTEN_RETRY_S[1]:
                delay = LISTEN_RETRY_S[0]  # it had been listening well: a new outage
            await asyncio.sleep(delay)
            delay = min(delay * 2, LISTEN_RETRY_S[1])


class JobApp(procrastinate.App):
    """procrastinate's App, knowing which files go to the small-document lane."""

    small_document_bytes = 0


def build_job_app(settings: Settings, url: str) -> JobApp:
    """A procrastinate App bound to `url`, with docqa's task registered."""
    app = JobApp(connector=ListeningConnector(conninfo=url, min_size=1, max_size=4))
    app.small_document_bytes = settings.small_document_kb * 1024
    max_attempts = settings.job_max_attempts

    @app.task(
        name=TASK_NAME,
        queue=QUEUE,
        pass_context=True,
        retry=RetryStrategy(max_attempts=max_attempts - 1, wait=2),
    )
    async def process(context: JobContext, document_pk: str) -> str:
        runtime: Runtime = context.additional_context["runtime"]
        pk = uuid.UUID(document_pk)
        attempts = context.job.attempts
        if attempts >= max_attempts:
            # Earlier attempts died with their worker (stall retries count as attempts too).
            await mark_failed(
                runtime.db,
                pk,
                "worker_crashed",
                f"Processing stopped {attempts} times without finishing (the worker died); "
                "the file may need more memory or time than this server has.",
            )
            return "failed"
        try:
            return await process_document(runtime, pk)
        except Exception:
            log.exception("processing failed", extra={"document_pk": document_pk})
            if attempts + 1 >= max_attempts and not await mark_failed(
                runtime.db,
                pk,
                "processing_error",
                f"Processing failed {max_attempts} times because of an internal error.",
            ):
                return "ready"  # another run of this job finished it
            raise

    return app


async def defer_processing(
    app: procrastinate.App, pk: uuid.UUID, size_bytes: int | None = None
) -> None:
    """Queue document `pk` for processing, in the lane its size calls for (looked up when
    the caller does not give it)."""
    if size_bytes is None:
        rows = await app.connector.execute_query_all_async(_SIZE_SQL, pk=pk)
        size_bytes = int(rows[0]["size_bytes"]) if rows else 0
    small = isinstance(app, JobApp) and size_bytes <= app.small_document_bytes
    queue = SMALL_QUEUE if small else QUEUE
    with contextlib.suppress(AlreadyEnqueued):
        await app.configure_task(TASK_NAME, queue=queue, queueing_lock=str(pk)).defer_async(
            document_pk=str(pk)
        )


async def recover_stalled(app: procrastinate.App, runtime: Runtime) -> None:
    """Retry jobs whose worker stopped sending heartbeats; fail documents that lost their job."""
    settings = runtime.settings
    for job in await app.job_manager.get_stalled_jobs(
        seconds_since_heartbeat=settings.stalled_after_s
    ):
        try:
            await app.job_manager.retry_job(job)
            log.warning("retrying stalled job", extra={"job_id": job.id, "task": job.task_name})
        except Exception:  # another worker retried it first
            log.debug("stalled job already handled", exc_info=True)
    grace = max(60.0, settings.stalled_after_s * 2)
    async with runtime.db.session() as session, session.begin():
        result = await session.execute(_ORPHANS_SQL, {"grace": grace, "task": TASK_NAME})
        for pk in result.scalars():
            await notify_changed(session, pk)
            log.warning("document lost its job", extra={"document_pk": str(pk)})


async def _recovery_loop(app: procrastinate.App, runtime: Runtime) -> None:
    while True:
        try:
            await recover_stalled(app, runtime)
        except Exception:
            log.exception("stalled-job recovery failed; will try again")
        await asyncio.sleep(runtime.settings.heartbeat_interval_s)


async def run_worker(
    app: procrastinate.App, runtime: Runtime, *, install_signal_handlers: bool, name: str
) -> None:
    """Run jobs, in both lanes, until cancelled (or, with signal handlers, until SIGTERM or
    SIGINT: a second one stops at once)."""
    settings = runtime.settings
    options: dict[str, Any] = {
        "additional_context": {"runtime": runtime},
        "install_signal_handlers": False,  # one handler below stops both lanes
        "update_heartbeat_interval": settings.heartbeat_interval_s,
        "stalled_worker_timeout": settings.stalled_after_s,
        "delete_jobs": "successful",
        "shutdown_graceful_timeout": 30.0,
    }
    lanes = [
        asyncio.create_task(
            app.run_worker_async(
                queues=[QUEUE], name=name, concurrency=settings.worker_concurrency, **options
            )
        ),
        asyncio.create_task(
            app.run_worker_async(
                queues=[SMALL_QUEUE],
                name=f"{name}-small",
                concurrency=settings.small_document_concurrency,
                **options,
            )
        ),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM) if install_signal_handlers else ()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    recovery = asyncio.create_task(_recovery_loop(app, runtime))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([*lanes, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        # Cancelling a procrastinate worker stops it gracefully: running jobs may finish.
        for task in (*lanes, recovery, stopping):
            task.cancel()
        outcomes = await asyncio.gather(*lanes, recovery, stopping, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            raise outcome
