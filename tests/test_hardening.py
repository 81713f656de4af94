"""Hardening (issue 9): what a client can send gets a 4xx with the contract's JSON body, never
a 500 and never a dropped connection; file names in any script round-trip exactly; bodies are
authenticated before they are read and bounded as they stream; a stalled upload and a full disk
leave nothing behind; /metrics in keys mode needs its own token. All against real servers."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import psycopg
import pytest

from docqa.client import sse_events
from tests.cluster import cli_create_key
from tests.conftest import wait_terminal
from tests.stack import (
    Stack,
    new_database,
    run_docqa,
    stack_env,
    start_api,
    unique_id,
)

# ---------------------------------------------------------------------------------------------
# A raw HTTP/1.1 connection: exact bytes out, and a way to see whether it survives a response.


class Conn:
    def __init__(self, base_url: str, timeout: float = 30) -> None:
        host, port = base_url.split("//", 1)[1].rsplit("@", 1)[-1].split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        lines = [f"{method} {path} HTTP/1.1", "Host: test"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        return self.response()

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._fill()
                size_line, _, self.buf = self.buf.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    self._fill()
                body, self.buf = body + self.buf[:size], self.buf[size + 2 :]
                if size == 0:
                    break
        else:
            length = int(headers.get("content-length", "0"))
            while len(self.buf) < length:
                self._fill()
            body, self.buf = self.buf[:length], self.buf[length:]
        return int(status_line.split()[1]), headers, body

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buf += data


def multipart(parts: list[tuple[bytes, bytes]], boundary: str = "hardening") -> bytes:
    """`parts` are (raw Content-Disposition parameters after `form-data; `, content)."""
    out = b""
    for disposition, content in parts:
        out += f"--{boundary}\r\n".encode() + b"Content-Disposition: form-data; " + disposition
        if b"filename" in disposition:
            out += b"\r\nContent-Type: text/plain"
        out += b"\r\n\r\n" + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


UPLOAD_TYPE = {"Content-Type": "multipart/form-data; boundary=hardening"}


def assert_contract_error(status: int, body: bytes, expected: int, code: str | None = None) -> None:
    assert status == expected, (status, body)
    error = json.loads(body)
    assert set(error) >= {"detail", "code", "request_id"}, error
    assert error["detail"].endswith("."), error
    if code is not None:
        assert error["code"] == code, error


# ---------------------------------------------------------------------------------------------
# File names (defect 1)

NAMES = ["日本語メモ.txt", "📄 notes 🎉.txt", "Résumé café.txt", "Отчёт.md", "تقرير.txt"]


@pytest.mark.parametrize("name", NAMES)
async def test_raw_utf8_file_name_round_trips_everywhere(stack: Stack, name: str) -> None:
    """Browsers (and httpx, curl) send the name as raw UTF-8 in `filename="..."`."""
    word = f"zyxw{uuid.uuid4().hex[:10]}"
    content = f"The archive keeps the {word} ledger on its first page.\n".encode()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        response = await client.post(
            "/api/v1/upload", files={"file": (name, content, "text/plain")}
        )
        assert response.status_code == 200, response.text
        assert response.json()["filename"] == name
        doc_id = response.json()["document_id"]
        events = []
        async with client.stream("GET", f"/api/v1/documents/{doc_id}/events") as stream:
            async for _, data in sse_events(stream):
                events.append(json.loads(data))
        assert events, "the stream sent the document's state"
        assert {e["filename"] for e in events} == {name}
        doc = await wait_terminal(client, doc_id)
        assert doc["status"] == "ready", doc
        assert doc["filename"] == name
        listed = (await client.get("/api/v1/documents", params={"limit": 200})).json()
        assert name in {d["filename"] for d in listed["documents"] if d["document_id"] == doc_id}
        file = await client.get(f"/api/v1/documents/{doc_id}/file")
        disposition = file.headers["content-disposition"]
        assert disposition.startswith("inline; filename*=UTF-8''"), disposition
        assert unquote(disposition.split("''", 1)[1]) == name
        body = {"question": f"Which ledger is kept? {word}", "document_id": doc_id}
        async with client.stream("POST", "/api/v1/ask", json=body) as answer:
            assert answer.status_code == 200
            sources = [json.loads(d) async for e, d in sse_events(answer) if e == "sources"]
        assert sources[0], "the answer has sources"
        assert {s["filename"] for s in sources[0]} == {name}


async def test_rfc5987_file_name_wins_over_the_plain_one(stack: Stack) -> None:
    conn = Conn(stack.base_url)
    try:
        disposition = (
            b'name="file"; filename="fallback.txt"; '
            b"filename*=UTF-8''%E6%97%A5%E6%9C%AC%E8%AA%9E%20notes.txt"
        )
        body = multipart([(disposition, f"RFC 5987 {uuid.uuid4().hex}\n".encode())])
        status, _, raw = conn.request("POST", "/api/v1/upload", body, UPLOAD_TYPE)
        assert status == 200, raw
        assert json.loads(raw)["filename"] == "日本語 notes.txt"
        # Latin-1 bytes from an old client are read as Latin-1, not replaced.
        body = multipart(
            [(b'name="file"; filename="caf\xe9.txt"', uuid.uuid4().bytes.hex().encode())]
        )
        status, _, raw = conn.request("POST", "/api/v1/upload", body, UPLOAD_TYPE)
        assert status == 200, raw
        assert json.loads(raw)["filename"] == "café.txt"
    finally:
        conn.close()


def test_cli_ingest_keeps_a_utf8_name(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "日本語 notes.txt"
    path.write_text(f"Notes for the CLI, {uuid.uuid4().hex}.\n")
    env = {**stack.env, "DOCQA_SERVER": stack.base_url} if stack.env else None
    result = run_docqa("ingest", str(path), "--server", stack.base_url, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = httpx.get(f"{stack.base_url}/api/v1/documents", params={"limit": 200}).json()
    assert "日本語 notes.txt" in {d["filename"] for d in listed["documents"]}


# ---------------------------------------------------------------------------------------------
# Bad input: 4xx with a sentence, and the connection stays usable (defects 3 and 4)


def _bad_requests() -> list[tuple[str, str, str, bytes, dict[str, str], int]]:
    ask = {"Content-Type": "application/json"}
    deep = "[" * 5000 + "]" * 5000
    fresh = uuid.uuid4().hex.encode()
    return [
        ("GET with NUL id", "GET", "/api/v1/documents/x%00", b"", {}, 422),
        ("DELETE with NUL id", "DELETE", "/api/v1/documents/x%00", b"", {}, 422),
        ("events with NUL id", "GET", "/api/v1/documents/x%00/events", b"", {}, 422),
        ("file with NUL id", "GET", "/api/v1/documents/x%00/file", b"", {}, 422),
        ("id '.'", "GET", "/api/v1/documents/.", b"", {}, 422),
        ("id '..'", "DELETE", "/api/v1/documents/..", b"", {}, 422),
        ("question with NUL", "POST", "/api/v1/ask", b'{"question": "what\\u0000is it"}', ask, 422),
        ("lone surrogate", "POST", "/api/v1/ask", b'{"question": "\\ud800 what"}', ask, 422),
        (
            "nested ask body",
            "POST",
            "/api/v1/ask",
            b'{"question": "q", "history": ' + deep.encode() + b"}",
            ask,
            422,
        ),
        ("not UTF-8", "POST", "/api/v1/ask", b'{"question": "\xff\xfe"}', ask, 422),
        (
            "metadata with NUL",
            "POST",
            "/api/v1/upload",
            multipart(
                [
                    (b'name="file"; filename="m.txt"', fresh),
                    (b'name="metadata"', b'{"k": "\\u0000"}'),
                ]
            ),
            UPLOAD_TYPE,
            422,
        ),
        (
            "metadata 5,000 deep",
            "POST",
            "/api/v1/upload",
            multipart(
                [
                    (b'name="file"; filename="d.txt"', fresh),
                    (b'name="metadata"', ('{"k": ' + deep + "}").encode()),
                ]
            ),
            UPLOAD_TYPE,
            422,
        ),
        (
            "boundary mismatch",
            "POST",
            "/api/v1/upload",
            multipart([(b'name="file"; filename="b.txt"', fresh)], boundary="otherboundary"),
            UPLOAD_TYPE,
            400,
        ),
        (
            "10,000-character file name",
            "POST",
            "/api/v1/upload",
            multipart([(b'name="file"; filename="' + b"a" * 10_000 + b'.txt"', fresh)]),
            UPLOAD_TYPE,
            400,
        ),
        (
            "document_id '.'",
            "POST",
            "/api/v1/upload",
            multipart([(b'name="file"; filename="dot.txt"', fresh), (b'name="document_id"', b".")]),
            UPLOAD_TYPE,
            422,
        ),
        (
            "document_id '..'",
            "POST",
            "/api/v1/upload",
            multipart(
                [(b'name="file"; filename="dot.txt"', fresh), (b'name="document_id"', b"..")]
            ),
            UPLOAD_TYPE,
            422,
        ),
    ]


def test_bad_input_gets_a_4xx_sentence_on_a_connection_that_stays_open(stack: Stack) -> None:
    conn = Conn(stack.base_url)
    try:
        for label, method, path, body, headers, expected in _bad_requests():
            status, _, raw = conn.request(method, path, body, headers)
            assert status == expected, (label, status, raw)
            assert_contract_error(status, raw, expected)
            # The same connection answers the next request: nothing was dropped.
            status, _, raw = conn.request("GET", "/healthz")
            assert status == 200, (label, raw)
    finally:
        conn.close()


def test_malformed_json_is_explained_in_a_sentence(stack: Stack) -> None:
    body = '{"question": "hi",}'
    with pytest.raises(json.JSONDecodeError) as parsed:
        json.loads(body)
    response = httpx.post(
        f"{stack.base_url}/api/v1/ask", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    error = response.json()
    assert error["detail"] == (
        f"The request body is not valid JSON: {parsed.value.msg} "
        f"at line {parsed.value.lineno}, column {parsed.value.colno}."
    )


# ---------------------------------------------------------------------------------------------
# A server with small limits, in keys mode (defects 2, 8 and 9)

METRICS_TOKEN = "metrics-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def guarded(
    pg_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("guarded")
    url = new_database(pg_server_url, "docqa_guarded")
    env = stack_env(
        url,
        folder / "data",
        DOCQA_AUTH="keys",
        DOCQA_MAX_UPLOAD_MB="2",
        DOCQA_MAX_JSON_KB="64",
        DOCQA_BODY_TIMEOUT_S="2",
        DOCQA_METRICS_TOKEN=METRICS_TOKEN,
        DOCQA_RATE_UPLOADS_PER_MINUTE="0",
    )
    key = cli_create_key(env, "guarded")
    api, base_url = start_api(env, folder, "guarded-api")
    try:
        yield {"url": base_url, "key": key, "db": url, "data": folder / "data", "api": api}
    finally:
        api.stop()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_body_without_a_valid_key_is_refused_before_it_is_read(guarded: dict[str, Any]) -> None:
    for credentials in ({}, {"Authorization": "Bearer dq_not-a-key"}):
        conn = Conn(guarded["url"], timeout=10)
        try:
            # Headers only: a server that read the body first would wait for it (then time out).
            head = ["POST /api/v1/ask HTTP/1.1", "Host: t", "Content-Type: application/json"]
            head += [f"{k}: {v}" for k, v in credentials.items()]
            head.append("Content-Length: 60000")
            started = time.monotonic()
            conn.send(("\r\n".join(head) + "\r\n\r\n").encode())
            status, headers, raw = conn.response()
            assert time.monotonic() - started < 1.5, "answered without waiting for the body"
            assert_contract_error(status, raw, 401, "unauthorized")
            assert headers["www-authenticate"].startswith("Bearer")
        finally:
            conn.close()


def test_json_bodies_have_a_small_limit_checked_as_they_stream(guarded: dict[str, Any]) -> None:
    conn = Conn(guarded["url"])
    try:
        # Declared too large: refused before a byte of body is sent.
        head = (
            "POST /api/v1/ask HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {guarded['key']}\r\nContent-Length: {300 * 1024 * 1024}\r\n\r\n"
        )
        conn.send(head.encode())
        status, _, raw = conn.response()
        assert_contract_error(status, raw, 413, "body_too_large")
    finally:
        conn.close()
    # Chunked, so no length to judge by: counted until it passes 512 KB (an ask carries its
    # conversation, so its limit is 8 times DOCQA_MAX_JSON_KB).
    conn = Conn(guarded["url"])
    try:
        head = (
            "POST /api/v1/ask HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {guarded['key']}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        conn.send(head.encode())
        piece = b'{"question": "' + b"a" * 16_000
        conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        status = 0
        with contextlib.suppress(ConnectionError, OSError):
            for _ in range(64):  # up to 1 MB; the answer comes after 512 KB
                conn.send(b"3e80\r\n" + b"a" * 16_000 + b"\r\n")
        status, _, raw = conn.response()
        assert_contract_error(status, raw, 413, "body_too_large")
    finally:
        conn.close()


def test_every_part_of_an_upload_counts_toward_its_limit(guarded: dict[str, Any]) -> None:
    """Many small form fields, chunked: no Content-Length, and no single part over 64 KB."""
    conn = Conn(guarded["url"])
    try:
        head = (
            "POST /api/v1/upload HTTP/1.1\r\nHost: t\r\n"
            "Content-Type: multipart/form-data; boundary=hardening\r\n"
            f"Authorization: Bearer {guarded['key']}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        conn.send(head.encode())
        value = b"v" * 60_000
        with contextlib.suppress(ConnectionError, OSError):
            for i in range(100):  # 6 MB of fields against a 2 MB limit
                part = f'--hardening\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\n'
                data = part.encode() + value + b"\r\n"
                conn.send(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        status, _, raw = conn.response()
        assert status in (400, 413), raw
        assert_contract_error(status, raw, status)
        assert json.loads(raw)["code"] in ("file_too_large", "bad_upload")
    finally:
        conn.close()


def _leftovers(guarded: dict[str, Any]) -> tuple[list[Path], int]:
    tmp = guarded["data"] / "blobs" / "tmp"
    files = [p for p in (guarded["data"] / "blobs").rglob("*") if p.is_file()]
    with psycopg.connect(guarded["db"]) as conn:
        row = conn.execute("SELECT count(*) FROM documents").fetchone()
    assert row is not None
    assert tmp.is_dir()
    return files, int(row[0])


def test_a_stalled_upload_times_out_and_leaves_nothing(guarded: dict[str, Any]) -> None:
    files_before, rows_before = _leftovers(guarded)
    body = multipart([(b'name="file"; filename="stall.txt"', b"s" * 200_000)])
    conn = Conn(guarded["url"], timeout=20)
    try:
        head = (
            "POST /api/v1/upload HTTP/1.1\r\nHost: t\r\n"
            "Content-Type: multipart/form-data; boundary=hardening\r\n"
            f"Authorization: Bearer {guarded['key']}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        conn.send(head.encode() + body[:100_000])
        started = time.monotonic()
        status, _, raw = conn.response()
        waited = time.monotonic() - started
        assert_contract_error(status, raw, 408, "body_timeout")
        assert 1.5 < waited < 10, waited
        # The server lets the connection go soon after (its keep-alive timeout), freeing the fd.
        conn.sock.settimeout(15)
        with contextlib.suppress(ConnectionError, OSError):
            while conn.sock.recv(65536):
                pass
    finally:
        conn.close()
    files_after, rows_after = _leftovers(guarded)
    assert files_after == files_before, "no partial blob"
    assert rows_after == rows_before, "no document row"


def test_header_limits_of_docqa_serve(guarded: dict[str, Any]) -> None:
    # h11 refuses a head once more than the limit of it waits in its buffer for the rest.
    for size in (256 * 1024, 5 * 1024 * 1024):
        conn = Conn(guarded["url"])
        try:
            with contextlib.suppress(ConnectionError, OSError):
                conn.send(
                    b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
                )
            status, _, _ = conn.response()
            assert 400 <= status < 500, (size, status)
        finally:
            conn.close()
    conn = Conn(guarded["url"])
    try:
        status, _, _ = conn.request("GET", "/healthz", headers={"X-Fine": "a" * 8 * 1024})
        assert status == 200, "headers under the limit are fine"
    finally:
        conn.close()


def test_metrics_need_the_metrics_token_in_keys_mode(guarded: dict[str, Any]) -> None:
    url = f"{guarded['url']}/metrics"
    missing = httpx.get(url)
    assert missing.status_code == 401, missing.text
    assert missing.json()["code"] == "unauthorized"
    assert httpx.get(url, headers=_auth("wrong")).status_code == 401
    assert httpx.get(url, headers=_auth(guarded["key"])).status_code == 401, "not an API key"
    scraped = httpx.get(url, headers=_auth(METRICS_TOKEN))
    assert scraped.status_code == 200
    assert "docqa_documents" in scraped.text


def test_metrics_are_closed_in_keys_mode_without_a_token() -> None:
    from docqa.api.metrics import check_metrics_access
    from docqa.errors import MetricsForbidden
    from docqa.settings import Settings

    check_metrics_access(Settings(auth="off"), None)  # loopback, auth off: open as before
    with pytest.raises(MetricsForbidden, match="DOCQA_METRICS_TOKEN"):
        check_metrics_access(Settings(auth="keys", metrics_token=None), f"Bearer {unique_id()}")


# ---------------------------------------------------------------------------------------------
# A full disk (defect 7): the blob directory on a 2 MB tmpfs of the test's own


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({result.stderr.strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_507_and_leaves_nothing(
    pg_server_url: str, small_disk: Path, tmp_path: Path
) -> None:
    url = new_database(pg_server_url, "docqa_disk")
    env = stack_env(url, small_disk, DOCQA_WORKER="false")
    api, base_url = start_api(env, tmp_path, "disk-api")
    try:
        big = b"The disk fills up. " * 200_000  # 3.8 MB of text against 2 MB of disk
        response = httpx.post(
            f"{base_url}/api/v1/upload", files={"file": ("big.txt", big, "text/plain")}, timeout=60
        )
        assert response.status_code == 507, response.text
        error = response.json()
        assert error["code"] == "insufficient_storage"
        assert "no room" in error["detail"]
        leftovers = [p for p in (small_disk / "blobs").rglob("*") if p.is_file()]
        assert leftovers == [], leftovers
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM documents").fetchone() == (0,)
        # Once there is room again, uploads work.
        small = httpx.post(
            f"{base_url}/api/v1/upload",
            files={"file": ("small.txt", b"A small file fits.\n", "text/plain")},
            timeout=60,
        )
        assert small.status_code == 200, small.text
    finally:
        api.stop()
