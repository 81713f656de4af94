"""API keys and owners over real HTTP: 401 without a valid key, and two owners who cannot reach
each other's documents through any endpoint (another owner's id is a 404, like a made-up one)."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from docqa.auth import NO_KEYS_SENTENCE, credential_from_header, is_loopback, resolve_mode
from docqa.client import sse_events
from tests.cluster import METRICS_AUTH, Cluster, cli_create_key, wait_ready
from tests.stack import (
    Proc,
    Stack,
    free_port,
    new_database,
    run_docqa,
    stack_env,
    unique_id,
    wait_http,
)


@dataclass
class Party:
    key: str
    owner_id: str
    doc_id: str  # a ready document of theirs, under the id both parties chose
    private_doc: str  # a ready document only they have
    secret_word: str


def _markdown(folder: Path, body: str) -> Path:
    path = folder / f"{uuid.uuid4().hex[:8]}.md"
    path.write_text(body)
    return path


async def _upload(client: httpx.AsyncClient, path: Path, doc_id: str | None = None) -> Any:
    data = {"document_id": doc_id} if doc_id else {}
    with path.open("rb") as f:
        response = await client.post(
            "/api/v1/upload", files={"file": (path.name, f, "text/markdown")}, data=data
        )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
async def parties(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Party, Party, str]:
    """Alice and Bob, each with two ready documents; one id (`shared`) is used by both."""
    folder = tmp_path_factory.mktemp("owners")
    shared = unique_id("shared")
    out: list[Party] = []
    for name, word in (("alice", "quetzalfjord"), ("bob", "marzipanlode")):
        key = await cluster.new_key(name)
        async with cluster.client(cluster.apis[0], key.secret) as client:
            first = _markdown(folder, f"# {name}\n\nThe {word} budget is {len(name)} units.\n")
            await _upload(client, first, shared)
            second = _markdown(folder, f"# {name} notes\n\nOnly {name} knows the {word} plan.\n")
            private = (await _upload(client, second))["document_id"]
            await wait_ready(client, shared)
            await wait_ready(client, private)
        out.append(Party(key.secret, key.owner_id, shared, private, word))
    return out[0], out[1], shared


ENDPOINTS = [
    ("GET", "/api/v1/documents"),
    ("GET", "/api/v1/documents/{id}"),
    ("GET", "/api/v1/documents/{id}/events"),
    ("GET", "/api/v1/documents/{id}/file"),
    ("DELETE", "/api/v1/documents/{id}"),
    ("POST", "/api/v1/upload"),
    ("POST", "/api/v1/ask"),
]


async def _call(client: httpx.AsyncClient, method: str, path: str, doc_id: str) -> httpx.Response:
    url = path.format(id=doc_id)
    if url.endswith("/upload"):
        return await client.post(url, files={"file": ("a.txt", b"hello", "text/plain")})
    if url.endswith("/ask"):
        return await client.post(url, json={"question": "what?", "document_id": doc_id})
    return await client.request(method, url)


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_every_endpoint_needs_a_key(
    cluster: Cluster, parties: tuple[Party, Party, str], method: str, path: str
) -> None:
    alice, _, _ = parties
    for key in (None, "dq_" + "x" * 43, alice.key[:-1]):
        async with cluster.client(cluster.apis[1], key) as client:
            # Alice's real id and a made-up one answer alike: nothing leaks before the key check.
            for doc_id in (alice.private_doc, unique_id()):
                response = await _call(client, method, path, doc_id)
                assert response.status_code == 401, (method, path, key, response.text)
                body = response.json()
                assert body["code"] == "unauthorized"
                assert body["request_id"] == response.headers["x-request-id"]
                challenge = response.headers["www-authenticate"]
                assert challenge.startswith("Bearer")
                assert ('error="invalid_token"' in challenge) == (key is not None)


async def test_health_and_page_need_no_key_and_metrics_their_token(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.apis[0]) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        # Metrics count every owner's documents: the metrics token only (docs/hardening.md).
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers=METRICS_AUTH)).status_code == 200
        # The page itself loads; it asks for a key when the API answers 401.
        assert (await client.get("/")).status_code == 200


async def test_key_works_as_bearer_and_as_basic_credentials(
    cluster: Cluster, parties: tuple[Party, Party, str]
) -> None:
    alice, _, _ = parties
    basic = base64.b64encode(f"{alice.key}:".encode()).decode()
    for header in (f"Bearer {alice.key}", f"bearer  {alice.key}", f"Basic {basic}"):
        async with httpx.AsyncClient(
            base_url=cluster.apis[0], headers={"authorization": header}
        ) as client:
            response = await client.get(f"/api/v1/documents/{alice.private_doc}")
            assert response.status_code == 200, header
    # A URL with the key as user name (what `DOCQA_TEST_AUTH=keys` relies on).
    host = cluster.apis[0].removeprefix("http://")
    async with httpx.AsyncClient(base_url=f"http://{alice.key}@{host}") as client:
        assert (await client.get("/api/v1/documents")).status_code == 200


async def test_other_owners_documents_are_404_like_missing_ones(
    cluster: Cluster, parties: tuple[Party, Party, str]
) -> None:
    alice, bob, _ = parties
    async with cluster.client(cluster.apis[0], bob.key) as client:
        made_up = unique_id()
        for template in ("/api/v1/documents/{}", "/api/v1/documents/{}/file"):
            theirs = await client.get(template.format(alice.private_doc))
            missing = await client.get(template.format(made_up))
            assert theirs.status_code == missing.status_code == 404
            # The same answer, word for word, as for an id that does not exist.
            expected = missing.json() | {"request_id": theirs.json()["request_id"]}
            expected["detail"] = expected["detail"].replace(made_up, alice.private_doc)
            assert theirs.json() == expected
            assert set(theirs.headers) == set(missing.headers)
        events = await client.get(f"/api/v1/documents/{alice.private_doc}/events")
        assert events.status_code == 404
        assert events.json()["code"] == "document_not_found"
        listed = (await client.get("/api/v1/documents", params={"limit": 200})).json()
        ids = {d["document_id"] for d in listed["documents"]}
        assert ids == {bob.doc_id, bob.private_doc}
        assert (await client.delete(f"/api/v1/documents/{alice.private_doc}")).status_code == 404
    async with cluster.client(cluster.apis[1], alice.key) as client:
        doc = await client.get(f"/api/v1/documents/{alice.private_doc}")
        assert doc.status_code == 200, "Bob's delete must not have touched Alice's document"


async def test_same_id_is_each_owners_own_document(
    cluster: Cluster, parties: tuple[Party, Party, str]
) -> None:
    alice, bob, shared = parties
    for party in (alice, bob):
        async with cluster.client(cluster.apis[1], party.key) as client:
            content = await client.get(f"/api/v1/documents/{shared}/file")
            assert content.status_code == 200
            assert party.secret_word.encode() in content.content
            events = await client.get(f"/api/v1/documents/{shared}/events")
            assert events.status_code == 200
            assert events.text.count("event: ready") == 1


async def test_same_bytes_are_not_a_duplicate_across_owners(
    cluster: Cluster, parties: tuple[Party, Party, str], tmp_path: Path
) -> None:
    alice, bob, _ = parties
    async with cluster.client(cluster.apis[0], alice.key) as client:
        theirs = await client.get(f"/api/v1/documents/{alice.private_doc}/file")
    copy = tmp_path / "copy.md"
    copy.write_bytes(theirs.content)
    async with cluster.client(cluster.apis[0], bob.key) as client:
        mine = await _upload(client, copy)
        # Re-uploading bytes another owner has creates Bob's own document, not a link to hers.
        assert mine["duplicate"] is False
        assert mine["document_id"] != alice.private_doc
        assert (await client.delete(f"/api/v1/documents/{mine['document_id']}")).status_code == 204


async def _ask(client: httpx.AsyncClient, payload: dict[str, Any]) -> tuple[int, list[Any], str]:
    sources: list[Any] = []
    text = ""
    async with client.stream("POST", "/api/v1/ask", json=payload) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, [], response.text
        async for event, data in sse_events(response):
            if event == "sources":
                sources = json.loads(data)
            elif event == "message":
                text += data
    return 200, sources, text


async def test_asking_never_reaches_another_owners_documents(
    cluster: Cluster, parties: tuple[Party, Party, str]
) -> None:
    alice, bob, _ = parties
    async with cluster.client(cluster.apis[1], bob.key) as client:
        for payload in (
            {"question": "What is the budget?", "document_id": alice.private_doc},
            {"question": "What is the budget?", "document_ids": [bob.doc_id, alice.private_doc]},
        ):
            status, _, body = await _ask(client, payload)
            assert status == 404, body
            assert json.loads(body)["code"] == "document_not_found"
        # No ids: all of Bob's documents, and only his, even for a question about Alice's word.
        status, sources, _ = await _ask(
            client, {"question": f"What is the {alice.secret_word} plan?", "top_k": 10}
        )
        assert status == 200
        assert sources, "Bob's own documents are found"
        assert {s["document_id"] for s in sources} <= {bob.doc_id, bob.private_doc}
        assert all(alice.secret_word not in s["text"] for s in sources)


async def test_cli_adds_a_key_to_an_existing_owner_and_revokes_it(
    cluster: Cluster, parties: tuple[Party, Party, str]
) -> None:
    alice, _, _ = parties
    env = cluster.procs["api-1"].env
    command = ["keys", "create", "--name", "alice-laptop", "--owner", alice.owner_id]
    created = run_docqa(*command, env=env, timeout=120)
    assert created.returncode == 0, created.stderr
    second = created.stdout.strip()
    key_id = created.stderr.split("Created key ")[1].split()[0]
    async with cluster.client(cluster.apis[0], second) as client:
        listed = (await client.get("/api/v1/documents")).json()["documents"]
        assert alice.private_doc in {d["document_id"] for d in listed}
    listing = run_docqa("keys", "list", env=env)
    rows = [line.split("\t") for line in listing.stdout.splitlines()]
    assert [key_id, "alice-laptop", alice.owner_id, "alice"] in [r[:4] for r in rows]
    assert second not in listing.stdout, "a key is shown only once, at creation"
    revoked = run_docqa("keys", "revoke", key_id, env=env)
    assert revoked.returncode == 0
    async with cluster.client(cluster.apis[0], second) as client:
        response = await client.get("/api/v1/documents")
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
    async with cluster.client(cluster.apis[0], alice.key) as client:
        assert (await client.get("/api/v1/documents")).status_code == 200, "her first key works"
    unknown_owner = run_docqa("keys", "create", "--name", "x", "--owner", "nobody", env=env)
    assert unknown_owner.returncode == 1
    assert "no owner 'nobody'" in unknown_owner.stderr


# --- auth modes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "host", "expected"),
    [
        (None, "127.0.0.1", "off"),
        (None, "localhost", "off"),
        (None, "::1", "off"),
        (None, "127.0.0.5", "off"),
        ("keys", "127.0.0.1", "keys"),
        (None, "0.0.0.0", "keys"),
        (None, "::", "keys"),
        (None, "192.168.1.10", "keys"),
        (None, "docqa.example.com", "keys"),
        ("keys", "0.0.0.0", "keys"),
    ],
)
def test_auth_mode_follows_the_bind_address(
    configured: str | None, host: str, expected: str
) -> None:
    assert resolve_mode(configured, host) == expected


def test_auth_off_is_refused_on_a_public_address() -> None:
    for host in ("0.0.0.0", "10.1.2.3", "::"):
        with pytest.raises(ValueError, match="only allowed on a loopback address"):
            resolve_mode("off", host)
    assert not is_loopback("0.0.0.0")
    assert is_loopback("[::1]")


def test_credentials_are_read_from_bearer_or_basic() -> None:
    def basic(raw: str) -> str:
        return "Basic " + base64.b64encode(raw.encode()).decode()

    assert credential_from_header("Bearer dq_abc") == "dq_abc"
    assert credential_from_header(basic("dq_abc:")) == "dq_abc"
    assert credential_from_header(basic(":dq_abc")) == "dq_abc"
    for bad in (None, "", "Bearer", "Bearer ", "Token dq_abc", "Basic !!!", basic(":")):
        assert credential_from_header(bad) is None
    assert credential_from_header("Bearer " + "x" * 600) is None


def test_serve_refuses_auth_off_on_a_public_address(tmp_path: Path) -> None:
    env = stack_env("postgresql://unused@127.0.0.1:1/x", tmp_path, DOCQA_AUTH="off")
    result = run_docqa(
        "serve", "--host", "0.0.0.0", "--port", str(free_port()), env=env, timeout=60
    )
    assert result.returncode == 2
    assert "DOCQA_AUTH=off is only allowed on a loopback address" in result.stderr
    assert "docqa keys create --name NAME" in result.stderr


async def test_public_address_means_keys_and_needs_one_to_start(
    stack: Stack, pg_server_url: str, tmp_path: Path
) -> None:
    """`serve --host 0.0.0.0` with DOCQA_AUTH unset: keys mode, refused until a key exists."""
    if not stack.local:
        pytest.skip("needs the test's own database")
    url = new_database(pg_server_url, "docqa_cluster", password="unused")
    env = stack_env(url, tmp_path, DOCQA_WORKER="false", DOCQA_MIGRATE_ON_START="false")
    port = free_port()
    args = ["serve", "--host", "0.0.0.0", "--port", str(port)]
    refused = Proc(args, env, tmp_path / "refused.log").start()
    assert refused.popen is not None
    assert refused.popen.wait(120) != 0
    assert NO_KEYS_SENTENCE in refused.log_path.read_text()
    key = cli_create_key(env, "first")
    api = Proc(args, env, tmp_path / "api.log").start()
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", api, timeout=120)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/api/v1/documents")).status_code == 401
            authed = await client.get(
                "/api/v1/documents", headers={"authorization": f"Bearer {key}"}
            )
            assert authed.status_code == 200
            assert authed.json()["documents"] == []
    finally:
        api.stop()


async def test_loopback_without_settings_needs_no_key(stack: Stack) -> None:
    if "@" in stack.base_url or not stack.local:
        pytest.skip("the session stack runs with keys (DOCQA_TEST_AUTH=keys) or remotely")
    async with httpx.AsyncClient(base_url=stack.base_url) as client:
        response = await client.get("/api/v1/documents")
        assert response.status_code == 200
        # With auth off, an Authorization header changes nothing: one local owner.
        other = await client.get("/api/v1/documents", headers={"authorization": "Bearer junk"})
        assert other.status_code == 200
