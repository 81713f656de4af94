"""OCR with the real Tesseract: which pages need it, what it reads (text, word boxes, languages),
the settings that turn it off or refuse a missing language, and the real stack reading scans,
images and mixed PDFs, and refusing hostile images with a code while the worker keeps serving."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from docqa import formats
from docqa.errors import ExtractionFailed
from docqa.formats import ocr, pdf, pdf_ocr
from docqa.formats.page import Page, ReadContext, clean_text
from docqa.ingest.extract import Limits, ReadOptions, check_has_text, extract_pages
from tests.asking import ask, fold
from tests.conftest import upload_file, wait_terminal
from tests.pdfgen import make_pdf
from tests.stack import run_docqa, unique_id

SCAN = "formats/markitdown/MEDRPT-2024-PAT-3847_medical_report_scan.pdf"  # 3 scanned pages
# The image-only PDFs of ../shared/data/pdfs (MANIFEST: no text in the first 50 pages, pages
# present, no password), and the words OCR must find in them; None: the pages hold no words
# (a photo, a blank page, 4-point images), so OCR rightly finds nothing.
IMAGE_ONLY = {
    "pypdf_samples/imagemagick-CCITTFaxDecode.pdf": None,
    "pypdf_samples/imagemagick-images.pdf": None,
    "pypdf_samples/cmyk-image.pdf": None,
    "pdfminer_samples/pdf-with-jbig2.pdf": "It Doesn't",
    "pdfjs_test/empty_protected.pdf": None,
    "pdfjs_test/PDFBOX-3148-2-fuzzed.pdf": None,
    "pdfjs_test/issue5481.pdf": None,
    "unstructured_example_docs/loremipsum-flat.pdf": "Lorem ipsum dolor sit amet",
    "docling_tests/ocr_test.pdf": "Docling bundles PDF document conversion",
}


def _read(path: Path, **options: Any) -> list[Page]:
    return list(pdf.read(path, ReadContext(max_pages=100, **options)))


# Which pages need OCR, and the start-up check of languages.


def test_garbage_and_empty_text_layers_need_ocr(shared_data: Path) -> None:
    import pypdfium2 as pdfium

    def quality(path: Path, index: int) -> ocr.TextQuality:
        page = pdfium.PdfDocument(path)[index]
        return ocr.raw_quality(page.get_textpage().get_text_range())

    # Glyph ids of a font with no Unicode map: control characters, not words.
    garbage = shared_data / "pdfs/pdfjs_test/TAMReview.pdf"
    assert quality(garbage, 2).garbage
    # Born-digital pages, a table of contents full of dot leaders among them, are usable.
    filing = shared_data / "mmlongbench/documents/ADOBE_2015_10K.pdf"
    for index in (1, 32, 58):
        assert not quality(filing, index).garbage
        assert not quality(filing, index).sparse
    scan = pdfium.PdfDocument(shared_data / SCAN)
    assert pdf_ocr.needs_ocr(scan, 0, ocr.TextQuality(0, 0))
    # A blank page draws nothing: nothing to recognise.
    blank = pdfium.PdfDocument(shared_data / "pdfs/pdfjs_test/empty_protected.pdf")
    assert not pdf_ocr.needs_ocr(blank, 0, ocr.TextQuality(0, 0))


def test_languages_are_checked_with_the_package_to_install() -> None:
    assert ocr.check_languages("eng+fra+deu").is_dir()
    with pytest.raises(ocr.OcrUnavailable) as info:
        ocr.check_languages("eng+chi_sim")
    assert "tesseract-ocr-chi-sim" in str(info.value)
    assert "chi_sim" in str(info.value)
    with pytest.raises(ocr.OcrUnavailable, match="joined by '\\+'"):
        ocr.check_languages("eng, deu")
    ocr.check_settings("off", "not installed")  # OCR off: nothing to check


@pytest.mark.parametrize("command", [["worker"], ["serve", "--port", "0"]])
def test_start_refuses_a_language_that_is_not_installed(command: list[str], tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DOCQA_DATA_DIR": str(tmp_path / "data"),
        "DOCQA_OCR_LANGUAGES": "eng+ita",
        "DOCQA_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
    }
    result = run_docqa(*command, env=env, timeout=120)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "tesseract-ocr-ita" in output, output[-2000:]
    assert "Traceback" not in output or command[0] == "serve", output[-2000:]


# What OCR reads, in process.


def test_recognised_words_map_to_the_cleaned_text(shared_data: Path) -> None:
    (page,) = _read(shared_data / "formats/ocrmypdf/francais.pdf", ocr_languages="fra")
    assert page.ocr
    assert "Portez ce vieux whisky au juge blond qui fume" in fold(page.text)
    assert "intérieure" in page.text  # French letters, from the French model
    assert page.text == clean_text(page.text)
    assert page.words
    for start, end, x0, y0, x1, y1 in page.words:
        assert 0 <= start < end <= len(page.text)
        assert page.text[start:end].strip() == page.text[start:end]
        assert 0 <= x0 < x1 <= 1
        assert 0 <= y0 < y1 <= 1
    words = {page.text[w[0] : w[1]]: w for w in page.words}
    # "Portez" starts the page: top left.
    assert words["Portez"][2] < 0.3
    assert words["Portez"][3] < 0.3


def test_ocr_off_leaves_scans_without_text(shared_data: Path) -> None:
    pages = _read(shared_data / "formats/ocrmypdf/francais.pdf", ocr=False)
    assert [p.text for p in pages] == [""]
    with pytest.raises(ExtractionFailed) as info:
        check_has_text(pages, ocr=False)
    assert info.value.code == "no_text"
    assert "DOCQA_OCR=off" in info.value.message


def test_sandbox_grants_time_per_page_and_reports_the_ocr_stage(shared_data: Path) -> None:
    stages: list[tuple[str, int, int]] = []
    # Each page that needs OCR asks for more time than the base budget.
    started = time.monotonic()
    pages = extract_pages(
        shared_data / SCAN,
        "pdf",
        Limits(max_pages=100, timeout_s=5, memory_mb=2048, max_extra_s=600),
        on_progress=lambda *stage: stages.append(stage),
        options=ReadOptions(ocr_timeout_s_per_page=120),
    )
    assert [p.ocr for p in pages] == [True, True, True]
    assert ("ocr", 0, 3) in stages
    assert ("ocr", 3, 3) in stages
    assert "Atorvastatin" in pages[2].text
    took = time.monotonic() - started
    # Without the extra time, the same file runs out of a base budget a third of what it took
    # (a fixed number of seconds would pass on a fast quiet machine).
    with pytest.raises(ExtractionFailed) as info:
        extract_pages(
            shared_data / SCAN, "pdf", Limits(max_pages=100, timeout_s=took / 3, memory_mb=2048)
        )
    assert info.value.code == "timeout"


def test_images_are_bounded_before_decoding(tmp_path: Path) -> None:
    from docqa.formats import image

    ctx = ReadContext(max_pages=20)
    # Between Pillow's limit and twice it Pillow only warns; docqa refuses all the same.
    with pytest.raises(ExtractionFailed) as info:
        list(image.read(_png(tmp_path / "big.png", 10_000, 10_000, 1), ctx))
    assert info.value.code == "too_large"
    assert "10,000 × 10,000" in info.value.message or "million pixels" in info.value.message
    with pytest.raises(ExtractionFailed) as info:
        list(image.read(_many_frames(tmp_path / "frames.tif", 30), ctx))
    assert info.value.code == "too_many_pages"
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ExtractionFailed) as info:
        list(image.read(tmp_path / "broken.png", ctx))
    assert info.value.code == "corrupt"


def test_exif_orientation_is_applied(shared_data: Path, tmp_path: Path) -> None:
    from PIL import Image

    from docqa.formats import image

    upright = Image.open(shared_data / "formats/tesseract-test/eurotext.tif").convert("L")
    # Stored a quarter turn anticlockwise, with EXIF orientation 6: "turn clockwise to view".
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "tagged.jpg", exif=exif, quality=95)
    stored.save(tmp_path / "untagged.jpg", quality=95)
    ctx = ReadContext(max_pages=5)
    (page,) = image.read(tmp_path / "tagged.jpg", ctx)
    assert "The (quick) [brown] {fox} jumps!" in page.text
    # The same pixels without the tag are read sideways: the orientation is what made it.
    (sideways,) = image.read(tmp_path / "untagged.jpg", ctx)
    assert "quick" not in sideways.text


# Through the real stack.


async def _ingest(
    client: httpx.AsyncClient, path: Path, timeout: float = 300, filename: str | None = None
) -> dict[str, Any]:
    fmt = formats.by_extension(filename or path.name)
    assert fmt is not None, path
    response = await upload_file(
        client,
        path,
        document_id=unique_id(fmt.kind),
        content_type=fmt.media_type,
        filename=filename,
    )
    assert response.status_code == 200, response.text
    return await wait_terminal(client, response.json()["document_id"], timeout)


async def _page(client: httpx.AsyncClient, doc_id: str, number: int) -> dict[str, Any]:
    response = await client.get(f"/api/v1/documents/{doc_id}/pages/{number}")
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def _cited_pages(client: httpx.AsyncClient, doc_id: str, question: str, text: str) -> Any:
    asked = await ask(client, {"question": question, "document_id": doc_id, "top_k": 3})
    asked.assert_well_formed()
    return {s["page"] for s in asked.sources if fold(text) in fold(s["text"])}


async def test_a_scanned_report_is_answered_from_the_right_page(
    client: httpx.AsyncClient, shared_data: Path
) -> None:
    doc = await _ingest(client, shared_data / SCAN)
    assert doc["status"] == "ready", doc
    assert doc["page_count"] == 3
    doc_id = doc["document_id"]
    cited = await _cited_pages(
        client, doc_id, "Which drug was started for hyperlipidemia?", "Start Atorvastatin 20mg"
    )
    assert cited == {3}
    cited = await _cited_pages(
        client, doc_id, "What did the CT of the head find?", "No acute intracranial hemorrhage"
    )
    assert cited == {2}
    page = await _page(client, doc_id, 3)
    assert page["ocr"] is True


async def test_an_image_file_is_read(client: httpx.AsyncClient, shared_data: Path) -> None:
    doc = await _ingest(client, shared_data / "formats/tesseract-test/eurotext.tif")
    assert doc["status"] == "ready", doc
    doc_id = doc["document_id"]
    cited = await _cited_pages(
        client, doc_id, "What does the quick brown fox jump over?", "The (quick) [brown] {fox}"
    )
    assert cited == {1}
    page = await _page(client, doc_id, 1)
    assert page["ocr"] is True
    assert "aspammer@website.com" in page["text"]


async def test_a_mixed_pdf_keeps_its_text_layer(
    client: httpx.AsyncClient, shared_data: Path, tmp_path: Path
) -> None:
    import pypdfium2 as pdfium

    sentence = f"The lighthouse keeper logged {unique_id('wind')} knots of wind at dawn."
    mixed = pdfium.PdfDocument.new()
    mixed.import_pages(pdfium.PdfDocument(make_pdf([sentence])))
    mixed.import_pages(pdfium.PdfDocument(shared_data / "formats/ocrmypdf/c02-22.pdf"))
    path = tmp_path / "mixed.pdf"
    mixed.save(path)
    text_page = _read(tmp_path / "mixed.pdf", ocr=False)[0].text

    doc = await _ingest(client, path)
    assert doc["status"] == "ready", doc
    first, second = (
        await _page(client, doc["document_id"], 1),
        await _page(client, doc["document_id"], 2),
    )
    assert first["ocr"] is False
    assert first["text"] == text_page  # the text layer itself, not a recognition of it
    assert second["ocr"] is True
    assert "went tip-toeing along a path amongst" in fold(second["text"])


# Hostile images, made here: each is refused from its header, within its budget.


def _png(path: Path, width: int, height: int, bit_depth: int) -> Path:
    """A valid greyscale PNG of zeros: a few hundred kilobytes that decode to gigabytes."""
    row = b"\x00" + bytes((width * bit_depth + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def _many_frames(path: Path, frames: int) -> Path:
    """A TIFF of `frames` one-pixel frames, written directly (Pillow takes minutes for 10,000):
    every frame's directory points at the same pixel."""
    entries = [  # tag, type (3: short, 4: long), value
        (256, 3, 1),  # width
        (257, 3, 1),  # height
        (258, 3, 8),  # bits per sample
        (259, 3, 1),  # no compression
        (262, 3, 1),  # black is zero
        (273, 4, 8),  # the pixel, right after the header
        (277, 3, 1),  # samples per pixel
        (278, 3, 1),  # rows per strip
        (279, 4, 1),  # bytes in the strip
    ]
    size = 2 + 12 * len(entries) + 4
    out = [b"II*\x00", struct.pack("<I", 12), b"\xff\x00\x00\x00"]
    for n in range(frames):
        following = 12 + (n + 1) * size if n + 1 < frames else 0
        out.append(struct.pack("<H", len(entries)))
        out += [struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in entries]
        out.append(struct.pack("<I", following))
    path.write_bytes(b"".join(out))
    return path


