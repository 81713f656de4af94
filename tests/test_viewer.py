"""The page viewer and conversations in a real browser (headless Debian Chromium, Playwright)
against the real stack: a citation opens its page beside the answer with the quoted sentence
highlighted where the text really is (checked independently: pdfium's own text search for a
text PDF, Tesseract reading the highlighted patch of a scan), a DOCX source shown as text with
the quote marked, the keyboard, the phone sheet, conversations kept across a reload, renamed
and deleted, and an answer the documents do not hold.

Screenshots land in test-output/screenshots/ (viewer-*.png) for a person to look at.
"""

from __future__ import annotations

import io
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.async_api import Browser, Locator, expect

from tests.asking import fold
from tests.browser import DESKTOP, PAPER, PHONE, Web, open_tab, split_key
from tests.conftest import unique_copy, upload_file, wait_terminal
from tests.mock_llm import MockLLM
from tests.stack import SHARED_DATA, Stack

pytestmark = pytest.mark.browser

SCAN = SHARED_DATA / "formats" / "ocrmypdf" / "c02-22.pdf"
# Where the drawn rectangles sit relative to the page image, in fractions of it.
_DRAWN = """(selector) => {
    const img = document.querySelector("#viewer .page-image");
    const r = img.getBoundingClientRect();
    return [...document.querySelectorAll(selector)].map((e) => {
        const b = e.getBoundingClientRect();
        return [(b.left - r.left) / r.width, (b.top - r.top) / r.height,
                (b.right - r.left) / r.width, (b.bottom - r.top) / r.height];
    });
}"""


async def _answered(web: Web, question: str, mark: str = "Extractive answer") -> Locator:
    await web.ask(question)
    turn = web.last_turn()
    await expect(turn.locator(".answer-meta")).to_contain_text(mark, timeout=90_000)
    return turn


async def _stored_turn(web: Web, stack: Stack, index: int = -1) -> dict[str, Any]:
    """The page's current conversation as the API stores it, and its turn `index`."""
    cid = await web.page.evaluate("localStorage.getItem('docqa.conversation')")
    assert cid, "the page keeps its conversation"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        response = await client.get(f"/api/v1/conversations/{cid}")
    assert response.status_code == 200, response.text
    turn: dict[str, Any] = response.json()["turns"][index]
    return turn


def _quote_before(turn: dict[str, Any], n: int) -> dict[str, Any]:
    """The quote the first `[n]` of the answer closes (the sentence copied just before it)."""
    before = fold(turn["answer"][: turn["answer"].index(f"[{n}]")])
    quotes = [q for q in turn["quotes"] if q["n"] == n and fold(q["text"]) in before]
    assert quotes, (turn["answer"], turn["quotes"])
    return max(quotes, key=lambda q: before.rfind(fold(q["text"])))


def _pdfium_rects(path: Path, page_no: int, text: str) -> list[tuple[float, ...]]:
    """Where pdfium's own text search finds `text` on the page, in page fractions. A quote
    that crosses a line break is found as its longest runs of words (three or more)."""
    import pypdfium2 as pdfium

    page = pdfium.PdfDocument(str(path))[page_no - 1]
    width, height = page.get_size()
    textpage = page.get_textpage()
    words = text.split()
    out: list[tuple[float, ...]] = []
    found = 0
    i = 0
    while i < len(words):
        for j in range(len(words), i + 2, -1):
            hit = textpage.search(" ".join(words[i:j]), match_case=True).get_next()
            if hit is not None:
                index, count = hit
                for k in range(textpage.count_rects(index, count)):
                    left, bottom, right, top = textpage.get_rect(k)
                    out.append((left / width, 1 - top / height, right / width, 1 - bottom / height))
                found += j - i
                i = j
                break
        else:
            i += 1
    assert found >= 0.8 * len(words), f"pdfium found {found} of {len(words)} words of {text!r}"
    return out


def _covered(expected: list[tuple[float, ...]], drawn: list[list[float]]) -> float:
    """The share of the expected rectangles' area that the drawn ones cover (on a fine grid)."""
    size = 2000
    grid = np.zeros((size, size), dtype=bool)
    for x0, y0, x1, y1 in drawn:
        grid[int(y0 * size) : int(np.ceil(y1 * size)), int(x0 * size) : int(np.ceil(x1 * size))] = (
            True
        )
    total = hit = 0
    for x0, y0, x1, y1 in expected:
        cells = grid[
            int(y0 * size) : int(np.ceil(y1 * size)), int(x0 * size) : int(np.ceil(x1 * size))
        ]
        total += cells.size
        hit += int(cells.sum())
    assert total > 0
    return hit / total


