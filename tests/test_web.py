"""The web page in a real browser: headless Debian Chromium driven by Playwright, against the
real stack (API, worker and PostgreSQL processes), plus the scriptable mock model server where an
answer must be slow, and an API whose model server is gone.

Screenshots of the main states land in test-output/screenshots/ for a person to look at.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, expect

from tests.browser import DESKTOP, PHONE, Web, open_tab, split_key
from tests.conftest import unique_copy
from tests.mock_llm import MockLLM
from tests.stack import SHARED_DATA, Stack, free_port, start_api

pytestmark = pytest.mark.browser

PDFS = SHARED_DATA / "pdfs"
PAPER = PDFS / "pdfjs_test" / "tracemonkey.pdf"  # a real 14-page two-column paper, 1 MB
LONG_PDF = PDFS / "pdfminer_samples" / "i1040nr.pdf"  # 50 dense pages: takes a while to index
ENCRYPTED_PDF = PDFS / "pypdf_samples" / "libreoffice-writer-password.pdf"
MB = 1024 * 1024


# `browser` (one Chromium for the session), `web` and `phone_web` (the page at desktop and phone
# width) and `paper` (the paper, uploaded and ready) are fixtures of tests/browser.py, shared
# with tests/test_viewer.py.


@pytest.fixture
async def model_web(browser: Browser, stack: Stack, llm_api: str) -> AsyncIterator[Web]:
    """The page on the API that answers with the mock model."""
    _, key = split_key(stack.base_url)
    async for tab in open_tab(browser, _with_key(llm_api, key), DESKTOP):
        yield tab


def _with_key(url: str, key: str | None) -> str:
    return url.replace("://", f"://{key}@", 1) if key else url


@pytest.fixture(scope="module")
def dead_model_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An API whose model server address has nothing listening: the model is unavailable."""
    if not stack.local:
        pytest.skip("needs an API the tests configure (not available with DOCQA_TEST_BASE_URL)")
    env = stack.env | {
        "DOCQA_LLM_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        "DOCQA_LLM_MAX_RETRIES": "0",
    }
    proc, url = start_api(env, tmp_path_factory.mktemp("logs"), name="api-dead-model")
    try:
        yield _with_key(url, split_key(stack.base_url)[1])
    finally:
        proc.stop()


# ---- the page itself -----------------------------------------------------------------------


