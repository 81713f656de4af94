"""Markdown: sections at paragraph boundaries, `#` headings as the headings chunks are filed
under, and pipe tables kept as tables (see `docqa.formats.text.markdown_blocks`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from docqa.formats.page import Page, ReadContext, sections
from docqa.formats.text import decode, markdown_blocks


def read(path: Path, ctx: ReadContext) -> Iterator[Page]:
    yield from sections(markdown_blocks(decode(path.read_bytes())))