async def _in_view(web: Web, selector: str) -> bool:
    """Whether the element is within the viewer's visible scroll area."""
    inside: bool = await web.page.evaluate(
        """(selector) => {
            const el = document.querySelector(selector);
            const box = document.getElementById("viewer-body").getBoundingClientRect();
            const r = el.getBoundingClientRect();
            return r.top >= box.top - 1 && r.bottom <= box.bottom + 1
                && r.left >= box.left - 1 && r.right <= box.right + 1;
        }""",
        selector,
    )
    return inside


async def test_citation_shows_the_quote_where_pdfium_finds_it(
    paper: dict[str, Any], web: Web, stack: Stack
) -> None:
    await web.tick(paper["filename"])
    turn = await _answered(web, "How does a trace tree handle loops in the tracing JIT?")
    stored = await _stored_turn(web, stack)
    # The answer's first citation, whichever source it names (the answer's order is the
    # answerer's, not the sources').
    n = int(re.search(r"\[(\d+)\]", stored["answer"]).group(1))  # type: ignore[union-attr]
    quote = _quote_before(stored, n)
    cited_page = stored["sources"][n - 1]["page"]
    assert quote["page"] == cited_page

    link = turn.locator(".answer a.cite").first
    await expect(link).to_have_text(f"[{n}]")
    await link.click()
    viewer = web.page.locator("#viewer")
    await expect(viewer).to_be_visible()
    await expect(viewer.locator("#viewer-page")).to_have_text(f"Page {cited_page} of 14")
    await expect(viewer.locator(".hl.quote.focus").first).to_be_attached()
    await expect(viewer.locator(".hl.chunk").first).to_be_attached()
    assert await _in_view(web, "#viewer .hl.quote.focus"), "the quote is scrolled into view"
    await web.shot("viewer-01-pdf-quote")

    # The drawn highlight covers the sentence where pdfium, reading the PDF itself, finds it.
    drawn = await web.page.evaluate(_DRAWN, "#viewer .hl.quote.focus")
    expected = _pdfium_rects(PAPER, cited_page, quote["text"])
    assert _covered(expected, drawn) >= 0.8, (expected, drawn)
    # The image is the page: its proportions are the PDF page's.
    natural = await viewer.locator(".page-image").evaluate("i => i.naturalHeight / i.naturalWidth")
    import pypdfium2 as pdfium

    width, height = pdfium.PdfDocument(str(PAPER))[cited_page - 1].get_size()
    assert abs(natural - height / width) < 0.01

    # Keyboard: arrows turn pages (not while typing), Esc closes and gives focus back.
    keys = web.page.keyboard
    await keys.press("ArrowRight")
    await expect(viewer.locator("#viewer-page")).to_have_text(f"Page {cited_page + 1} of 14")
    await expect(viewer.locator(".page-image")).to_be_visible()
    await expect(viewer.locator(".hl")).to_have_count(0)
    await expect(viewer.locator("#viewer-back")).to_have_text(f"Back to page {cited_page}")
    await keys.press("ArrowLeft")
    await expect(viewer.locator("#viewer-page")).to_have_text(f"Page {cited_page} of 14")
    await expect(viewer.locator(".hl.quote.focus").first).to_be_attached()
    await web.page.locator("#question").focus()
    await keys.press("ArrowRight")
    await expect(viewer.locator("#viewer-page")).to_have_text(f"Page {cited_page} of 14")
    await viewer.locator("#viewer-zoom-in").click()
    await expect(viewer.locator("#viewer-zoom")).to_have_text("150%")
    await web.page.wait_for_function(
        """() => document.querySelector("#viewer .page-frame").getBoundingClientRect().width
                 / document.getElementById("viewer-body").clientWidth > 1.3"""
    )
    await expect(viewer.locator("#viewer-body")).not_to_have_class(re.compile("loading"))
    await expect(viewer.locator(".hl.quote.focus").first).to_be_attached()
    assert await _in_view(web, "#viewer .hl.quote.focus"), "zoomed, the quote is still in view"
    await web.shot("viewer-02-zoomed")
    await keys.press("Escape")
    await expect(viewer).to_be_hidden()
    assert await link.evaluate("a => a === document.activeElement"), "focus back on the citation"
    await expect(web.page.locator(".docs")).to_be_visible()

    # A source card opens the viewer too, and says what it quotes.
    card = turn.locator(f'.source[data-n="{n}"] .source-card')
    first_quote = next(q for q in stored["quotes"] if q["n"] == n)
    await expect(card.locator(".snippet")).to_contain_text(first_quote["text"].split()[0])
    await card.click()
    await expect(viewer.locator("#viewer-page")).to_have_text(f"Page {cited_page} of 14")


