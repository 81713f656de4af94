"""OpenDocument text (ODT), through odfdo: headings, paragraphs and lists in document order,
tables as tables (a cell's lists and paragraphs flattened into the cell), in sections of about
`SECTION_CHARS` characters.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from docqa.errors import ExtractionFailed
from docqa.formats import zipguard
from docqa.formats.page import Block, Heading, Page, ReadContext, sections

NAME = "an OpenDocument text (ODT)"
# Repeated rows and cells (an empty row repeated a million times is one element in the file)
# are read only this far.
_MAX_TABLE_ROWS = 20_000
_MAX_ROW_CELLS = 500
_CONTAINERS = (
    "text:section",
    "text:index-body",
    "text:table-of-content",
    "text:alphabetical-index",
)


def _text(element: Any) -> str:
    return str(element.text_recursive or "")


def _table(table: Any) -> list[list[str]]:
    rows: list[list[str]] = []
    for row in islice(table.traverse(), _MAX_TABLE_ROWS):
        cells = [" ".join(_text(c).split()) for c in islice(row.traverse(), _MAX_ROW_CELLS)]
        if any(cells):
            rows.append(cells)
    return rows


def _blocks(element: Any) -> Iterator[Block]:
    for child in element.children:
        tag = child.tag
        if tag == "text:h":
            yield Heading(_text(child))
        elif tag == "table:table":
            rows = _table(child)
            if rows:
                yield rows
        elif tag in _CONTAINERS:
            yield from _blocks(child)
        elif tag in ("text:p", "text:list", "text:numbered-paragraph"):
            text = _text(child)
            if text.strip():
                yield text


def read(path: Path, ctx: ReadContext) -> Iterator[Page]:
    from odfdo import Document

    zipguard.check(path, NAME)
    try:
        document = Document(str(path))
        body = document.body
    except (KeyError, ValueError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
        raise ExtractionFailed("corrupt", f"This file is damaged or is not {NAME}.") from exc
    if document.get_type() not in ("text", "text-template"):
        raise ExtractionFailed(
            "unsupported_type",
            f"This file is an OpenDocument {document.get_type()}, not a text document; docqa "
            "reads OpenDocument text (.odt) only.",
        )
    yield from sections(_blocks(body))