async def test_page_is_served_with_a_strict_policy(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        for asset in ("/static/app.js", "/static/style.css", "/static/api.js"):
            response = await client.get(asset)
            assert response.status_code == 200, asset
            assert response.headers["cache-control"] == "no-cache"


async def test_page_lists_every_accepted_type(web: Web, stack: Stack) -> None:
    """The picker and the drop zone's hint come from GET /api/v1/formats, new types included."""
    async with httpx.AsyncClient(base_url=stack.base_url) as client:
        listed = (await client.get("/api/v1/formats")).json()["formats"]
    hint = web.page.locator("#dropzone-hint")
    # Only the script sets the hint's title (the full names), after it has set the picker's list.
    await expect(hint).to_have_attribute("title", re.compile("PowerPoint"))
    for label in ("PDF", "DOCX", "PPTX", "XLSX", "CSV", "TSV", "EPUB", "EML"):
        await expect(hint).to_contain_text(label)
    picker = web.page.locator("#file-input")
    accept = set((await picker.get_attribute("accept") or "").split(","))
    assert {e for f in listed for e in f["extensions"]} <= accept
    assert {".pptx", ".xlsx", ".csv", ".tsv", ".epub", ".eml", ".odt", ".rtf"} <= accept


async def test_sse_reader_splits_events_wherever_the_chunks_break(web: Web) -> None:
    """The page's fetch-based SSE reader, fed the answer format in awkward pieces: CRLF split
    across chunks, a delta spanning several data lines, comments, an event name."""
    wire = (
        ": ping\r\n\r\n"
        'event: sources\r\ndata: [{"n": 1}]\r\n\r\n'
        "data: Hello\r\n\r\n"
        "data: two\r\ndata: lines\r\n\r\n"
        "data:  leading space kept\n\n"
        "data: \r\n\r\n"
        'event: done\rdata: {"finish_reason": "stop"}\r\r'
        "data: never finished"
    )
    events = await web.page.evaluate(
        """async (wire) => {
            const { readEvents } = await import("/static/sse.js");
            const bytes = new TextEncoder().encode(wire);
            const body = new ReadableStream({
                start(controller) {
                    for (let i = 0; i < bytes.length; i += 3) {
                        controller.enqueue(bytes.slice(i, i + 3));
                    }
                    controller.close();
                },
            });
            const out = [];
            for await (const e of readEvents(body)) out.push([e.event, e.data]);
            return out;
        }""",
        wire,
    )
    assert events == [
        ["sources", '[{"n": 1}]'],
        ["message", "Hello"],
        ["message", "two\nlines"],
        ["message", " leading space kept"],
        ["message", ""],
        ["done", '{"finish_reason": "stop"}'],
    ]


async def test_pdf_dropped_in_shows_upload_then_processing_until_ready(
    web: Web, tmp_path: Path
) -> None:
    pdf = unique_copy(PAPER, tmp_path)
    await web.shot("01-empty-desktop")
    # Slow the upload to ~300 KB/s, so that its progress is something a person would see.
    cdp = await web.context.new_cdp_session(web.page)
    await cdp.send("Network.enable")
    await cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 300_000},
    )
    await web.watch_row(pdf.name)
    await web.drop(pdf)
    row = web.row(pdf.name)
    await expect(row).to_have_attribute("data-status", "uploading")
    await expect(row.locator(".doc-status")).to_contain_text("Uploading")
    await web.shot("02-uploading")
    await expect(row).to_have_attribute("data-status", "processing", timeout=60_000)
    await web.shot("03-processing")
    await expect(row).to_have_attribute("data-status", "ready", timeout=120_000)
    await expect(row.locator(".doc-meta")).to_contain_text("14 pages")
    await expect(row.locator(".badge")).to_have_text("Ready")
    await web.shot("04-ready")

    states = await web.row_states()
    uploading = [s["value"] for s in states if s["status"] == "uploading"]
    assert len([v for v in uploading if 0 < v < 100]) >= 3, states
    assert uploading == sorted(uploading), "upload progress never goes backwards"
    processing = [s for s in states if s["status"] == "processing"]
    assert any("Reading pages" in s["text"] for s in processing), states
    assert any("Indexing passages" in s["text"] for s in processing), states
    assert any(0 < s["value"] < 100 for s in processing), states
    assert [s["status"] for s in states][-1] == "ready"

    # The list is read from the API: after a reload the document is still there, ready.
    await web.page.reload()
    await expect(web.row(pdf.name).locator(".badge")).to_have_text("Ready")
    await expect(web.row(pdf.name).locator(".doc-meta")).to_contain_text("14 pages")


async def test_too_large_file_says_file_too_large(web: Web, tmp_path: Path) -> None:
    big = tmp_path / "huge-scan.pdf"
    with big.open("wb") as f:
        f.write(b"%PDF-1.4\n")
        f.truncate(60 * MB)
    await web.page.set_input_files("#file-input", str(big))
    row = web.row(big.name)
    await expect(row).to_have_attribute("data-status", "rejected", timeout=60_000)
    await expect(row.locator(".doc-error")).to_contain_text("File too large")
    await expect(row.locator(".badge")).to_have_text("Not uploaded")
    await web.shot("05-too-large")
    await row.get_by_role("button", name=f"Dismiss {big.name}").click()
    await expect(row).to_have_count(0)


