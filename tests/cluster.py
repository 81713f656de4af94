"""A scaled-out docqa for the tests: two API processes and two workers on a database of their own,
in keys mode, behind a real nginx running deploy/nginx.conf, with the mock model server.

One per test session, started on first use (`cluster` fixture). Its database is separate from the
session stack's, so the session's worker never takes this cluster's jobs: every job here is run
by worker-1 or worker-2, which is what the topology test checks.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psycopg
import pytest

from docqa import auth
from docqa.db.engine import open_database
from docqa.settings import Settings
from tests.gateway import Nginx, nginx_binary, start_nginx
from tests.mock_llm import MockLLM
from tests.stack import Proc, free_port, new_database, run_docqa, stack_env, wait_http

if TYPE_CHECKING:
    from tests.s3server import S3Server

# The `s3_server` fixture, for `s3_cluster` (registered as a plugin, not imported, so that
# pytest rewrites its asserts).
pytest_plugins = ["tests.s3server"]

# Per key. Low enough for the tests to reach, high enough for every other test's traffic.
ASKS_PER_MINUTE = 8
UPLOADS_PER_MINUTE = 8
CONCURRENT_STREAMS = 1
STREAM_LEASE_S = 6
# In keys mode /metrics answers only to this token (DOCQA_METRICS_TOKEN), never to an API key.
METRICS_TOKEN = f"metrics-{uuid.uuid4().hex}"
METRICS_AUTH = {"authorization": f"Bearer {METRICS_TOKEN}"}
WORKERS = ("worker-1", "worker-2")


@dataclass
class Cluster:
    apis: list[str]
    gateway: Nginx | None
    database_url: str
    db_password: str
    data_dir: Path
    log_dir: Path
    mock_llm: MockLLM
    admin_key: str
    procs: dict[str, Proc] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    bucket: str | None = None  # set when the blobs are in S3 (`s3_cluster`), under "blobs/"

    async def new_key(self, name: str, owner: str | None = None) -> auth.NewKey:
        """A fresh key (a new owner unless `owner` is given), made through the key service."""
        db = await open_database(Settings(database_url=self.database_url), pool_size=1)
        try:
            key = await auth.create_key(db, name=name, owner_id=owner)
        finally:
            await db.close()
        self.keys.append(key.secret)
        return key

    def client(self, base_url: str, key: str | None, **kw: object) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60, **kw)  # type: ignore[arg-type]

    def logs(self) -> dict[str, str]:
        out = {name: proc.log_path.read_text(errors="replace") for name, proc in self.procs.items()}
        if self.gateway is not None:
            out["nginx"] = self.gateway.logs()
        return out

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        for proc in reversed(list(self.procs.values())):
            proc.stop()


def cli_create_key(env: dict[str, str], name: str) -> str:
    result = run_docqa("keys", "create", "--name", name, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith(auth.KEY_PREFIX), result.stdout
    assert "\n" not in key, "stdout holds the key alone"
    return key


def with_key(url: str, key: str | None) -> str:
    """`url` with the key as its user name: httpx then sends it as HTTP Basic credentials, which
    docqa accepts, so clients built from a bare base URL (the seed's tests) carry the key too."""
    if not key:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{key}@{rest}"


def _wait_workers(url: str, count: int, procs: list[Proc], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.popen is not None and proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.args} exited early:\n{proc.log_tail()}")
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()
        if row and row[0] >= count:
            return
        time.sleep(0.2)
    raise TimeoutError("the workers did not register")


def start_cluster(
    session_url: str,
    mock: MockLLM,
    base: Path,
    log_dir: Path,
    *,
    shared_data_dir: bool = True,
    **extra_env: str,
) -> Cluster:
    password = f"pw-{uuid.uuid4().hex}"
    # The test server trusts local connections, so the password is never checked; it is there
    # so that the tests can prove no process ever logs it.
    url = new_database(session_url, "docqa_cluster", password=password)
    data_dir = base / "data"
    env = stack_env(
        url,
        data_dir,
        DOCQA_AUTH="keys",
        DOCQA_MIGRATE_ON_START="false",  # migrated once above, as `docqa migrate` does in compose
        DOCQA_LLM_BASE_URL=mock.base_url,
        DOCQA_LLM_MODEL="mock",
        DOCQA_RATE_ASKS_PER_MINUTE=str(ASKS_PER_MINUTE),
        DOCQA_RATE_UPLOADS_PER_MINUTE=str(UPLOADS_PER_MINUTE),
        DOCQA_RATE_CONCURRENT_STREAMS=str(CONCURRENT_STREAMS),
        DOCQA_STREAM_LEASE_S=str(STREAM_LEASE_S),
        DOCQA_METRICS_TOKEN=METRICS_TOKEN,
        **extra_env,
    )
    admin_key = cli_create_key(env, "cluster-admin")

    def own(name: str) -> dict[str, str]:
        # Without a shared data directory, processes share files only through the blob store.
        return env if shared_data_dir else env | {"DOCQA_DATA_DIR": str(data_dir / name)}

    procs: dict[str, Proc] = {}
    try:
        for name in WORKERS:
            procs[name] = Proc(["worker", "--name", name], own(name), log_dir / f"{name}.log")
            procs[name].start()
        ports = [free_port(), free_port()]
        for i, port in enumerate(ports, 1):
            procs[f"api-{i}"] = Proc(
                ["serve", "--host", "127.0.0.1", "--port", str(port)],
                own(f"api-{i}") | {"DOCQA_WORKER": "false"},
                log_dir / f"cluster-api-{i}.log",
            ).start()
        apis = [f"http://127.0.0.1:{port}" for port in ports]
        for i, api in enumerate(apis, 1):
            wait_http(f"{api}/readyz", procs[f"api-{i}"], timeout=120)
        _wait_workers(url, len(WORKERS), [procs[n] for n in WORKERS])
        gateway = None
        if nginx_binary() is not None:
            gateway = start_nginx([a.removeprefix("http://") for a in apis], base / "nginx")
    except BaseException:
        for proc in procs.values():
            proc.stop()
        raise
    return Cluster(
        apis=apis,
        gateway=gateway,
        database_url=url,
        db_password=password,
        data_dir=data_dir,
        log_dir=log_dir,
        mock_llm=mock,
        admin_key=admin_key,
        procs=procs,
        keys=[admin_key],
    )


@pytest.fixture(scope="session")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, mock_llm: MockLLM, pg_server_url: str
) -> Iterator[Cluster]:
    if os.environ.get("DOCQA_TEST_BASE_URL"):
        pytest.skip("the scaled-out cluster runs local processes (not with DOCQA_TEST_BASE_URL)")
    base = tmp_path_factory.mktemp("cluster")
    log_dir = Path(os.environ.get("DOCQA_TEST_LOG_DIR") or base / "logs") / "cluster"
    log_dir.mkdir(parents=True, exist_ok=True)
    running = start_cluster(pg_server_url, mock_llm, base, log_dir)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def s3_cluster(
    tmp_path_factory: pytest.TempPathFactory,
    mock_llm: MockLLM,
    pg_server_url: str,
    s3_server: S3Server,
) -> Iterator[Cluster]:
    """The same cluster with its blobs in a bucket of its own on the S3 server, and no volume
    shared between its processes' data directories: each process gets a directory of its own."""
    if os.environ.get("DOCQA_TEST_BASE_URL"):
        pytest.skip("the scaled-out cluster runs local processes (not with DOCQA_TEST_BASE_URL)")
    base = tmp_path_factory.mktemp("s3-cluster")
    log_dir = Path(os.environ.get("DOCQA_TEST_LOG_DIR") or base / "logs") / "s3-cluster"
    log_dir.mkdir(parents=True, exist_ok=True)
    bucket = s3_server.new_bucket()
    s3_env = s3_server.env(f"s3://{bucket}/blobs")
    running = start_cluster(pg_server_url, mock_llm, base, log_dir, shared_data_dir=False, **s3_env)
    running.bucket = bucket
    yield running
    running.stop()


@pytest.fixture(scope="session")
def gateway(cluster: Cluster) -> Nginx:
    if cluster.gateway is None:
        pytest.skip("nginx is not installed: run scripts/system-deps.sh (Debian package nginx)")
    return cluster.gateway


async def wait_ready(client: httpx.AsyncClient, document_id: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = (await client.get(f"/api/v1/documents/{document_id}")).json()
        if doc["status"] == "ready":
            return
        assert doc["status"] != "failed", doc
        await asyncio.sleep(0.2)
    raise AssertionError(f"{document_id} not ready after {timeout} s")
