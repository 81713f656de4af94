"""EPUB: the chapters in the reading order of the book's spine, each starting a new section
headed by its title (from the table of contents, else the chapter's own first heading); the
chapter's XHTML is read as HTML is (`docqa.formats.html`), tables as tables.
"""

from __future__ import annotations

import posixpath
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from docqa.errors import ExtractionFailed
from docqa.formats import zipguard
from docqa.formats.html import html_blocks
from docqa.formats.page import Block, Heading, Page, ReadContext, sections
from docqa.formats.text import decode

NAME = "an EPUB e-book"
# A chapter whose first few blocks hold no heading gets its table-of-contents title as one.
_HEADING_WITHIN = 3


def _toc_titles(toc: Any, into: dict[str, str]) -> dict[str, str]:
    """Chapter file → its first title in the table of contents (nested sections flattened)."""
    for entry in toc:
        if isinstance(entry, tuple | list):
            section, children = entry[0], entry[1] if len(entry) > 1 else []
            _add_title(section, into)
            _toc_titles(children, into)
        else:
            _add_title(entry, into)
    return into


def _add_title(entry: Any, into: dict[str, str]) -> None:
    href = getattr(entry, "href", None)
    title = " ".join(str(getattr(entry, "title", "") or "").split())
    if href and title:
        into.setdefault(posixpath.normpath(str(href).split("#", 1)[0]), title)


def _chapter_blocks(markup: bytes, title: str) -> Iterator[Block]:
    blocks = list(html_blocks(decode(markup, is_html=True)))
    if title and not any(isinstance(b, Heading) for b in blocks[:_HEADING_WITHIN]):
        yield Heading(title)
    yield from blocks


def _book_blocks(path: Path) -> Iterator[Block | None]:
    from ebooklib import ITEM_DOCUMENT, epub

    zipguard.check(path, NAME)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ebooklib warns about its future defaults
            book = epub.read_epub(str(path), {"ignore_ncx": False})
    except (epub.EpubException, KeyError, ValueError, AttributeError, IndexError) as exc:
        raise ExtractionFailed("corrupt", f"This file is damaged or is not {NAME}.") from exc
    titles = _toc_titles(book.toc, {})
    for idref, _linear in book.spine:
        item = book.get_item_with_id(idref)
        if item is None or item.get_type() != ITEM_DOCUMENT:
            continue
        name = posixpath.normpath(item.get_name())
        # Table-of-contents hrefs are relative to the package document's folder.
        title = titles.get(name) or next(
            (t for href, t in titles.items() if name.endswith("/" + href)), ""
        )
        yield None
        yield from _chapter_blocks(item.get_content(), title)


def read(path: Path, ctx: ReadContext) -> Iterator[Page]:
    yield from sections(_book_blocks(path))