async def test_scanned_page_highlight_lies_on_the_recognised_words(
    web: Web, stack: Stack, tmp_path: Path
) -> None:
    """On a scan the highlight is checked by reading the highlighted patch of the page image
    again with Tesseract: it holds the quote's words."""
    import tesserocr

    from docqa.formats.ocr import tessdata_dir

    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        response = await upload_file(client, unique_copy(SCAN, tmp_path))
        assert response.status_code == 200, response.text
        doc = await wait_terminal(client, response.json()["document_id"], timeout=300)
    assert doc["status"] == "ready", doc
    await web.page.reload()
    await web.tick(doc["filename"])
    turn = await _answered(web, "What did he fall over when passing the kitchen?")
    stored = await _stored_turn(web, stack)
    quote = _quote_before(stored, 1)
    await turn.locator(".answer a.cite").first.click()
    viewer = web.page.locator("#viewer")
    await expect(viewer.locator("#viewer-page")).to_have_text("Page 1 of 1")
    await expect(viewer.locator(".hl.quote.focus").first).to_be_attached()
    await web.shot("viewer-03-scan")

    drawn = await web.page.evaluate(_DRAWN, "#viewer .hl.quote.focus")
    url = f"/api/v1/documents/{doc['document_id']}/pages/1/image"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        image = await client.get(url, params={"width": 2000, "format": "png"})
    page = Image.open(io.BytesIO(image.content)).convert("L")
    read = []
    for x0, y0, x1, y1 in drawn:
        box = (x0 * page.width, y0 * page.height, x1 * page.width, y1 * page.height)
        patch = page.crop(tuple(round(v) for v in box))
        read.append(tesserocr.image_to_text(patch, lang="eng", path=f"{tessdata_dir()}/"))
    seen = set(re.findall(r"[a-z]{4,}", " ".join(read).lower()))
    wanted = set(re.findall(r"[a-z]{4,}", quote["text"].lower()))
    assert len(seen & wanted) >= 0.7 * len(wanted), (wanted - seen, read)


async def test_docx_source_shows_its_text_with_the_quote_marked(
    web: Web, stack: Stack, tmp_path: Path
) -> None:
    import docx

    tag = uuid.uuid4().hex[:6]
    sentence = (
        f"The keeper of the Varn lighthouse polishes its great lens at six every morning ({tag})."
    )
    document = docx.Document()
    document.add_heading("Lighthouse keeping", 1)
    document.add_paragraph("The Varn lighthouse stands on a basalt rock north of the harbour.")
    document.add_paragraph(sentence)
    document.add_paragraph("Its light can be seen twenty nautical miles out to sea.")
    document.add_page_break()
    document.add_heading("Visitors", 1)
    document.add_paragraph("Visitors may climb the tower on Sundays in summer.")
    path = tmp_path / f"lighthouse-{tag}.docx"
    document.save(str(path))
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        response = await upload_file(client, path, content_type="application/octet-stream")
        assert response.status_code == 200, response.text
        doc = await wait_terminal(client, response.json()["document_id"])
    assert doc["status"] == "ready", doc
    await web.page.reload()
    await web.tick(path.name)
    turn = await _answered(web, "When does the keeper polish the lens of the Varn lighthouse?")
    stored = await _stored_turn(web, stack)
    assert any(fold(sentence) == fold(q["text"]) for q in stored["quotes"]), stored["quotes"]
    await turn.locator(".answer a.cite").first.click()
    viewer = web.page.locator("#viewer")
    mark = viewer.locator(".page-text mark.quote.focus")
    await expect(mark.first).to_be_visible()
    marked = fold(" ".join(await mark.all_text_contents()))
    assert marked == fold(_quote_before(stored, 1)["text"])
    await expect(viewer.locator(".page-image")).to_have_count(0)
    assert await _in_view(web, "#viewer .page-text mark.quote.focus")
    await web.shot("viewer-04-docx-text")
    if doc["page_count"] > 1:
        await viewer.locator("#viewer-next").click()
        await expect(viewer.locator(".page-text")).to_contain_text("Visitors may climb")
        await expect(viewer.locator(".page-text mark")).to_have_count(0)

    # Deleted, the document's past answer still shows the passage it was cited from.
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        deleted = await client.delete(f"/api/v1/documents/{doc['document_id']}")
    assert deleted.status_code == 204
    await web.page.reload()
    restored = web.last_turn()
    card = restored.locator('.source[data-n="1"]')
    await expect(card.locator(".source-gone")).to_have_text("deleted")
    await card.locator(".source-card").click()
    await expect(viewer.locator("#viewer-note")).to_contain_text("has been deleted")
    await expect(viewer.locator(".page-text mark.quote").first).to_contain_text("Varn lighthouse")
    await expect(viewer.locator("#viewer-original")).to_be_hidden()
    await web.shot("viewer-05-deleted-source")


