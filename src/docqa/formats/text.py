"""Plain text and Markdown: sections of about `SECTION_CHARS` characters at paragraph boundaries.

Markdown headings (`# ...`) become the headings chunks are filed under, and Markdown tables are
kept as tables, so chunks repeat their header row.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from docqa.errors import ExtractionFailed
from docqa.formats.page import Block, Heading, Page, ReadContext, sections

_ATX_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
_TABLE_SEPARATOR = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def decode(data: bytes, *, is_html: bool = False) -> str:
    """The text of a file whose encoding nobody declared: a BOM or the HTML's own declaration
    first, then UTF-8, then a guess among the common single-byte and East Asian encodings."""
    from bs4.dammit import UnicodeDammit

    dammit = UnicodeDammit(data, ["utf-8", "cp1252"], is_html=is_html)
    if dammit.unicode_markup is None:
        raise ExtractionFailed("corrupt", "The text encoding of this file could not be recognised.")
    return str(dammit.unicode_markup)


def paragraphs(text: str) -> Iterator[str]:
    for para in re.split(r"\n\s*\n", text):
        if para.strip():
            yield para


def markdown_blocks(text: str) -> Iterator[Block]:
    """Paragraphs, `#` headings and pipe tables of a Markdown text."""
    for para in paragraphs(text):
        lines = para.strip("\n").split("\n")
        if (
            len(lines) >= 2
            and lines[0].lstrip().startswith("|")
            and _TABLE_SEPARATOR.match(lines[1].strip())
        ):
            rows = [lines[0], *lines[2:]]
            yield [_pipe_cells(r) for r in rows if r.strip()]
            continue
        buffer: list[str] = []
        for line in lines:
            match = _ATX_HEADING.match(line.strip())
            if match:
                if buffer:
                    yield "\n".join(buffer)
                    buffer = []
                yield Heading(match.group(1))
            else:
                buffer.append(line)
        if buffer:
            yield "\n".join(buffer)


def _pipe_cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)]


def read(path: Path, ctx: ReadContext) -> Iterator[Page]:
    """Plain text. (A stored upload has no file extension: the format table sends Markdown to
    `docqa.formats.markdown`.)"""
    yield from sections(paragraphs(decode(path.read_bytes())))
