"""Group writes: many documents' statements of one kind, in one transaction.

The one-page notes of a synced folder move in bursts. Every note with a chunk in an embedding
batch ends when that batch does, and as they end, the worker takes the next notes' jobs one
after another. Each note's own transactions (a claim; at the end its rows, pages, postings and
`ready`, seven statements and a commit) cost the worker's event loop and PostgreSQL more than
its chunks cost the model.

A `Grouped` writer takes items from many documents' tasks and writes them with one call of its
`write` (one transaction) per group. There is no timer: an item that arrives while nothing is
being written is written at once, as it would have been alone, and the items that arrive while a
group is being written form the next group. A group that fails is written again one item at a
time, so that one document's failure (deleted meanwhile, say) stays its own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Grouped(Generic[T, R]):
    """`await grouped(item)` returns `write([... item ...])`'s result for `item`.

    `write` gets a list of items and returns their results in the same order. A group holds at
    most `most` items, and at most `most_weight` of their `weight` (bound parameters, say),
    unless one item alone weighs more.
    """

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[list[R]]],
        *,
        most: int,
        weight: Callable[[T], int] = lambda _: 1,
        most_weight: int | None = None,
    ) -> None:
        self._write_items = write
        self.most = most
        self.weight = weight
        self.most_weight = most_weight if most_weight is not None else most
        self._waiting: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._writer: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        return await future

    async def _write(self) -> None:
        try:
            # Let the tasks resumed in the same moment (the notes of one embedding batch) come
            # in before the first group goes: a few turns of the event loop, no timer.
            for _ in range(8):
                waiting = len(self._waiting)
                await asyncio.sleep(0)
                if len(self._waiting) == waiting:
                    break
            while self._waiting:
                await self._write_group(self._next_group())
        except BaseException:  # cancelled (the worker stops): nobody is left waiting forever
            while self._waiting:
                self._waiting.popleft()[1].cancel()
            raise
        finally:
            self._writer = None

    def _next_group(self) -> list[tuple[T, asyncio.Future[R]]]:
        group: list[tuple[T, asyncio.Future[R]]] = []
        weight = 0
        while self._waiting and len(group) < self.most:
            weight += self.weight(self._waiting[0][0])
            if group and weight > self.most_weight:
                break
            group.append(self._waiting.popleft())
        return group

    async def _write_group(self, group: list[tuple[T, asyncio.Future[R]]]) -> None:
        group = [(item, f) for item, f in group if not f.done()]  # cancelled meanwhile
        if not group:
            return
        try:
            results = await self._write_items([item for item, _ in group])
        except asyncio.CancelledError:
            for _, future in group:
                future.cancel()
            raise
        except Exception as exc:
            if len(group) == 1:
                if not group[0][1].done():
                    group[0][1].set_exception(exc)
                return
            for one in group:
                await self._write_group([one])
            return
        for (_, future), result in zip(group, results, strict=True):
            if not future.done():
                future.set_result(result)