async def test_phone_viewer_is_a_full_screen_sheet(paper: dict[str, Any], phone_web: Web) -> None:
    web = phone_web
    await web.tick(paper["filename"])
    turn = await _answered(web, "What is a trace tree?")
    await turn.locator(".source-card").first.click()
    viewer = web.page.locator("#viewer")
    await expect(viewer.locator(".hl.chunk").first).to_be_attached()
    box = await viewer.bounding_box()
    assert box is not None
    assert (box["x"], box["y"], box["width"], box["height"]) == (
        0,
        0,
        PHONE["width"],
        PHONE["height"],
    )
    # Opened at twice the screen's width, scrolled so the cited passage is on screen.
    mark = (
        "#viewer .hl.quote.focus"
        if await viewer.locator(".hl.quote").count()
        else "#viewer .hl.chunk"
    )
    assert await _in_view(web, mark), "the cited passage is on screen"
    await web.shot("viewer-06-phone-sheet")
    overflow = await web.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px"
    await viewer.locator("#viewer-close").click()
    await expect(viewer).to_be_hidden()
    await expect(web.page.locator("#ask-form")).to_be_visible()


async def test_conversation_is_kept_renamed_and_deleted(
    paper: dict[str, Any], web: Web, stack: Stack
) -> None:
    await web.tick(paper["filename"])
    first = "What is a trace tree?"
    turn = await _answered(web, first)
    answer = await turn.locator(".answer").text_content()
    await expect(web.page.locator("#conv-title")).to_have_text(first)
    cid = await web.page.evaluate("localStorage.getItem('docqa.conversation')")

    await web.page.reload()
    await expect(web.page.locator(".turn.user .bubble")).to_have_text([first])
    await expect(web.last_turn().locator(".answer")).to_have_text(answer or "")
    await expect(web.last_turn().locator(".source-card").first).to_be_visible()
    await expect(web.page.locator("#conv-title")).to_have_text(first)
    await web.tick(paper["filename"])
    await _answered(web, "And how are side exits handled?")
    assert await web.page.evaluate("localStorage.getItem('docqa.conversation')") == cid

    panel = web.page.locator("#conv-panel")
    await web.page.locator("#conv-toggle").click()
    current = panel.locator('.conv[aria-current="true"]')
    await expect(current.locator(".conv-name")).to_have_text(first)
    await expect(current.locator(".conv-meta")).to_contain_text("2 questions")
    await current.get_by_role("button", name=f"Rename {first}").click()
    dialog = web.page.locator("#rename-dialog")
    await dialog.locator("#rename-input").fill("Trace trees")
    await dialog.locator("#rename-input").press("Enter")
    await expect(current.locator(".conv-name")).to_have_text("Trace trees")
    await expect(web.page.locator("#conv-title")).to_have_text("Trace trees")
    await web.shot("viewer-07-conversations")

    await web.page.locator("#new-chat").click()
    await expect(web.page.locator(".turn")).to_have_count(0)
    await expect(web.page.locator("#intro")).to_be_visible()
    await panel.locator(".conv", has_text="Trace trees").locator(".conv-open").click()
    await expect(web.page.locator(".turn.user")).to_have_count(2)

    row = panel.locator(".conv", has_text="Trace trees")
    await row.get_by_role("button", name="Delete Trace trees").click()
    await web.page.locator("#confirm-dialog").get_by_role("button", name="Delete").click()
    await expect(row).to_have_count(0)
    await expect(web.page.locator(".turn")).to_have_count(0)
    async with httpx.AsyncClient(base_url=stack.base_url) as client:
        assert (await client.get(f"/api/v1/conversations/{cid}")).status_code == 404
    await web.page.reload()
    await expect(web.page.locator("#intro")).to_be_visible()
    await expect(web.page.locator(".turn")).to_have_count(0)


async def test_an_answer_the_documents_do_not_hold_is_said_plainly(
    paper: dict[str, Any], browser: Browser, stack: Stack, llm_api: str, mock_llm: MockLLM
) -> None:
    marker = uuid.uuid4().hex[:8]
    reply = "The documents do not say when the lighthouse was last painted."
    await mock_llm.script({"match": marker, "stream": True, "text": reply})
    _, key = split_key(stack.base_url)
    url = llm_api.replace("://", f"://{key}@", 1) if key else llm_api
    async for web in open_tab(browser, url, DESKTOP):
        await web.tick(paper["filename"])
        turn = await _answered(web, f"When was the lighthouse painted? ({marker})", "Model answer")
        await expect(turn.locator(".notice")).to_contain_text("Not found in your documents.")
        await expect(turn.locator(".alert")).to_be_hidden()
        await expect(turn.locator(".answer")).to_have_text(reply)
        await web.shot("viewer-08-not-found")