@pytest.mark.slow
async def test_hostile_images_fail_with_a_code_and_the_worker_keeps_serving(
    client: httpx.AsyncClient, tmp_path: Path, shared_data: Path
) -> None:
    hostile = {
        # A decompression bomb: 1-bit, 60,000 × 60,000 (3.6 billion pixels) in 0.5 MB.
        "bomb.png": (_png(tmp_path / "bomb.png", 60_000, 60_000, 1), "too_large"),
        "huge.png": (_png(tmp_path / "huge.png", 30_000, 30_000, 8), "too_large"),
        "frames.tif": (_many_frames(tmp_path / "frames.tif", 10_000), "too_many_pages"),
    }
    for name, (path, code) in hostile.items():
        started = time.monotonic()
        doc = await _ingest(client, path, timeout=120)
        assert doc["status"] == "failed", (name, doc)
        assert doc["error"]["code"] == code, (name, doc["error"])
        assert len(doc["error"]["message"]) > 30, doc["error"]
        assert time.monotonic() - started < 60, name
        assert (await client.get("/healthz")).status_code == 200
    # The worker still reads images afterwards.
    doc = await _ingest(client, shared_data / "formats/ocrmypdf/linn.png")
    assert doc["status"] == "ready", doc


@pytest.mark.slow
async def test_image_only_pdfs_end_ready_with_their_text_or_no_text(
    client: httpx.AsyncClient, shared_data: Path
) -> None:
    for name, words in IMAGE_ONLY.items():
        doc = await _ingest(client, shared_data / "pdfs" / name)
        if words is None:
            assert doc["status"] == "failed", (name, doc)
            assert doc["error"]["code"] == "no_text", (name, doc["error"])
            assert "OCR" in doc["error"]["message"], doc["error"]
            continue
        assert doc["status"] == "ready", (name, doc)
        page = await _page(client, doc["document_id"], 1)
        assert page["ocr"] is True, name
        assert words in fold(page["text"]), (name, page["text"])


@pytest.mark.slow
async def test_each_frame_of_a_tiff_is_a_page(client: httpx.AsyncClient, shared_data: Path) -> None:
    # A 612 × 792 render of a paper's first page: small letters, read after enlarging.
    doc = await _ingest(client, shared_data / "formats/docling/2206.01062.tif")
    assert doc["status"] == "ready", doc
    assert doc["page_count"] == 2
    first = await _page(client, doc["document_id"], 1)
    assert "DocLayNet: A Large Human-Annotated Dataset" in fold(first["text"])
    second = await _page(client, doc["document_id"], 2)
    assert second["ocr"] is True
    assert second["text"]
    assert second["text"] != first["text"]
