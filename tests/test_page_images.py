"""`GET /api/v1/documents/{id}/pages/{n}/image` over real HTTP: a PDF page and an image's frames
drawn at a bounded width, cached in the blob store (a second request reads the stored image and
draws nothing), revalidated with ETags, scoped to the owner, gone with the document, and a clear
404 for formats without page images. The renderer's bounds are also checked directly."""

from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from PIL import Image

from docqa import render
from tests.conftest import KeysApi, upload_file, wait_terminal
from tests.pdfgen import make_pdf
from tests.stack import Stack

FORMATS = "formats"


async def _ready(
    client: httpx.AsyncClient, path: Path, content_type: str = "application/pdf"
) -> dict[str, Any]:
    response = await upload_file(client, path, content_type=content_type)
    assert response.status_code == 200, response.text
    doc = await wait_terminal(client, response.json()["document_id"], timeout=300)
    assert doc["status"] == "ready", doc
    return doc


def _image(response: httpx.Response) -> Image.Image:
    return Image.open(io.BytesIO(response.content))


def _cache_dir(stack: Stack, document_id: str) -> Path:
    """Where the stack's blob store keeps a document's page images: blobs/pages/<pk hex>/."""
    assert stack.database_url is not None
    assert stack.data_dir is not None
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute(
            "SELECT pk FROM documents WHERE document_id = %s", (document_id,)
        ).fetchone()
    assert row is not None
    return stack.data_dir / "blobs" / "pages" / row[0].hex


async def _stored(folder: Path, pattern: str) -> Path:
    for _ in range(100):
        found = list(folder.glob(pattern))
        if found:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {pattern} in {folder}")


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["request_id"]
    return body


