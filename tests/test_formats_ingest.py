"""The new formats through the real stack: uploaded, ingested by the worker, and found by
`/api/v1/ask` with their context (a cell with its column header, a slide's notes, a mail's
subject and attachment, a CSV row with its header, an e-book chapter); and hostile office files
that end `failed` with a code within their budget while the worker keeps serving."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from docqa import formats
from tests.asking import ask, fold
from tests.conftest import upload_file, wait_terminal
from tests.hostile import empty_styled_rows, zip_bomb
from tests.stack import unique_id


async def _ingest(client: httpx.AsyncClient, path: Path, timeout: float = 300) -> dict[str, Any]:
    fmt = formats.by_extension(path.name)
    assert fmt is not None, path
    response = await upload_file(
        client, path, document_id=unique_id(fmt.kind), content_type=fmt.media_type
    )
    assert response.status_code == 200, response.text
    return await wait_terminal(client, response.json()["document_id"], timeout)


async def _ready(client: httpx.AsyncClient, path: Path) -> str:
    doc = await _ingest(client, path)
    assert doc["status"] == "ready", (doc["error"], doc)
    assert doc["chunk_count"] > 0, doc
    return str(doc["document_id"])


async def _sources(client: httpx.AsyncClient, doc_id: str, question: str) -> list[dict[str, Any]]:
    asked = await ask(client, {"question": question, "document_id": doc_id, "top_k": 5})
    asked.assert_well_formed()
    return asked.sources


async def _page(client: httpx.AsyncClient, doc_id: str, number: int) -> dict[str, Any]:
    response = await client.get(f"/api/v1/documents/{doc_id}/pages/{number}")
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def test_spreadsheet_cell_found_with_its_column_header(
    client: httpx.AsyncClient, shared_data: Path
) -> None:
    doc_id = await _ready(
        client, shared_data / "formats/unstructured/2023-half-year-analyses-by-segment.xlsx"
    )
    sources = await _sources(client, doc_id, "Zone EUR sales in January–June 2023")
    # The cell value and its column header arrive in one source text.
    assert any("| Zone EUR | 9467 |" in s["text"] and "Sales (a)" in s["text"] for s in sources), [
        s["text"][:200] for s in sources
    ]
    first = await _page(client, doc_id, 1)
    assert first["tables"] >= 1


async def test_slide_notes_found(client: httpx.AsyncClient, shared_data: Path) -> None:
    doc_id = await _ready(client, shared_data / "formats/docling/powerpoint_sample.pptx")
    sources = await _sources(client, doc_id, "final notes on the third slide")
    hits = [s for s in sources if "Notes: Final notes on the third slide." in fold(s["text"])]
    assert hits, [s["text"][:200] for s in sources]
    assert hits[0]["page"] == 3, "a slide's page is its slide number"


async def test_mail_subject_and_attachment_found(
    client: httpx.AsyncClient, shared_data: Path
) -> None:
    doc_id = await _ready(client, shared_data / "formats/unstructured/fake-email-attachment.eml")
    first = await _page(client, doc_id, 1)
    assert "Subject: Fake email with attachment" in first["text"]
    sources = await _sources(client, doc_id, "what does the fake attachment say?")
    assert any("Hey this is a fake attachment!" in s["text"] for s in sources), sources
    subject = await _sources(client, doc_id, "Fake email with attachment")
    assert any("Subject: Fake email with attachment" in s["text"] for s in subject), subject


async def test_csv_row_found_with_its_header(client: httpx.AsyncClient, shared_data: Path) -> None:
    doc_id = await _ready(client, shared_data / "formats/messytables/excel_pasting.csv")
    sources = await _sources(client, doc_id, "Iron and steel emissions in 2004")
    assert any(
        "| Year | 2000 | 2001 |" in s["text"] and "| Iron and steel | 22,927 |" in s["text"]
        for s in sources
    ), [s["text"][:200] for s in sources]


async def test_epub_chapter_heading_found(client: httpx.AsyncClient, shared_data: Path) -> None:
    doc_id = await _ready(client, shared_data / "formats/epubjs/alice.epub")
    sources = await _sources(client, doc_id, "Down the Rabbit-Hole")
    assert any("Down The Rabbit-Hole" in s["text"] for s in sources), sources
    page = await _page(client, doc_id, sources[0]["page"])
    assert fold(sources[0]["text"])[:80] in fold(page["text"])


@pytest.mark.slow
async def test_hostile_office_files_fail_in_budget_and_the_worker_keeps_serving(
    client: httpx.AsyncClient, shared_data: Path, tmp_path: Path
) -> None:
    hostile = {
        zip_bomb(tmp_path / "bomb.xlsx", "xl/sharedStrings.xml"): ({"too_large"}, 60),
        zip_bomb(tmp_path / "bomb.pptx", "ppt/slides/slide1.xml"): ({"too_large"}, 60),
        empty_styled_rows(tmp_path / "formatted.xlsx"): ({"too_large", "timeout"}, 240),
        shared_data / "formats/poi/poc-xmlbomb.xlsx": ({"corrupt"}, 60),
    }
    for path, (codes, budget_s) in hostile.items():
        started = time.monotonic()
        doc = await _ingest(client, path, timeout=budget_s)
        assert doc["status"] == "failed", (path.name, doc)
        assert doc["error"]["code"] in codes, (path.name, doc["error"])
        assert len(doc["error"]["message"]) > 40, doc["error"]
        assert time.monotonic() - started < budget_s
        assert (await client.get("/healthz")).status_code == 200
    # The worker is still there and reads the next file.
    after = tmp_path / f"after-{unique_id()}.csv"
    after.write_text("Name,Value\nstill serving,1\n", "utf-8")
    await _ready(client, after)
