"""Rich Text (RTF), through striprtf: the text with its code page (`\\ansicpg`, font charsets)
applied, in sections of about `SECTION_CHARS` characters at paragraph boundaries. RTF tables
come out a row a line, their cells separated by `|`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from docqa.errors import ExtractionFailed
from docqa.formats.page import Page, ReadContext, sections
from docqa.formats.text import paragraphs


def read(path: Path, ctx: ReadContext) -> Iterator[Page]:
    from striprtf import striprtf

    rtf_to_text: Callable[..., str] = striprtf.rtf_to_text

    # RTF is 7-bit by specification: anything else is written as escapes that name their code
    # page, so the bytes decode as Latin-1 losslessly and striprtf decodes the escapes.
    source = path.read_bytes().decode("latin-1")
    try:
        text = rtf_to_text(source, errors="replace")
    except (ValueError, IndexError, KeyError) as exc:
        raise ExtractionFailed(
            "corrupt", "This file is damaged or is not a valid RTF document."
        ) from exc
    yield from sections(paragraphs(text.replace("\r\n", "\n")))
