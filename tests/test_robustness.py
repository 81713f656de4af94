"""Every file of the robustness corpus ends `ready` or `failed` with a stable code and a sentence,
while the server keeps serving. The corpus is real, odd and broken files (../shared/data)."""

from __future__ import annotations

import asyncio
import csv
import json
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import upload_file
from tests.stack import unique_id

pytestmark = pytest.mark.slow

KNOWN_CODES = {
    "encrypted",
    "no_text",
    "corrupt",
    "unsupported_type",
    "too_many_pages",
    "timeout",
    "out_of_memory",
    "extract_crashed",
}
CONTENT_TYPES = {
    ".pdf": "application/pdf",
    ".html": "text/html",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


def _corpus(shared_data: Path) -> list[Path]:
    files = sorted((shared_data / "pdfs").rglob("*.pdf")) + sorted(
        p for p in (shared_data / "office").rglob("*") if p.suffix in (".docx", ".html")
    )
    assert len(files) > 80
    return files


def _manifest(shared_data: Path) -> dict[str, dict[str, str]]:
    with (shared_data / "pdfs" / "MANIFEST.csv").open() as f:
        return {row["file"].removeprefix("pdfs/"): row for row in csv.DictReader(f)}


async def test_whole_corpus_ends_ready_or_failed(
    client: httpx.AsyncClient, shared_data: Path
) -> None:
    manifest = _manifest(shared_data)
    uploaded: dict[str, Path] = {}
    for path in _corpus(shared_data):
        response = await upload_file(
            client,
            path,
            content_type=CONTENT_TYPES[path.suffix],
            document_id=unique_id("corpus"),
        )
        if path.stat().st_size == 0:
            assert response.status_code == 400, path
            assert response.json()["code"] == "empty_file"
            continue
        assert response.status_code == 200, (path, response.text)
        uploaded[response.json()["document_id"]] = path

    outcomes: dict[str, dict[str, object]] = {}
    deadline = time.monotonic() + 900
    while len(outcomes) < len(uploaded):
        assert time.monotonic() < deadline, f"still processing: {set(uploaded) - set(outcomes)}"
        assert (await client.get("/healthz")).status_code == 200, "the server keeps serving"
        for doc_id in set(uploaded) - set(outcomes):
            doc = (await client.get(f"/api/v1/documents/{doc_id}")).json()
            if doc["status"] in ("ready", "failed"):
                outcomes[doc_id] = doc
        await asyncio.sleep(1)

    report = []
    for doc_id, doc in outcomes.items():
        path = uploaded[doc_id]
        rel = str(path.relative_to(shared_data / "pdfs")) if path.suffix == ".pdf" else path.name
        row = manifest.get(rel, {})
        error = doc["error"]
        code = error["code"] if isinstance(error, dict) else None
        report.append((rel, doc["status"], code))
        if doc["status"] == "failed":
            assert code in KNOWN_CODES, (rel, error)
            assert isinstance(error, dict)
            assert len(str(error["message"])) > 20, (rel, error)
        else:
            assert doc["chunk_count"] > 0, (rel, doc)
            assert doc["page_count"], (rel, doc)
        if row.get("needs_password") == "True":
            assert code == "encrypted", (rel, doc)
        if row.get("encrypted") == "True" and row.get("needs_password") == "False":
            # Permission-only encryption (empty user password) opens and reads normally.
            assert doc["status"] == "ready" or code == "no_text", (rel, doc)
        image_only = row.get("text_chars_first50pages") == "0" and row.get("pages_mupdf") not in (
            "",
            "0",
        )
        if image_only and row.get("needs_password") != "True":
            assert code == "no_text", (rel, doc)
    print(json.dumps(sorted(report), indent=1))
    ready = sum(1 for _, status, _ in report if status == "ready")
    assert ready > len(report) // 2
