"""Rate limits per API key, kept in PostgreSQL so that every API replica enforces the same ones.

* Requests per minute (`asks`, `uploads`): a sliding-window counter. One row per key, bucket and
  minute holds a count. A request is allowed while `previous minute × the share of it still
  inside the last 60 s + this minute + 1 <= limit`, which smooths the double burst a plain fixed
  window allows at its edge. The check and the increment are one conditional `UPDATE`, so two
  replicas racing for the last slot cannot both win. Refused requests are not counted.
* Answer streams open at once (`streams`): a lease row per stream. Taking one holds a
  transaction-scoped advisory lock for the key while it counts the live leases, so the count and
  the insert cannot interleave across replicas. The holder renews its lease every third of
  `stream_lease_s` and deletes it when the stream ends; if the process dies, the lease lapses
  and stops counting after at most `stream_lease_s`.

pyrate-limiter's PostgreSQL bucket was considered: it drives a synchronous psycopg pool (it
would block this event loop), creates its tables itself at run time (Alembic owns this schema),
stores one row per request, and has no notion of concurrent streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from docqa.db.engine import Database
from docqa.db.models import RateCounter, StreamLease
from docqa.errors import RateLimited
from docqa.metrics import RATE_LIMITED
from docqa.settings import Settings

log = logging.getLogger(__name__)

WINDOW_S = 60
# When a key has all its streams open there is no telling when one ends; ask for a short wait.
STREAMS_RETRY_AFTER_S = 5
# A stream's slot is given back just after its last byte is sent, so a client that asks again
# the moment an answer ends may arrive a few milliseconds early: wait this long for a slot.
STREAM_SLOT_WAIT_S = 1.0
# Namespace of the advisory locks taken while counting a key's streams.
_STREAM_LOCK_NS = 0x64717374  # "dqst"

_LIMIT_NAMES = {"asks": "questions", "uploads": "uploads"}


def retry_after(prev: int, curr: int, limit: int, elapsed: float, window: float) -> float:
    """Seconds until one more request fits under `limit`, if nothing else arrives meanwhile.

    `prev` and `curr` are the counts of the previous and current window; `elapsed` is how far
    into the current window we are.
    """
    if prev * (1 - elapsed / window) + curr + 1 <= limit:
        return 0.0
    if curr + 1 <= limit and prev > 0:
        # Within this window, as the previous window's share fades out.
        at = window * (1 - (limit - curr - 1) / prev)
        if at < window:
            return max(0.0, at - elapsed)
    # In the next window, where this window's count becomes the fading one.
    fade = window * (1 - (limit - 1) / curr) if curr > limit - 1 else 0.0
    return window - elapsed + max(0.0, fade)


@dataclass
class Limiter:
    """The limits of `settings`, checked against the shared database."""

    db: Database
    settings: Settings

    async def hit(self, subject: str, bucket: str, limit: int) -> None:
        """Count one request; raise `RateLimited` (and count nothing) when over `limit`/minute."""
        if limit <= 0:
            return
        async with self.db.session() as session, session.begin():
            # The database's clock, so that replicas with drifting clocks share one window.
            now = float(await session.scalar(select(func.extract("epoch", func.now()))) or 0)
            start = int(now // WINDOW_S) * WINDOW_S
            elapsed = now - start
            key = (RateCounter.subject == subject, RateCounter.bucket == bucket)
            await session.execute(
                insert(RateCounter)
                .values(subject=subject, bucket=bucket, window_start=start, count=0)
                .on_conflict_do_nothing()
            )
            prev = await session.scalar(
                select(RateCounter.count).where(*key, RateCounter.window_start == start - WINDOW_S)
            )
            carried = (prev or 0) * (1 - elapsed / WINDOW_S)
            counted = await session.scalar(
                update(RateCounter)
                .where(*key, RateCounter.window_start == start)
                .where(RateCounter.count + 1 + carried <= limit)
                .values(count=RateCounter.count + 1)
                .returning(RateCounter.count)
            )
            if counted is None:
                curr = await session.scalar(
                    select(RateCounter.count).where(*key, RateCounter.window_start == start)
                )
                wait = retry_after(prev or 0, curr or 0, limit, elapsed, WINDOW_S)
            else:
                await session.execute(
                    delete(RateCounter).where(*key, RateCounter.window_start < start - WINDOW_S)
                )
                return
        RATE_LIMITED.labels(limit=bucket).inc()
        seconds = max(1, math.ceil(wait))
        raise RateLimited(
            f"Too many {_LIMIT_NAMES.get(bucket, bucket)}: this key may make {limit} per minute. "
            f"Try again in {seconds} s.",
            retry_after_s=seconds,
            limit=bucket,
        )

    async def asks(self, subject: str) -> None:
        await self.hit(subject, "asks", self.settings.rate_asks_per_minute)

    async def uploads(self, subject: str) -> None:
        await self.hit(subject, "uploads", self.settings.rate_uploads_per_minute)

    @contextlib.asynccontextmanager
    async def stream(self, subject: str) -> AsyncIterator[None]:
        """Hold one of `subject`'s concurrent answer streams for the duration of the block.

        Raises `RateLimited` on entry when all of them are taken.
        """
        limit = self.settings.rate_concurrent_streams
        if limit <= 0:
            yield
            return
        lease_id = await self._acquire(subject, limit)
        renewal = asyncio.create_task(self._renew(lease_id), name="docqa-stream-lease")
        try:
            yield
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
            # Shielded: a cancelled stream must still give its slot back. If this fails, the
            # lease lapses on its own after `stream_lease_s`.
            try:
                await asyncio.shield(self._release(lease_id))
            except Exception:
                log.warning("could not release a stream lease; it will lapse", exc_info=True)

    def _ttl(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.settings.stream_lease_s)

    async def _acquire(self, subject: str, limit: int) -> uuid.UUID:
        deadline = asyncio.get_running_loop().time() + STREAM_SLOT_WAIT_S
        while (lease_id := await self._try_acquire(subject, limit)) is None:
            if asyncio.get_running_loop().time() >= deadline:
                RATE_LIMITED.labels(limit="streams").inc()
                raise RateLimited(
                    f"Too many answers at once: this key may stream {limit} at a time. "
                    "Wait for one to finish.",
                    retry_after_s=STREAMS_RETRY_AFTER_S,
                    limit="streams",
                )
            await asyncio.sleep(0.1)
        return lease_id

    async def _try_acquire(self, subject: str, limit: int) -> uuid.UUID | None:
        async with self.db.session() as session, session.begin():
            await session.execute(
                text("SELECT pg_advisory_xact_lock(:ns, hashtext(:subject))"),
                {"ns": _STREAM_LOCK_NS, "subject": subject},
            )
            await session.execute(
                delete(StreamLease).where(
                    StreamLease.subject == subject, StreamLease.expires_at <= func.now()
                )
            )
            live = await session.scalar(
                select(func.count()).select_from(StreamLease).where(StreamLease.subject == subject)
            )
            if (live or 0) < limit:
                lease_id = uuid.uuid4()
                session.add(
                    StreamLease(id=lease_id, subject=subject, expires_at=func.now() + self._ttl())
                )
                return lease_id
        return None

    async def _renew(self, lease_id: uuid.UUID) -> None:
        while True:
            await asyncio.sleep(self.settings.stream_lease_s / 3)
            try:
                async with self.db.session() as session, session.begin():
                    await session.execute(
                        update(StreamLease)
                        .where(StreamLease.id == lease_id)
                        .values(expires_at=func.now() + self._ttl())
                    )
            except Exception:
                log.warning("could not renew a stream lease", exc_info=True)

    async def _release(self, lease_id: uuid.UUID) -> None:
        async with self.db.session() as session, session.begin():
            await session.execute(delete(StreamLease).where(StreamLease.id == lease_id))
