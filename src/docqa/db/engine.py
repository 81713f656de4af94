"""Connecting to PostgreSQL: URL forms, the async engine, and the embedded server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from docqa.settings import Settings

log = logging.getLogger(__name__)


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy form of a libpq URL (psycopg 3 driver)."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError("DOCQA_DATABASE_URL must be a postgresql:// URL")


def libpq_url(url: str) -> str:
    """The plain libpq form, for psycopg and procrastinate."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def redacted(url: str) -> str:
    """The URL with its password hidden, for logs."""
    return make_url(sqlalchemy_url(url)).render_as_string(hide_password=True)


class EmbeddedServer:
    """A private PostgreSQL (with pgvector) under the data directory, via `pgserver`."""

    def __init__(self, settings: Settings) -> None:
        self._dir = settings.pg_dir.resolve()
        self._server: Any = None

    def start(self) -> str:
        import pgserver  # imported here: it probes the filesystem on import

        self._dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(  # type: ignore[attr-defined]
            self._dir, cleanup_mode="stop"
        )
        uri: str = self._server.get_uri()
        log.info("embedded PostgreSQL running", extra={"pgdata": str(self._dir)})
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


@dataclass
class Database:
    """One process's handle on the database: its URL, engine and session factory."""

    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    embedded: EmbeddedServer | None = field(default=None)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    async def close(self) -> None:
        await self.engine.dispose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


def resolve_url(settings: Settings) -> tuple[str, EmbeddedServer | None]:
    """The database URL to use, starting the embedded server when none is configured."""
    if settings.database_url:
        return libpq_url(settings.database_url), None
    server = EmbeddedServer(settings)
    return server.start(), server


async def open_database(settings: Settings, *, pool_size: int = 10) -> Database:
    url, embedded = await asyncio.to_thread(resolve_url, settings)
    engine = create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
    )
    return Database(
        url=url,
        engine=engine,
        sessions=async_sessionmaker(engine, expire_on_commit=False),
        embedded=embedded,
    )
