"""HTML: the visible text in sections, with its headings, and its tables as tables."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from docqa.formats.page import Block, Heading, Page, ReadContext, sections
from docqa.formats.text import decode, paragraphs

_HEADINGS = ("h1", "h2", "h3", "h4")
# Replaced by a marker while the text is flattened, then swapped for the real block.
_MARK = "\u2063docqa-block-{}\u2063"


def table_rows(table: Any) -> list[list[str]]:
    """The rows of an HTML table (nested tables flattened into their cell's text)."""
    rows = []
    for tr in table.find_all("tr"):
        if tr.find_parent("table") is not table:
            continue
        cells: list[str] = []
        for cell in tr.find_all(["th", "td"], recursive=False):
            text = cell.get_text(" ", strip=True)
            cells += [text] * _span(cell.get("colspan"))
        if any(cells):
            rows.append(cells)
    return rows


def _span(value: Any) -> int:
    try:
        return max(1, min(int(str(value)), 50))
    except ValueError:
        return 1


def html_blocks(markup: str) -> Iterator[Block]:
    from bs4 import BeautifulSoup, NavigableString

    with warnings.catch_warnings():
        # XHTML and XML-declared pages parse well as HTML; bs4 warns about it.
        warnings.simplefilter("ignore")
        soup = BeautifulSoup(markup, "lxml")
    for tag in soup(["script", "style", "noscript", "template", "head", "svg"]):
        tag.decompose()
    blocks: list[Block] = []
    for table in soup.find_all("table"):
        if table.find_parent("table") is None:
            rows = table_rows(table)
            blocks.append(rows)
            table.replace_with(NavigableString("\n\n" + _MARK.format(len(blocks) - 1) + "\n\n"))
    for heading in soup.find_all(_HEADINGS):
        text = heading.get_text(" ", strip=True)
        if text:
            blocks.append(Heading(text))
            heading.replace_with(NavigableString("\n\n" + _MARK.format(len(blocks) - 1) + "\n\n"))
    for para in paragraphs(soup.get_text("\n")):
        stripped = para.strip()
        if stripped.startswith("\u2063docqa-block-") and stripped.endswith("\u2063"):
            index = int(stripped.strip("\u2063").rsplit("-", 1)[1])
            yield blocks[index]
        else:
            yield para


def read(path: Path, ctx: ReadContext) -> Iterator[Page]:
    yield from sections(html_blocks(decode(path.read_bytes(), is_html=True)))
