"""The document service over real HTTP: upload, progress, status, download, delete, limits."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import unique_copy, upload_file, wait_terminal
from tests.stack import Stack, unique_id

MB = 1024 * 1024


async def test_upload_then_ready_with_pages_and_chunks(
    client: httpx.AsyncClient, fresh_pdf: Path
) -> None:
    sample_pdf = fresh_pdf
    doc_id = unique_id()
    response = await upload_file(client, sample_pdf, document_id=doc_id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "document_id": doc_id,
        "status": "queued",
        "filename": sample_pdf.name,
        "size_bytes": sample_pdf.stat().st_size,
        "sha256": hashlib.sha256(sample_pdf.read_bytes()).hexdigest(),
        "duplicate": False,
    }
    doc = await wait_terminal(client, doc_id)
    assert doc["status"] == "ready", doc
    assert doc["page_count"] == 4
    assert doc["chunk_count"] >= 4
    assert doc["progress"] == {
        "stage": "ready",
        "done": doc["chunk_count"],
        "total": doc["chunk_count"],
        "percent": 100.0,
    }
    assert doc["error"] is None


async def _sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    event, data = "message", []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


async def test_events_stream_reaches_ready(
    client: httpx.AsyncClient, shared_data: Path, tmp_path: Path
) -> None:
    pdf = unique_copy(shared_data / "pdfs" / "pdfminer_samples" / "naacl06-shinyama.pdf", tmp_path)
    doc_id = unique_id()
    assert (await upload_file(client, pdf, document_id=doc_id)).status_code == 200
    seen: list[tuple[str, dict[str, object]]] = []
    async with client.stream("GET", f"/api/v1/documents/{doc_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event, data in _sse_events(response):
            seen.append((event, json.loads(data)))
    names = [e for e, _ in seen]
    assert names[-1] == "ready", names
    assert set(names[:-1]) <= {"progress"}
    percents = [d["progress"]["percent"] for _, d in seen]  # type: ignore[index]
    assert percents == sorted(percents), "progress never goes backwards"
    # A client that connects after the end still gets the final state at once.
    async with client.stream("GET", f"/api/v1/documents/{doc_id}/events") as late:
        events = [e async for e, _ in _sse_events(late)]
    assert events == ["ready"]


def _multipart_60mb() -> tuple[bytes, bytes]:
    boundary = b"docqa-test-boundary"
    head = (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="large.pdf"\r\n'
        b"Content-Type: application/pdf\r\n\r\n"
    )
    return boundary, head


async def test_413_with_content_length(client: httpx.AsyncClient) -> None:
    files = {"file": ("large.pdf", b"x" * (60 * MB), "application/pdf")}
    response = await client.post("/api/v1/upload", files=files)
    assert response.status_code == 413
    assert "File too large" in response.json()["detail"]
    assert response.json()["code"] == "file_too_large"


async def test_413_without_content_length(client: httpx.AsyncClient) -> None:
    boundary, head = _multipart_60mb()

    async def body() -> AsyncIterator[bytes]:
        yield head
        block = b"%PDF-1.4\n" + b"x" * (MB - 9)
        for _ in range(60):
            yield block
            block = b"x" * MB
        yield b"\r\n--" + boundary + b"--\r\n"

    response = await client.post(
        "/api/v1/upload",
        content=body(),
        headers={"content-type": f"multipart/form-data; boundary={boundary.decode()}"},
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert "File too large" in response.text


async def test_unsupported_and_mismatched_types_get_415(client: httpx.AsyncClient) -> None:
    exe = await client.post(
        "/api/v1/upload",
        files={"file": ("tool.exe", b"MZ\x90\x00" + b"\x00" * 100, "application/x-msdownload")},
    )
    assert exe.status_code == 415
    assert exe.json()["code"] == "unsupported_type"
    fake_pdf = await client.post(
        "/api/v1/upload", files={"file": ("report.pdf", b"just some text", "application/pdf")}
    )
    assert fake_pdf.status_code == 415
    assert "not" in fake_pdf.json()["detail"]
    png_as_text = await client.post(
        "/api/v1/upload",
        files={"file": ("notes.txt", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "text/plain")},
    )
    assert png_as_text.status_code == 415


async def test_empty_file_gets_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/upload", files={"file": ("empty.pdf", b"", "application/pdf")}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "empty_file"
    assert body["request_id"] == response.headers["x-request-id"]


async def test_bad_document_id_and_metadata_get_422(client: httpx.AsyncClient) -> None:
    files = {"file": ("a.txt", b"hello there", "text/plain")}
    bad_id = await client.post("/api/v1/upload", files=files, data={"document_id": "no spaces"})
    assert bad_id.status_code == 422
    bad_meta = await client.post("/api/v1/upload", files=files, data={"metadata": "[1, 2]"})
    assert bad_meta.status_code == 422


async def test_duplicate_upload_returns_existing_document(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    path = tmp_path / "notes.md"
    path.write_text(f"# Notes {unique_id()}\n\nThe quarterly plan is to grow by ten percent.\n")
    first = await upload_file(client, path, content_type="text/markdown")
    assert first.status_code == 200
    second = await upload_file(client, path, content_type="text/markdown")
    assert second.status_code == 200
    assert second.json()["duplicate"] is True
    assert second.json()["document_id"] == first.json()["document_id"]
    # A client-chosen id that is taken by different bytes is a conflict, not an overwrite.
    other = tmp_path / "other.txt"
    other.write_text(f"something else {unique_id()}")
    clash = await upload_file(
        client, other, document_id=first.json()["document_id"], content_type="text/plain"
    )
    assert clash.status_code == 409
    assert clash.json()["code"] == "document_id_taken"


async def test_list_is_paginated_and_filtered(client: httpx.AsyncClient, tmp_path: Path) -> None:
    ids = []
    for i in range(3):
        path = tmp_path / f"n{i}.txt"
        path.write_text(f"page {i} of the list test {unique_id()}")
        ids.append(
            (await upload_file(client, path, content_type="text/plain")).json()["document_id"]
        )
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/documents", params=params)).json()
        assert len(page["documents"]) <= 2
        seen += [d["document_id"] for d in page["documents"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert set(ids) <= set(seen)
    assert len(seen) == len(set(seen)), "no document appears on two pages"
    bad = await client.get("/api/v1/documents", params={"status": "nonsense"})
    assert bad.status_code == 422


async def test_file_download_returns_original_bytes(
    client: httpx.AsyncClient, fresh_pdf: Path
) -> None:
    doc_id = unique_id()
    await upload_file(client, fresh_pdf, document_id=doc_id)
    response = await client.get(f"/api/v1/documents/{doc_id}/file")
    assert response.status_code == 200
    assert response.content == fresh_pdf.read_bytes()
    assert response.headers["content-type"] == "application/pdf"


async def test_unknown_document_is_404(client: httpx.AsyncClient) -> None:
    for path in ("", "/events", "/file"):
        response = await client.get(f"/api/v1/documents/{unique_id()}{path}")
        assert response.status_code == 404
        assert response.json()["code"] == "document_not_found"
    assert (await client.delete(f"/api/v1/documents/{unique_id()}")).status_code == 404


async def test_delete_removes_file_and_chunks(
    client: httpx.AsyncClient, fresh_pdf: Path, stack: Stack, database_url: str
) -> None:
    path = fresh_pdf
    doc_id = unique_id()
    await upload_file(client, path, document_id=doc_id)
    assert (await wait_terminal(client, doc_id))["status"] == "ready"
    with psycopg.connect(database_url) as conn:
        pk, blob_key = conn.execute(
            "SELECT pk, blob_key FROM documents WHERE document_id = %s", (doc_id,)
        ).fetchone()
        assert conn.execute("SELECT count(*) FROM chunks WHERE document_pk = %s", (pk,)).fetchone()[
            0
        ]
    assert stack.data_dir is not None
    blob = stack.data_dir / "blobs" / blob_key
    assert blob.exists()
    response = await client.delete(f"/api/v1/documents/{doc_id}")
    assert response.status_code == 204
    assert not blob.exists()
    with psycopg.connect(database_url) as conn:
        assert (
            conn.execute("SELECT count(*) FROM chunks WHERE document_pk = %s", (pk,)).fetchone()[0]
            == 0
        )
        assert (
            conn.execute("SELECT count(*) FROM pages WHERE document_pk = %s", (pk,)).fetchone()[0]
            == 0
        )
    assert (await client.get(f"/api/v1/documents/{doc_id}")).status_code == 404


def _count(conn: psycopg.Connection[tuple[int]], table: str, pk: object) -> int:
    query = {
        "chunks": "SELECT count(*) FROM chunks WHERE document_pk = %s",
        "pages": "SELECT count(*) FROM pages WHERE document_pk = %s",
    }[table]
    row = conn.execute(query, (pk,)).fetchone()
    assert row is not None
    return int(row[0])


async def test_aborted_upload_leaves_nothing_behind(
    stack: Stack, database_url: str, client: httpx.AsyncClient
) -> None:
    assert stack.data_dir is not None
    tmp_dir = stack.data_dir / "blobs" / "tmp"
    boundary, head = _multipart_60mb()
    before = await client.get("/api/v1/documents", params={"limit": 200})

    async def body() -> AsyncIterator[bytes]:
        yield head + b"%PDF-1.4\n" + b"x" * MB
        raise ConnectionAbortedError("client gave up")

    with pytest.raises(ConnectionAbortedError):
        await client.post(
            "/api/v1/upload",
            content=body(),
            headers={"content-type": f"multipart/form-data; boundary={boundary.decode()}"},
        )
    for _ in range(50):  # the server notices the dropped connection asynchronously
        if not list(tmp_dir.iterdir()):
            break
        await asyncio.sleep(0.1)
    assert list(tmp_dir.iterdir()) == []
    after = await client.get("/api/v1/documents", params={"limit": 200})
    assert after.json()["documents"] == before.json()["documents"]


async def test_health_endpoints(client: httpx.AsyncClient) -> None:
    health = (await client.get("/healthz")).json()
    assert (health["status"], health["service"]) == ("ok", "docqa")
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