async def test_broken_pdfs_show_their_errors(web: Web, tmp_path: Path) -> None:
    encrypted = unique_copy(ENCRYPTED_PDF, tmp_path)
    fake = tmp_path / f"{uuid.uuid4().hex[:8]}-not-really.pdf"
    fake.write_text("This is a text file pretending to be a PDF.\n")
    await web.drop(encrypted, fake)  # two files in one drop
    fake_row = web.row(fake.name)
    await expect(fake_row).to_have_attribute("data-status", "rejected")
    await expect(fake_row.locator(".doc-error")).to_contain_text("not")
    enc_row = web.row(encrypted.name)
    await expect(enc_row).to_have_attribute("data-status", "failed", timeout=60_000)
    await expect(enc_row.locator(".doc-error")).to_contain_text("protected by a password")
    await expect(enc_row.locator("input.pick")).to_be_disabled()
    await web.shot("06-failed-files")
    # A failed document is on the server: it survives a reload with its error sentence.
    await web.page.reload()
    await expect(web.row(encrypted.name).locator(".doc-error")).to_contain_text("password")
    await expect(web.row(fake.name)).to_have_count(0)


async def test_upload_waits_out_a_rate_limit(web: Web, tmp_path: Path) -> None:
    """A 429 on upload (a batch outrunning the per-key limit) is waited out as Retry-After says;
    the file is not given up on. The first attempt is refused at the network layer."""
    refused: list[str] = []

    async def limit_once(route: Any) -> None:
        if not refused:
            refused.append(route.request.url)
            body = {"detail": "Too many uploads.", "code": "rate_limited"}
            await route.fulfill(status=429, json=body, headers={"retry-after": "2"})
        else:
            await route.continue_()

    await web.page.route(re.compile(r".*/api/v1/upload$"), limit_once)
    note = tmp_path / f"{uuid.uuid4().hex[:8]}-limited.txt"
    note.write_text(f"Rate limits are waited out {uuid.uuid4().hex}.\n")
    await web.page.set_input_files("#file-input", str(note))
    row = web.row(note.name)
    await expect(row.locator(".doc-note")).to_contain_text("upload limit was reached")
    await expect(row).to_have_attribute("data-status", "waiting")
    await expect(row).to_have_attribute("data-status", "ready", timeout=60_000)
    await expect(row.locator(".doc-note")).to_be_hidden()
    assert len(refused) == 1
    await web.delete(note.name)


