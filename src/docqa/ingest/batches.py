"""Embedding batches filled across documents: one model, many documents in flight.

A worker processes many small documents at once (a synced folder of notes or tickets: two or
three chunks each). Embedded one document at a time, the model ran batches of two or three
chunks, and a pass over three chunks costs nearly as much fixed time as one over 64 (thread
hand-offs, and the model's threads meeting after every layer: under load a 2-chunk pass took
seconds; docs/ingestion.md). `EmbedQueue` collects the chunk texts of every document waiting
for vectors and gives the model up to `batch_size` at a time, oldest first, splitting a
document's texts across batches when they do not fit; each document gets back its own vectors,
in its own order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from docqa.ingest.embed import Embedder, Vectors


@dataclass(eq=False)
class _Request:
    texts: list[str]
    future: asyncio.Future[Vectors]
    vectors: Vectors
    taken: int = 0  # texts handed to the model so far
    done: int = 0  # vectors back


@dataclass(eq=False)
class _Part:
    request: _Request
    start: int
    end: int


@dataclass
class QueueStats:
    batches: int = 0
    texts: int = 0
    sizes: list[int] = field(default_factory=list)  # the last batches' sizes, for tests


class EmbedQueue:
    """Embeds the texts of many callers in shared batches, `lanes` batches at a time.

    `embed()` may be awaited from any number of tasks on one event loop. The batches run on
    threads (the embedder blocks); a new batch is taken as soon as a lane is free, so what
    waited meanwhile fills it, and what waits is shared out when it is less than a batch per
    free lane. A caller that is cancelled leaves its texts out of later
    batches. A failed batch fails every caller with texts in it.
    """

    def __init__(self, embedder: Embedder, batch_size: int, lanes: int = 1) -> None:
        self.embedder = embedder
        self.batch_size = batch_size
        self.lanes = max(1, lanes)
        self.stats = QueueStats()
        self._waiting: deque[_Request] = deque()
        self._wake: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None

    async def embed(self, texts: list[str]) -> Vectors:
        """Unit vectors for `texts`, in order."""
        if not texts:
            return np.empty((0, self.embedder.dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        request = _Request(
            texts, loop.create_future(), np.empty((len(texts), self.embedder.dim), np.float32)
        )
        self._waiting.append(request)
        self._start(loop).set()
        return await request.future

    def _start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        """The runner on this loop, started on first use (or again on a new loop)."""
        if self._runner is None or self._runner.done() or self._runner.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._runner = loop.create_task(self._run(self._wake), name="docqa-embed-queue")
        assert self._wake is not None
        return self._wake

    def _size(self, idle: int) -> int:
        """The next batch's size, with `idle` lanes free: a full batch, or an equal share of
        what waits when that is less than a batch per free lane, so that a document's lone
        batch still keeps every core busy."""
        waiting = sum(len(r.texts) - r.taken for r in self._waiting if not r.future.done())
        return max(1, min(self.batch_size, -(-waiting // max(1, idle))))

    def _take(self, room: int) -> list[_Part]:
        """The next batch: up to `room` texts from the oldest requests."""
        parts: list[_Part] = []
        while room and self._waiting:
            request = self._waiting[0]
            if request.future.done():  # cancelled, or failed with an earlier batch
                self._waiting.popleft()
                continue
            end = min(len(request.texts), request.taken + room)
            parts.append(_Part(request, request.taken, end))
            room -= end - request.taken
            request.taken = end
            if end == len(request.texts):
                self._waiting.popleft()
        return parts

    async def _run(self, wake: asyncio.Event) -> None:
        free = asyncio.Semaphore(self.lanes)
        running: set[asyncio.Task[None]] = set()

        def ended(task: asyncio.Task[None]) -> None:
            running.discard(task)
            free.release()

        try:
            while True:
                if not self._waiting:
                    wake.clear()
                    await wake.wait()
                    continue
                await free.acquire()
                parts = self._take(self._size(idle=self.lanes - len(running)))
                if not parts:
                    free.release()
                    continue
                task = asyncio.get_running_loop().create_task(self._batch(parts))
                running.add(task)
                task.add_done_callback(ended)
        finally:
            for task in list(running):
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _batch(self, parts: list[_Part]) -> None:
        texts = [t for p in parts for t in p.request.texts[p.start : p.end]]
        try:
            vectors = await asyncio.to_thread(self.embedder.embed_documents, texts)
        except asyncio.CancelledError:
            for part in parts:
                part.request.future.cancel()
            raise
        except Exception as exc:
            for part in parts:
                if not part.request.future.done():
                    part.request.future.set_exception(exc)
            return
        self._record(len(texts))
        offset = 0
        for part in parts:
            request, n = part.request, part.end - part.start
            request.vectors[part.start : part.end] = vectors[offset : offset + n]
            offset += n
            request.done += n
            if request.done == len(request.texts) and not request.future.done():
                request.future.set_result(request.vectors)

    def _record(self, size: int) -> None:
        self.stats.batches += 1
        self.stats.texts += size
        self.stats.sizes = [*self.stats.sizes[-99:], size]

    async def aclose(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