async def test_a_pdf_page_is_drawn_once_then_served_from_the_cache(
    client: httpx.AsyncClient, stack: Stack, fresh_pdf: Path
) -> None:
    if not stack.local:
        pytest.skip("reads the stack's blob store")
    doc = await _ready(client, fresh_pdf)
    url = f"/api/v1/documents/{doc['document_id']}/pages/2/image"
    first = await client.get(url, params={"width": 1000})
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "image/webp"
    # Kept, but checked with the server each time: the URL alone does not name the bytes.
    assert first.headers["cache-control"] == "private, no-cache"
    etag = first.headers["etag"]
    assert etag.startswith('"')
    image = _image(first)
    assert image.format == "WEBP"
    assert abs(image.width - 1000) <= 1
    assert image.height > image.width  # a portrait page

    # The stored image is what the second request gets: replaced by a marker, the marker comes
    # back, so nothing was drawn again. (It is stored as the response leaves.)
    stored = await _stored(_cache_dir(stack, doc["document_id"]), "2-1000-*.webp")
    assert stored.read_bytes() == first.content
    marker = io.BytesIO()
    Image.new("RGB", (7, 9), "red").save(marker, format="WEBP")
    stored.write_bytes(marker.getvalue())
    second = await client.get(url, params={"width": 1000})
    assert second.status_code == 200
    assert second.content == marker.getvalue()
    assert second.headers["etag"] == etag

    not_modified = await client.get(url, params={"width": 1000}, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    listed = await client.get(
        url, params={"width": 1000}, headers={"If-None-Match": f'"x", {etag}'}
    )
    assert listed.status_code == 304
    stale = await client.get(url, params={"width": 1000}, headers={"If-None-Match": '"old"'})
    assert stale.status_code == 200

    png = await client.get(url, params={"width": 400, "format": "png"})
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert _image(png).format == "PNG"
    assert png.headers["etag"] not in (etag, first.headers["etag"])

    # With the version the page's text gives, the URL names these bytes: kept for good.
    version = (await client.get(url.removesuffix("/image"))).json()["image_version"]
    assert version
    kept = await client.get(url, params={"width": 1000, "v": version})
    assert kept.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert kept.headers["etag"] == etag
    other = await client.get(url, params={"width": 1000, "v": "0" * 16})
    assert other.headers["cache-control"] == "private, no-cache"

    _error(await client.get(url.replace("/2/", "/9/")), 404, "page_not_found")
    bad = await client.get(url, params={"format": "gif"})
    _error(bad, 422, "invalid_request")


async def test_a_reused_id_gets_new_images_and_a_new_version(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """An id is free again once its document is deleted: the same image URL then shows the new
    document, with another ETag and version, so no cache can hand out the old page."""
    doc_id = f"reused-{uuid.uuid4().hex[:8]}"
    url = f"/api/v1/documents/{doc_id}/pages/1/image"
    seen = []
    for words in ("The first edition of the page.", "A second, different page entirely."):
        path = tmp_path / f"{uuid.uuid4().hex[:6]}.pdf"
        path.write_bytes(make_pdf([f"{words} {uuid.uuid4().hex}"]))
        response = await upload_file(client, path, document_id=doc_id)
        assert response.status_code == 200, response.text
        assert (await wait_terminal(client, doc_id))["status"] == "ready"
        image = await client.get(url, params={"width": 500})
        text = (await client.get(url.removesuffix("/image"))).json()
        seen.append((image.headers["etag"], image.content, text["image_version"]))
        assert (await client.delete(f"/api/v1/documents/{doc_id}")).status_code == 204
    (etag1, bytes1, version1), (etag2, bytes2, version2) = seen
    assert etag1 != etag2
    assert bytes1 != bytes2
    assert version1 != version2


async def test_width_is_kept_within_bounds(client: httpx.AsyncClient, fresh_pdf: Path) -> None:
    doc = await _ready(client, fresh_pdf)
    url = f"/api/v1/documents/{doc['document_id']}/pages/1/image"
    for asked, served in ((1, 100), (1234, 1250), (10_000, 2000)):
        response = await client.get(url, params={"width": asked, "format": "png"})
        assert response.status_code == 200, response.text
        assert response.headers["x-image-width"] == str(served)
        assert abs(_image(response).width - served) <= 1
    for bad in ("0", "10001", "wide"):
        _error(await client.get(url, params={"width": bad}), 422, "invalid_request")


def test_tall_pages_and_images_are_bounded(tmp_path: Path) -> None:
    """A page (or image) ten times taller than wide is drawn at most four times as tall as it
    is wide: narrower, never stretched."""
    tall_pdf = make_pdf(["A very tall page with a line of text."])
    tall_pdf = tall_pdf.replace(b"/MediaBox [0 0 612 792]", b"/MediaBox [0 0 100 999]")
    pdf = tmp_path / "tall.pdf"
    pdf.write_bytes(tall_pdf)
    drawn = Image.open(io.BytesIO(render.render_page(pdf, "pdf", 1, 1000, "png")))
    assert drawn.height <= 4 * 1000
    assert abs(drawn.width / drawn.height - 100 / 999) < 0.01

    png = tmp_path / "strip.png"
    Image.new("RGB", (300, 3000), "white").save(png)
    drawn = Image.open(io.BytesIO(render.render_page(png, "image", 1, 1000, "webp")))
    assert drawn.size == (400, 4000)


async def test_a_scan_with_a_huge_image_on_a_tiny_page(
    client: httpx.AsyncClient, shared_data: Path
) -> None:
    """ocrmypdf's 2400dpi.pdf: a 4000 × 2864 image on a 120 × 86 pt page, drawn within bounds."""
    path = shared_data / FORMATS / "ocrmypdf" / "2400dpi.pdf"
    doc = await _ready(client, path)
    url = f"/api/v1/documents/{doc['document_id']}/pages/1/image"
    for width in (100, 2000):
        response = await client.get(url, params={"width": width, "format": "png"})
        assert response.status_code == 200, response.text
        image = _image(response)
        assert abs(image.width - width) <= 1
        assert abs(image.height / image.width - 85.92 / 120) < 0.01


async def test_image_documents_serve_their_frames(
    client: httpx.AsyncClient, shared_data: Path
) -> None:
    """A two-frame TIFF is two pages; each page image is its frame, at the frame's proportions."""
    path = shared_data / FORMATS / "docling" / "2206.01062.tif"
    doc = await _ready(client, path, content_type="image/tiff")
    assert doc["page_count"] == 2
    frames = Image.open(path)
    for number in (1, 2):
        frames.seek(number - 1)
        url = f"/api/v1/documents/{doc['document_id']}/pages/{number}/image"
        response = await client.get(url, params={"width": 600, "format": "png"})
        assert response.status_code == 200, response.text
        image = _image(response)
        assert image.width == 600
        assert abs(image.height / image.width - frames.height / frames.width) < 0.01
    missing = f"/api/v1/documents/{doc['document_id']}/pages/3/image"
    _error(await client.get(missing), 404, "page_not_found")


@pytest.mark.parametrize(
    ("relative", "content_type"),
    [
        ("office/docling/lorem_ipsum.docx", "application/octet-stream"),
        ("office/docling/wiki_duck.html", "text/html"),
        ("formats/ocrmypdf/linn.txt", "text/plain"),
    ],
)
async def test_formats_without_page_images_say_so(
    client: httpx.AsyncClient, shared_data: Path, relative: str, content_type: str
) -> None:
    # The same bytes uploaded before (by another test) are the same document: fine here.
    doc = await _ready(client, shared_data / relative, content_type=content_type)
    base = f"/api/v1/documents/{doc['document_id']}/pages/1"
    body = _error(await client.get(f"{base}/image"), 404, "no_page_image")
    assert "as text" in body["detail"]
    text = await client.get(base)
    assert text.status_code == 200
    assert text.json()["text"].strip()
    assert text.json()["image_version"] is None


async def test_another_owner_gets_404(keys_api: KeysApi, fresh_pdf: Path) -> None:
    alice_key, bob_key = await keys_api.new_key("alice"), await keys_api.new_key("bob")
    async with keys_api.client(alice_key) as alice, keys_api.client(bob_key) as bob:
        doc = await _ready(alice, fresh_pdf)
        url = f"/api/v1/documents/{doc['document_id']}/pages/1/image"
        mine = await alice.get(url)
        assert mine.status_code == 200
        _error(await bob.get(url), 404, "document_not_found")
        # Not even a 304 for a tag the owner's copy carries.
        revalidate = await bob.get(url, headers={"If-None-Match": mine.headers["etag"]})
        _error(revalidate, 404, "document_not_found")
        async with httpx.AsyncClient(base_url=keys_api.url) as nobody:
            _error(await nobody.get(url), 401, "unauthorized")


async def test_deleting_a_document_deletes_its_page_images(
    client: httpx.AsyncClient, stack: Stack, fresh_pdf: Path
) -> None:
    if not stack.local:
        pytest.skip("reads the stack's blob store")
    doc = await _ready(client, fresh_pdf)
    for page in (1, 2):
        url = f"/api/v1/documents/{doc['document_id']}/pages/{page}/image"
        assert (await client.get(url, params={"width": 300})).status_code == 200
    cached = _cache_dir(stack, doc["document_id"])
    await _stored(cached, "1-*")
    await _stored(cached, "2-*")
    assert (await client.delete(f"/api/v1/documents/{doc['document_id']}")).status_code == 204
    assert not cached.exists()
