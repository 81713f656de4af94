"""The seed's client tests, changed only as CONTRACT.md allows: the fixture starts our stack and
uploads `test-doc-123`, the streamed upload response is read before parsing, and the fixture's
`cleanup()` call is gone."""

from __future__ import annotations

from pathlib import Path

import pytest
from httpx import AsyncClient

from tests.conftest import unique_copy, upload_file, wait_terminal
from tests.stack import Stack

SEED_DOCUMENT = "test-doc-123"


@pytest.fixture(scope="session")
async def docker_services(
    stack: Stack, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Stack]:
    # Bytes no other test uploads (the corpus test uploads every shared PDF), so deduplication
    # cannot hand back another document's id.
    pdf = unique_copy(
        shared_data / "pdfs" / "pypdf_samples" / "pdflatex-outline.pdf",
        tmp_path_factory.mktemp("seed"),
    )
    async with AsyncClient(base_url=stack.base_url, timeout=60) as client:
        response = await upload_file(client, pdf, document_id=SEED_DOCUMENT)
        # 409: a deployment (DOCQA_TEST_BASE_URL) that kept test-doc-123 from an earlier run.
        assert response.status_code in (200, 409), response.text
        assert (await wait_terminal(client, SEED_DOCUMENT))["status"] == "ready"
    return {"postgres": stack, "model_server": stack}


@pytest.fixture(scope="session")
def base_url(stack: Stack) -> str:
    return stack.base_url


@pytest.mark.asyncio
async def test_upload_pdf_success(
    docker_services: dict[str, Stack], base_url: str, sample_pdf: Path
) -> None:
    async with AsyncClient(base_url=base_url) as client:
        with open(sample_pdf, "rb") as f:
            files = {"file": ("sample.pdf", f, "application/pdf")}
            async with client.stream("POST", "/api/v1/upload", files=files) as response:
                assert response.status_code == 200

                await response.aread()
                data = response.json()
                assert "document_id" in data
                assert response.headers["content-type"] == "application/json"


@pytest.mark.asyncio
async def test_upload_size_limit(docker_services: dict[str, Stack], base_url: str) -> None:
    async with AsyncClient(base_url=base_url) as client:
        # Generate 60MB file (over 50MB limit)
        large_content = b"x" * (60 * 1024 * 1024)

        files = {"file": ("large.pdf", large_content, "application/pdf")}
        response = await client.post("/api/v1/upload", files=files)

        assert response.status_code == 413
        assert "File too large" in response.text


@pytest.mark.asyncio
async def test_ask_streaming_response(docker_services: dict[str, Stack], base_url: str) -> None:
    async with AsyncClient(base_url=base_url) as client:
        payload = {"question": "What is this document about?", "document_id": "test-doc-123"}

        chunks = []
        async with client.stream("POST", "/api/v1/ask", json=payload) as response:
            assert response.status_code == 200

            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    chunks.append(line[6:])  # Strip "data: " prefix

        full_response = "".join(chunks)
        assert len(full_response) > 0
        assert "error" not in full_response.lower()
