"""Format readers: each turns a file into `(page_no, text)` pairs, one page at a time.

These run inside the sandboxed extraction process (see `extract.py`), never in a server process.
PDFs have real pages. DOCX, HTML, Markdown and plain text have none, so they are cut into sections
of about `SECTION_CHARS` characters at paragraph boundaries, or at the page breaks a DOCX records.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from docqa.errors import ExtractionFailed

SECTION_CHARS = 3000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def count_pages_pdf(path: Path) -> tuple[object, int]:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code == pdfium.raw.FPDF_ERR_PASSWORD:
            raise ExtractionFailed(
                "encrypted", "This PDF is protected by a password, so its text cannot be read."
            ) from None
        if code == pdfium.raw.FPDF_ERR_SECURITY:
            raise ExtractionFailed(
                "encrypted", "This PDF uses an encryption scheme that cannot be opened."
            ) from None
        raise ExtractionFailed(
            "corrupt", "This file is damaged or is not a valid PDF, so it cannot be read."
        ) from None
    return pdf, len(pdf)


def read_pdf(pdf: object, total: int) -> Iterator[tuple[int, str]]:
    import pypdfium2 as pdfium

    assert isinstance(pdf, pdfium.PdfDocument)
    for index in range(total):
        try:
            page = pdf[index]
            textpage = page.get_textpage()
            text = textpage.get_text_bounded()
            textpage.close()
            page.close()
        except pdfium.PdfiumError:
            # One unreadable page should not cost the whole document.
            text = ""
        yield index + 1, clean_text(text)


def sections(paragraphs: Iterator[str], size: int = SECTION_CHARS) -> Iterator[str]:
    """Group paragraphs into sections of about `size` characters; a page break is `\\f`."""
    current: list[str] = []
    length = 0
    for para in paragraphs:
        if para == "\f":
            if current:
                yield "\n\n".join(current)
            current, length = [], 0
            continue
        if current and length + len(para) > size:
            yield "\n\n".join(current)
            current, length = [], 0
        # A single paragraph longer than a section is cut at a line or word boundary.
        while len(para) > size:
            cut = para.rfind("\n", 0, size)
            if cut < size // 2:
                cut = para.rfind(" ", 0, size)
            if cut < size // 2:
                cut = size
            yield para[:cut]
            para = para[cut:].lstrip()
        current.append(para)
        length += len(para)
    if current:
        yield "\n\n".join(current)


def _docx_paragraphs(path: Path) -> Iterator[str]:
    import zipfile

    import docx
    from docx.oxml.ns import qn

    try:
        document = docx.Document(str(path))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ExtractionFailed(
            "corrupt", "This file is damaged or is not a valid Word (DOCX) document."
        ) from exc
    body = document.element.body
    for block in body.iterchildren():
        if block.tag == qn("w:p"):
            breaks = block.findall(".//" + qn("w:br"))
            rendered = block.findall(".//" + qn("w:lastRenderedPageBreak"))
            if rendered or any(b.get(qn("w:type")) == "page" for b in breaks):
                yield "\f"
            text = "".join(t.text or "" for t in block.iter(qn("w:t")))
            if text.strip():
                yield text
        elif block.tag == qn("w:tbl"):
            for row in block.iter(qn("w:tr")):
                cells = []
                for cell in row.iter(qn("w:tc")):
                    cells.append(" ".join(t.text or "" for t in cell.iter(qn("w:t"))).strip())
                line = " | ".join(c for c in cells if c)
                if line:
                    yield line


def _decode(data: bytes, is_html: bool) -> str:
    from bs4.dammit import UnicodeDammit

    dammit = UnicodeDammit(data, ["utf-8", "cp1252"], is_html=is_html)
    if dammit.unicode_markup is None:
        raise ExtractionFailed("corrupt", "The text encoding of this file could not be recognised.")
    return str(dammit.unicode_markup)


def _html_paragraphs(path: Path) -> Iterator[str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decode(path.read_bytes(), is_html=True), "lxml")
    for tag in soup(["script", "style", "noscript", "template", "head", "svg"]):
        tag.decompose()
    text = soup.get_text("\n")
    yield from _text_paragraphs(text)


def _text_paragraphs(text: str) -> Iterator[str]:
    for para in re.split(r"\n\s*\n", text):
        para = clean_text(para)
        if para:
            yield para


def read_sections(path: Path, kind: str) -> Iterator[tuple[int, str]]:
    if kind == "docx":
        paragraphs = _docx_paragraphs(path)
    elif kind == "html":
        paragraphs = _html_paragraphs(path)
    else:
        paragraphs = _text_paragraphs(_decode(path.read_bytes(), is_html=False))
    for number, text in enumerate(sections(paragraphs), start=1):
        yield number, clean_text(text)