async def test_delete_asks_first_then_removes(web: Web, tmp_path: Path, stack: Stack) -> None:
    note = tmp_path / f"{uuid.uuid4().hex[:8]}-note.txt"
    note.write_text(f"A note about the quarterly plan {uuid.uuid4().hex}.\n")
    await web.page.set_input_files("#file-input", str(note))
    row = web.row(note.name)
    await expect(row).to_have_attribute("data-status", "ready", timeout=60_000)
    doc_id = await row.get_attribute("data-doc-id")
    assert doc_id

    await row.get_by_role("button", name=f"Delete {note.name}").click()
    dialog = web.page.locator("#confirm-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text(note.name)
    await web.shot("07-confirm-delete")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()
    await expect(row).to_have_count(1)

    await row.get_by_role("button", name=f"Delete {note.name}").click()
    await dialog.get_by_role("button", name="Delete").click()
    await expect(row).to_have_count(0)
    async with httpx.AsyncClient(base_url=stack.base_url) as client:
        assert (await client.get(f"/api/v1/documents/{doc_id}")).status_code == 404
    await web.page.reload()
    await expect(web.page.locator("#doc-list")).to_be_attached()
    await expect(web.row(note.name)).to_have_count(0)


# ---- asking --------------------------------------------------------------------------------


async def test_extractive_answer_with_sources(paper: dict[str, Any], web: Web) -> None:
    await web.tick(paper["filename"])
    await expect(web.page.locator("#scope-text")).to_have_text(paper["filename"])
    await web.ask("How does a trace tree handle loops in the tracing JIT?")
    answer = web.page.locator(".turn.assistant").last
    await expect(answer.locator(".answer-meta")).to_contain_text(
        "Extractive answer", timeout=60_000
    )
    await expect(answer.locator(".answer a.cite").first).to_be_visible()
    sources = answer.locator(".source")
    assert await sources.count() >= 1
    first = sources.first
    await expect(first.locator(".source-file")).to_have_text(paper["filename"])
    await expect(first.locator(".source-page")).to_have_text(re.compile(r"^page \d+$"))
    assert (await first.locator(".snippet").text_content() or "").strip()
    await web.shot("08-extractive-answer")


async def test_answer_streams_in_pieces_and_citation_opens_the_page(
    paper: dict[str, Any], mock_llm: MockLLM, model_web: Web, stack: Stack
) -> None:
    web = model_web
    marker = uuid.uuid4().hex[:8]
    tokens = [
        "Trace ", "trees ", "record ", "the ", "hot ", "loops ", "of ", "a ", "program ", "[1]",
        ". ", "Each ", "side ", "exit ", "can ", "grow ", "a ", "new ", "branch ", "[2]", ".",
    ]  # fmt: skip
    await mock_llm.script({"match": marker, "stream": True, "tokens": tokens, "delay_s": 0.12})
    await web.tick(paper["filename"])
    await web.watch_answer()
    await web.ask(f"How are loops traced? ({marker})")
    turn = web.last_turn()
    await expect(turn.locator(".answer-status")).to_contain_text(
        re.compile("Reading your documents|Writing the answer")
    )
    # The first question to a freshly started API also waits for its embedding model to load.
    await expect(turn.locator(".answer")).to_contain_text("Trace trees", timeout=30_000)
    await web.shot("09-streaming")
    await expect(turn.locator(".answer-meta")).to_contain_text("Model answer", timeout=30_000)
    await web.shot("10-streamed-answer")

    final = "".join(tokens)
    await expect(turn.locator(".answer")).to_have_text(final)
    states = await web.answer_states()
    texts = [s["text"] for s in states]
    assert texts[-1] == final
    assert len(texts) >= 6, f"the answer appeared all at once: {texts}"
    assert all(final.startswith(t) for t in texts), "the text only ever grows at its end"
    assert states[-1]["t"] - states[0]["t"] > 1000, "the pieces arrived over time, not in one go"

    # [1] and [2] open the cited pages beside the answer; "Open original" opens a tab with the
    # file at that page.
    cites = turn.locator(".answer a.cite")
    await expect(cites).to_have_count(2)
    await expect(cites.first).to_have_text("[1]")
    page_text = await turn.locator('.source[data-n="2"] .source-page').text_content()
    assert page_text is not None
    page_no = int(page_text.removeprefix("page "))
    await turn.locator('.answer a.cite[data-n="2"]').click()
    viewer = web.page.locator("#viewer")
    await expect(viewer).to_be_visible()
    await expect(viewer.locator("#viewer-page")).to_have_text(f"Page {page_no} of 14")
    async with web.context.expect_page() as opened:
        await viewer.locator("#viewer-original").click()
    tab = await opened.value
    if split_key(stack.base_url)[1]:
        # With an API key (which a new tab cannot send) the page fetches the file itself and
        # opens it from a blob: URL, at the same page.
        await tab.wait_for_url(
            re.compile(rf"^blob:{re.escape(web.base_url)}/[\w-]+#page={page_no}$")
        )
    else:
        await tab.wait_for_load_state("commit")
        assert tab.url.endswith(f"/api/v1/documents/{paper['document_id']}/file#page={page_no}")
    await tab.close()

    # A follow-up question carries the conversation so far.
    follow = uuid.uuid4().hex[:8]
    await mock_llm.script({"match": follow, "stream": True, "text": "It grows a branch [1]."})
    await web.ask(f"And what happens at a side exit? ({follow})")
    await expect(web.last_turn().locator(".answer-meta")).to_contain_text(
        "Model answer", timeout=30_000
    )
    streamed = [r for r in await mock_llm.requests(follow) if r["stream"]]
    assert streamed, "the follow-up reached the model"
    messages = json.dumps(streamed[-1]["body"]["messages"])
    assert marker in messages, "the earlier question went along"
    assert "Trace trees record the hot loops" in messages, "the earlier answer went along"
    await web.shot("11-follow-up")


async def test_stop_cancels_a_running_answer(
    paper: dict[str, Any], mock_llm: MockLLM, model_web: Web
) -> None:
    web = model_web
    marker = uuid.uuid4().hex[:8]
    slow = {"match": marker, "stream": True, "text": "word " * 200, "delay_s": 0.25}
    await mock_llm.script(slow)
    await web.tick(paper["filename"])
    await web.ask(f"Tell me everything, slowly ({marker})")
    turn = web.last_turn()
    await expect(turn.locator(".answer")).to_contain_text("word word word", timeout=30_000)
    stop = web.page.locator("#stop")
    await expect(stop).to_be_visible()
    await expect(web.page.locator("#send")).to_be_hidden()
    await web.shot("12-stop-visible")
    await stop.click()
    await expect(turn.locator(".answer-meta")).to_contain_text("Stopped")
    await expect(web.page.locator("#send")).to_be_visible()
    await expect(stop).to_be_hidden()
    shown = await turn.locator(".answer").text_content()
    await asyncio.sleep(1.0)
    assert await turn.locator(".answer").text_content() == shown, "no text after Stop"
    await web.shot("13-stopped")

    # The server noticed the browser leave and cancelled its request to the model.
    deadline = time.monotonic() + 15
    streamed: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        streamed = [r for r in await mock_llm.requests(marker) if r["stream"]]
        if streamed and streamed[-1]["outcome"] == "cancelled":
            break
        await asyncio.sleep(0.2)
    assert streamed
    assert streamed[-1]["outcome"] == "cancelled", streamed[-1]
    assert 0 < streamed[-1]["tokens_sent"] < 200


async def test_model_unavailable_is_said_plainly(
    paper: dict[str, Any], browser: Browser, dead_model_api: str
) -> None:
    async for web in open_tab(browser, dead_model_api, DESKTOP):
        await web.tick(paper["filename"])
        await web.ask("Is anyone there?")
        alert = web.last_turn().locator(".alert")
        await expect(alert).to_contain_text("Model server unavailable", timeout=30_000)
        await expect(alert).to_contain_text("cannot be reached")
        # The question stays in the box, to send again once the model is back.
        await expect(web.page.locator("#question")).to_have_value("Is anyone there?")
        await web.shot("14-model-unavailable")


async def test_document_not_ready_is_said_plainly(web: Web, tmp_path: Path) -> None:
    long_pdf = unique_copy(LONG_PDF, tmp_path)
    await web.page.set_input_files("#file-input", str(long_pdf))
    row = web.row(long_pdf.name)
    await expect(row).to_have_attribute("data-status", re.compile("queued|processing"))
    await web.tick(long_pdf.name)
    await web.ask("What does this form say about residency?")
    alert = web.last_turn().locator(".alert")
    await expect(alert).to_contain_text("Document not ready")
    await expect(alert).to_contain_text(f"“{long_pdf.name}” is ")
    await expect(alert).to_contain_text("not ready yet")
    await web.shot("15-not-ready")
    await web.delete(long_pdf.name)  # frees the shared worker: the document is not needed


async def test_text_from_model_and_files_is_never_markup(
    mock_llm: MockLLM, model_web: Web, tmp_path: Path
) -> None:
    web = model_web
    # No quotes: browsers percent-encode them in multipart file names.
    hostile = f"<img src=x onerror=window.__owned=1>{uuid.uuid4().hex[:6]}.md"
    note = tmp_path / "hostile.md"
    note.write_text(f"# Notes {uuid.uuid4().hex}\n\nThe <b>quarterly</b> plan grows by 10%.\n")
    await web.drop(note, names=[hostile])
    row = web.row(hostile)
    await expect(row).to_have_attribute("data-status", "ready", timeout=60_000)
    marker = uuid.uuid4().hex[:8]
    reply = "<script>window.__owned=2</script><b>bold</b> [1]"
    await mock_llm.script({"match": marker, "stream": True, "text": reply})
    await web.tick(hostile)
    await web.ask(f"What is the plan? ({marker})")
    turn = web.last_turn()
    await expect(turn.locator(".answer-meta")).to_contain_text("Model answer", timeout=30_000)
    await expect(turn.locator(".answer")).to_contain_text("<script>window.__owned=2</script>")
    assert await turn.locator(".answer b, .answer script, .source img").count() == 0
    # Long names are cut in the middle on the card; the whole name is its title.
    await expect(turn.locator(".source-file").first).to_have_attribute("title", hostile)
    assert await web.page.evaluate("window.__owned") is None
    await web.delete(hostile)


async def test_api_key_is_asked_for_kept_and_sent(browser: Browser, stack: Stack) -> None:
    """The page asks for a key on a 401, keeps it, and sends it on every request. Without a
    server in keys mode, the network layer plays one; in keys mode it is the server itself."""
    _, real_key = split_key(stack.base_url)
    key = real_key or "dq_test_key"
    seen: list[str | None] = []

    async def require_key(route: Any) -> None:
        if route.request.url.endswith("/api/v1/formats"):
            await route.continue_()  # public: the page reads it without the key on purpose
            return
        auth = route.request.headers.get("authorization")
        seen.append(auth)
        if auth != f"Bearer {key}":
            body = {"detail": "This server needs an API key.", "code": "unauthorized"}
            await route.fulfill(status=401, json=body, headers={"www-authenticate": "Bearer"})
        else:
            await route.continue_()

    async for web in open_tab(browser, stack.base_url, DESKTOP, with_key=False):
        await web.page.route(re.compile(r".*/api/v1/.*"), require_key)
        await web.page.reload()
        dialog = web.page.locator("#key-dialog")
        await expect(dialog).to_be_visible()
        await web.shot("16-key-dialog")
        await dialog.locator("#key-input").fill(key)
        await dialog.locator("#key-input").press("Enter")  # Enter saves, like the button
        await expect(dialog).to_be_hidden()
        await _until(lambda: f"Bearer {key}" in seen)
        await expect(web.page.locator("#list-error")).to_be_hidden()
        assert await web.page.evaluate("localStorage.getItem('docqa.apiKey')") == key
        await expect(web.page.locator("#key-button")).to_be_visible()
        # A reload sends the kept key straight away: no second prompt.
        seen.clear()
        await web.page.reload()
        await _until(lambda: len(seen) > 0)
        await expect(web.page.locator("#list-error")).to_be_hidden()
        await expect(dialog).to_be_hidden()
        assert all(s == f"Bearer {key}" for s in seen), seen


async def _until(condition: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_phone_width_has_no_sideways_scroll(paper: dict[str, Any], phone_web: Web) -> None:
    web = phone_web
    await expect(web.row(paper["filename"])).to_have_count(1)
    await web.shot("17-phone-documents")
    await web.tick(paper["filename"])
    await web.ask("What is a trace tree?")
    turn = web.page.locator(".turn.assistant").last
    await expect(turn.locator(".answer-meta")).to_contain_text("Extractive answer", timeout=60_000)
    await turn.scroll_into_view_if_needed()
    await web.shot("18-phone-answer")
    await web.shot("19-phone-full", full_page=True)
    overflow = await web.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px"
    composer = await web.page.locator("#ask-form").bounding_box()
    assert composer is not None
    assert composer["width"] <= PHONE["width"]
