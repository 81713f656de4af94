"""Word (DOCX): paragraphs in document order, headings by style, tables as tables; a section
ends at a page break Word recorded, or at about `SECTION_CHARS` characters."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from docqa.errors import ExtractionFailed
from docqa.formats import zipguard
from docqa.formats.page import Block, Heading, Page, ReadContext, sections


def _text(element: Any, qn: Any) -> str:
    return "".join(t.text or "" for t in element.iter(qn("w:t")))


def _is_heading(paragraph: Any, qn: Any) -> bool:
    style = paragraph.find(qn("w:pPr") + "/" + qn("w:pStyle"))
    name = (style.get(qn("w:val")) or "") if style is not None else ""
    return name.lower().startswith(("heading", "title"))


def _table(element: Any, parent: Any) -> list[list[str]]:
    """The table's rows on its grid: a merged cell's text repeats in every column it spans, so
    each row reads with its headers."""
    from docx.table import Table

    rows = []
    for row in Table(element, parent).rows:
        rows.append([" ".join(cell.text.split()) for cell in row.cells])
    return rows


def docx_blocks(path: Path) -> Iterator[Block | None]:
    import docx
    from docx.oxml.ns import qn

    # A password-protected DOCX is an OLE container: say so, rather than "corrupt".
    zipguard.check(path, "a Word (DOCX) document")
    try:
        document = docx.Document(str(path))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ExtractionFailed(
            "corrupt", "This file is damaged or is not a valid Word (DOCX) document."
        ) from exc
    for block in document.element.body.iterchildren():
        if block.tag == qn("w:p"):
            breaks = block.findall(".//" + qn("w:br"))
            rendered = block.findall(".//" + qn("w:lastRenderedPageBreak"))
            if rendered or any(b.get(qn("w:type")) == "page" for b in breaks):
                yield None
            text = _text(block, qn)
            if text.strip():
                yield Heading(text) if _is_heading(block, qn) else text
        elif block.tag == qn("w:tbl"):
            rows = _table(block, document)
            if rows:
                yield rows


def read(path: Path, ctx: ReadContext) -> Iterator[Page]:
    yield from sections(docx_blocks(path))
