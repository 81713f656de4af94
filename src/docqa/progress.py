"""Live progress: one LISTEN connection per API process, fanned out to every event stream.

The worker writes progress and calls `pg_notify('docqa_documents', pk)` in the same transaction;
this hub wakes the streams watching that document, which then re-read the row. Streams also
re-read on a timer, so a notification lost during a reconnect only delays an update.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

import psycopg

from docqa.documents import PROGRESS_CHANNEL

log = logging.getLogger(__name__)


class ProgressHub:
    def __init__(self, url: str) -> None:
        self._url = url
        self._watchers: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen_forever(), name="docqa-progress-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @contextlib.asynccontextmanager
    async def watch(self, pk: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever document `pk` changes."""
        self.start()
        event = asyncio.Event()
        self._watchers[pk].add(event)
        try:
            yield event
        finally:
            self._watchers[pk].discard(event)
            if not self._watchers[pk]:
                del self._watchers[pk]

    async def _listen_forever(self) -> None:
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {PROGRESS_CHANNEL}")
                    delay = 0.5
                    # Wake everyone once: anything may have changed while we were away.
                    self._wake_all()
                    async for notify in conn.notifies():
                        for event in self._watchers.get(notify.payload, ()):
                            event.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("progress listener lost its connection; reconnecting", exc_info=True)
                await asyncio.sleep(delay)
                # Short, so that streams are woken by NOTIFY again soon after an outage ends.
                delay = min(delay * 2, 2.0)

    def _wake_all(self) -> None:
        for events in self._watchers.values():
            for event in events:
                event.set()
