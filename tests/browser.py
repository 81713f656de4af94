"""Driving the docqa page in headless Debian Chromium: launch options, and `Web`, one tab on the
page with the helpers the browser tests share (drop files, find rows, record what was shown).

Also a pytest plugin (see conftest.py): the session's `browser` and the `paper` every asking
test uses.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Locator, Page, async_playwright, expect

from tests.stack import ROOT, SHARED_DATA, Stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ROOT / "test-output" / "screenshots"
DESKTOP = {"width": 1280, "height": 820}
PHONE = {"width": 390, "height": 844}

# A real 14-page two-column paper, 1 MB.
PAPER = SHARED_DATA / "pdfs" / "pdfjs_test" / "tracemonkey.pdf"

# Chromium logs every 4xx/5xx response on the console; those are expected, page errors are not.
_EXPECTED_CONSOLE = re.compile(r"Failed to load resource|status of \d{3}")


def split_key(url: str) -> tuple[str, str | None]:
    """A base URL without the API key the tests may carry in it as user name, and that key.

    A page loaded from `http://KEY@host/` could not fetch anything (browsers refuse credentials
    in subresource URLs); the page takes its key from localStorage instead.
    """
    parts = urlsplit(url)
    if not parts.username:
        return url, None
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc)), parts.username


@dataclass
class Web:
    """One browser tab on the docqa page."""

    page: Page
    context: BrowserContext
    base_url: str

    async def open(self) -> None:
        await self.page.goto(self.base_url + "/")
        await expect(self.page.locator("#doc-list")).to_be_attached()

    def row(self, filename: str) -> Locator:
        """The document row whose name is exactly `filename`."""
        name = self.page.locator(".doc-name", has_text=re.compile(f"^{re.escape(filename)}$"))
        return self.page.locator(".doc", has=name)

    async def drop(self, *paths: Path, names: list[str] | None = None) -> None:
        """Drop files on the drop zone, as a person dragging them from a file manager does."""
        files = [
            {
                "name": names[i] if names else path.name,
                "b64": base64.b64encode(path.read_bytes()).decode(),
                "type": "application/pdf" if path.suffix == ".pdf" else "text/plain",
            }
            for i, path in enumerate(paths)
        ]
        await self.page.evaluate(
            """(files) => {
                const data = new DataTransfer();
                for (const f of files) {
                    const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
                    data.items.add(new File([bytes], f.name, {type: f.type}));
                }
                const zone = document.getElementById("dropzone");
                for (const type of ["dragenter", "dragover", "drop"]) {
                    zone.dispatchEvent(new DragEvent(type, {
                        bubbles: true, cancelable: true, dataTransfer: data}));
                }
            }""",
            files,
        )

    async def watch_row(self, filename: str) -> None:
        """Record every state the row of `filename` shows, however briefly, in `__rowStates`."""
        await self.page.evaluate(
            """(name) => {
                window.__rowStates = [];
                const record = () => {
                    for (const row of document.querySelectorAll(".doc")) {
                        if (row.querySelector(".doc-name").textContent !== name) continue;
                        const state = {
                            status: row.dataset.status,
                            text: row.querySelector(".doc-status").textContent,
                            value: Number(row.querySelector(".progress")
                                .getAttribute("aria-valuenow")),
                        };
                        const last = window.__rowStates.at(-1);
                        if (!last || last.text !== state.text || last.status !== state.status) {
                            window.__rowStates.push(state);
                        }
                    }
                };
                new MutationObserver(record).observe(document.getElementById("doc-list"),
                    {subtree: true, childList: true, characterData: true, attributes: true});
            }""",
            filename,
        )

    async def row_states(self) -> list[dict[str, Any]]:
        states: list[dict[str, Any]] = await self.page.evaluate("window.__rowStates")
        return states

    async def watch_answer(self) -> None:
        """Record each text the newest answer shows, with the time, in `__answerStates`."""
        await self.page.evaluate(
            """() => {
                window.__answerStates = [];
                const record = () => {
                    const answers = document.querySelectorAll(".turn.assistant .answer");
                    const text = answers.length ? answers[answers.length - 1].textContent : "";
                    const last = window.__answerStates.at(-1);
                    if (text && (!last || last.text !== text)) {
                        window.__answerStates.push({text, t: performance.now()});
                    }
                };
                new MutationObserver(record).observe(document.getElementById("messages"),
                    {subtree: true, childList: true, characterData: true});
            }"""
        )

    async def answer_states(self) -> list[dict[str, Any]]:
        states: list[dict[str, Any]] = await self.page.evaluate("window.__answerStates")
        return states

    def last_turn(self) -> Locator:
        return self.page.locator(".turn.assistant").last

    async def ask(self, question: str) -> None:
        await self.page.fill("#question", question)
        await self.page.click("#send")

    async def tick(self, filename: str) -> None:
        await self.row(filename).locator("input.pick").check()

    async def delete(self, filename: str) -> None:
        await self.row(filename).get_by_role("button", name=f"Delete {filename}").click()
        await self.page.locator("#confirm-dialog").get_by_role("button", name="Delete").click()
        await expect(self.row(filename)).to_have_count(0)

    async def shot(self, name: str, *, full_page: bool = False) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


async def open_tab(
    browser: Browser, base_url: str, viewport: dict[str, int], *, with_key: bool = True
) -> AsyncIterator[Web]:
    """A fresh context on the page; fails the test if the page threw or logged an error.

    When `base_url` carries an API key (the suite run with DOCQA_TEST_AUTH=keys), the page
    finds it in localStorage, as if a person had entered it once.
    """
    bare, key = split_key(base_url)
    context = await browser.new_context(viewport=viewport)
    if key and with_key:
        await context.add_init_script(
            f"if (!localStorage.getItem('docqa.apiKey')) "
            f"localStorage.setItem('docqa.apiKey', {json.dumps(key)});"
        )
    page = await context.new_page()
    page.set_default_timeout(30_000)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if msg.type == "error" and not _EXPECTED_CONSOLE.search(msg.text)
            else None
        ),
    )
    web = Web(page, context, bare)
    await web.open()
    try:
        yield web
    finally:
        await context.close()
    assert problems == [], problems


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/system-deps.sh installs it)")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        await chromium.close()


@pytest.fixture
async def web(browser: Browser, stack: Stack) -> AsyncIterator[Web]:
    """The page on the main stack (the built-in extractive answerer), at desktop width."""
    async for tab in open_tab(browser, stack.base_url, DESKTOP):
        yield tab


@pytest.fixture
async def phone_web(browser: Browser, stack: Stack) -> AsyncIterator[Web]:
    async for tab in open_tab(browser, stack.base_url, PHONE):
        yield tab


@pytest.fixture(scope="session")
async def paper(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The paper, uploaded once through the API and ready, for the tests that only ask."""
    from tests.conftest import unique_copy, upload_file, wait_terminal

    if not PAPER.exists():
        pytest.skip(f"the shared data folder {SHARED_DATA} is absent")
    path = unique_copy(PAPER, tmp_path_factory.mktemp("paper"))
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        response = await upload_file(client, path)
        assert response.status_code == 200, response.text
        doc: dict[str, Any] = await wait_terminal(client, response.json()["document_id"])
    assert doc["status"] == "ready", doc
    return doc
