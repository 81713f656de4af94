"""Unit tests: chunking, upload parsing and type checks, without a server."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from docqa.blobs import LocalBlobStore
from docqa.errors import BadUpload, EmptyFile, ExtractionFailed, UnsupportedType, UploadTooLarge
from docqa.formats.page import Page
from docqa.ingest.chunk import chunk_pages
from docqa.ingest.embed import MODEL_MAX_TOKENS, Tokenizer
from docqa.ingest.extract import Limits, check_has_text, extract_pages
from docqa.upload import check_content_length, claimed_kind, receive_upload

BOUNDARY = "unit-boundary"


def _body(filename: str, payload: bytes, ctype: str = "application/pdf", extra: str = "") -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
            f"\r\nContent-Type: {ctype}\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n{extra}--{BOUNDARY}--\r\n".encode()
    )


async def _chunks(body: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


async def test_receive_upload_streams_hashes_and_commits(store: LocalBlobStore) -> None:
    payload = b"%PDF-1.4\n" + bytes(range(256)) * 40
    field = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="document_id"\r\n\r\nabc-1\r\n'
    received = await receive_upload(
        _chunks(_body("r.pdf", payload, extra=field)),
        f"multipart/form-data; boundary={BOUNDARY}",
        limit_bytes=1 << 20,
        store=store,
    )
    assert received.document_id == "abc-1"
    assert received.file.size_bytes == len(payload)
    assert received.file.sha256 == hashlib.sha256(payload).hexdigest()
    await received.file.writer.commit("aa/key")
    assert (store.root / "aa" / "key").read_bytes() == payload
    assert list((store.root / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("filename", "payload", "ctype", "error"),
    [
        ("big.pdf", b"%PDF-" + b"x" * 2000, "application/pdf", UploadTooLarge),
        ("e.pdf", b"", "application/pdf", EmptyFile),
        ("x.pdf", b"hello", "application/pdf", UnsupportedType),
        ("x.exe", b"MZ....", "application/octet-stream", UnsupportedType),
    ],
)
async def test_receive_upload_rejects_and_leaves_nothing(
    store: LocalBlobStore, filename: str, payload: bytes, ctype: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await receive_upload(
            _chunks(_body(filename, payload, ctype)),
            f"multipart/form-data; boundary={BOUNDARY}",
            limit_bytes=1000,
            store=store,
        )
    assert list((store.root / "tmp").iterdir()) == []


async def test_receive_upload_needs_multipart(store: LocalBlobStore) -> None:
    with pytest.raises(BadUpload):
        await receive_upload(_chunks(b"{}"), "application/json", limit_bytes=10, store=store)


def test_content_length_checked_before_reading() -> None:
    check_content_length(None, 100)
    check_content_length(str(100 + 1000), 100)
    with pytest.raises(UploadTooLarge, match="File too large"):
        check_content_length(str(60 * 1024 * 1024), 50 * 1024 * 1024)


def test_claimed_kind_from_name_and_type() -> None:
    assert claimed_kind("a.PDF", "application/octet-stream") == "pdf"
    assert claimed_kind("notes", "text/markdown") == "markdown"
    assert claimed_kind("readme.md", "text/plain") == "markdown"
    with pytest.raises(UnsupportedType):
        claimed_kind("a.pdf", "text/html")
    with pytest.raises(UnsupportedType):
        claimed_kind("clip.mp4", "video/mp4")
    assert claimed_kind("scan.PNG", "application/octet-stream") == "png"
    assert claimed_kind("photo.jpg", "image/png") == "jpeg"  # one family: the name decides


def test_chunks_fit_the_model_and_keep_their_page() -> None:
    tokenizer = Tokenizer()
    sentence = "The quarterly revenue of the company grew by eleven percent in Europe. "
    pages = [Page(1, sentence * 60), Page(2, "Short page."), Page(3, "")]
    chunks = chunk_pages(pages, tokenizer, max_tokens=120, overlap=16)
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert {c.page_no for c in chunks} == {1, 2}
    for c in chunks:
        assert tokenizer.count(c.text) <= 120 < MODEL_MAX_TOKENS
        page = pages[c.page_no - 1].text
        assert page[c.char_start : c.char_end] == c.text
    first_page = [c for c in chunks if c.page_no == 1]
    assert len(first_page) > 5
    # Chunks end on sentence boundaries where they can.
    assert sum(c.text.endswith(".") for c in first_page[:-1]) >= len(first_page) - 2
    # Consecutive chunks overlap, so no sentence is lost at a cut.
    assert all(a.char_end > b.char_start for a, b in itertools.pairwise(first_page))


def test_image_only_documents_have_no_text() -> None:
    with pytest.raises(ExtractionFailed) as info:
        check_has_text([Page(1, ""), Page(2, " 2 ")])
    assert info.value.code == "no_text"
    check_has_text([Page(1, "Hello, world!")])


def test_extraction_limits_pages_and_time(tmp_path: Path, shared_data: Path) -> None:
    pdf = shared_data / "pdfs" / "pypdf_samples" / "pdflatex-4-pages.pdf"
    with pytest.raises(ExtractionFailed) as info:
        extract_pages(pdf, "pdf", Limits(max_pages=2, timeout_s=30, memory_mb=1024))
    assert info.value.code == "too_many_pages"
    big = shared_data / "pdfs" / "unstructured_example_docs" / "DA-619p.pdf"
    with pytest.raises(ExtractionFailed) as info:
        extract_pages(big, "pdf", Limits(max_pages=5000, timeout_s=0.05, memory_mb=1024))
    assert info.value.code == "timeout"
    pages = extract_pages(pdf, "pdf", Limits(max_pages=10, timeout_s=30, memory_mb=1024))
    assert [p.number for p in pages] == [1, 2, 3, 4]


def test_extraction_memory_budget(tmp_path: Path, shared_data: Path) -> None:
    big = shared_data / "pdfs" / "unstructured_example_docs" / "DA-619p.pdf"
    with pytest.raises(ExtractionFailed) as info:
        extract_pages(big, "pdf", Limits(max_pages=5000, timeout_s=60, memory_mb=40))
    assert info.value.code in ("out_of_memory", "extract_crashed", "corrupt")


def test_blob_keys_cannot_escape(store: LocalBlobStore) -> None:
    with pytest.raises(ValueError, match="escapes"):
        asyncio.run(store.delete("../../etc/passwd"))


async def test_500_body_carries_the_request_id_and_no_internals() -> None:
    import httpx

    from docqa.app import create_app
    from docqa.settings import Settings

    app = create_app(Settings(database_url="postgresql://unused/none"))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/boom", headers={"x-request-id": "req-abc123"})
    assert response.status_code == 500
    assert response.json() == {
        "detail": "Something went wrong on the server.",
        "code": "internal_error",
        "request_id": "req-abc123",
    }
    assert response.headers["x-request-id"] == "req-abc123"
    assert "secret" not in response.text
