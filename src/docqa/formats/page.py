"""What a reader produces: pages of text, with where the text sits, its tables and its furniture.

A `Page` is what one page (or slide, sheet part, section) says, as clean text, plus:
- `words`: `(start, end, x0, y0, x1, y1)`: a run of the text and its box on the page, in page
  fractions with the origin top-left. Only formats with page images have them (PDF text layers,
  OCR); citations highlight with them.
- `tables`: where Markdown tables sit in the text, so that chunks keep a table's rows together
  and repeat its header row.
- `furniture`: spans of running headers, footers and page numbers: they stay in the page's text
  but are kept out of chunks.

Readers build the text through `PageBuilder` (paragraphs, headings, tables) or, where they track
geometry themselves (PDF), set the fields directly.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from docqa.errors import ExtractionFailed

# (start, end, x0, y0, x1, y1)
Word = tuple[int, int, float, float, float, float]
Span = tuple[int, int]


@dataclass(frozen=True)
class TableSpan:
    start: int  # the table's first character in the page text
    end: int  # one past its last character
    header_end: int  # end of its header rows (header and separator line); `start` if none


@dataclass
class Page:
    number: int  # 1-based, in reading order
    text: str
    heading: str = ""  # the section this page belongs to: slide title, sheet name, chapter
    # Headings inside the page: (offset, text). A chunk's heading is the last one before it.
    headings: list[tuple[int, str]] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)
    tables: list[TableSpan] = field(default_factory=list)
    furniture: list[Span] = field(default_factory=list)
    ocr: bool = False


class ReadContext:
    """What a reader may ask of the extraction process it runs in: limits, settings, and ways to
    report. The sandbox's implementation sends each report to the worker over a pipe."""

    def __init__(
        self,
        *,
        max_pages: int,
        ocr: bool = True,
        ocr_languages: str = "eng",
        ocr_timeout_s_per_page: float = 30.0,
        report: Callable[[tuple[object, ...]], None] | None = None,
    ) -> None:
        self.max_pages = max_pages
        self.ocr = ocr
        self.ocr_languages = ocr_languages
        # The extra time to ask for (`extend_budget`) for each page that needs recognising.
        self.ocr_timeout_s_per_page = ocr_timeout_s_per_page
        self._report = report or (lambda message: None)

    def total(self, pages: int) -> None:
        """The number of pages, once known; raises `too_many_pages` over the limit."""
        check_page_count(pages, self.max_pages)
        self._report(("total", pages))

    def stage(self, name: str, done: int, total: int) -> None:
        """Progress of a slow stage inside reading (`ocr`: pages recognised of those that need
        it)."""
        self._report(("stage", name, done, total))

    def extend_budget(self, seconds: float) -> None:
        """Ask for more time: work found while reading (pages to recognise) needs it."""
        self._report(("budget", seconds))


def check_page_count(count: int, max_pages: int) -> None:
    if count > max_pages:
        raise ExtractionFailed(
            "too_many_pages",
            f"This document has more than {max_pages} pages, the most docqa accepts.",
        )


_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")
# Glyphs fonts use for list bullets (Symbol and Wingdings code points included) become one bullet.
BULLETS = frozenset(
    "\u2022\u25aa\u25cf\u25e6\u2023\u2043\u2219\u25a0\u25a1\u25c6\u25c7\u2756\u27a2"
)
BULLET_PRIVATE = frozenset("\uf0b7\uf0a7\uf076\uf0d8\uf0fc\uf06e\uf0a8\uf0e8\uf071\uf09f\uf02d")
_HYPHEN_BREAK = re.compile(r"(?<=[^\W\d_])-\n(?=[a-zß-öø-ÿ])")


def normalise_char(c: str) -> str:
    """One character as it should read: ligatures expanded, bullets unified, private-use glyphs
    (undecodable icon fonts) and control characters dropped, odd spaces made plain."""
    if c in BULLETS or c in BULLET_PRIVATE:
        return "•"
    code = ord(c)
    if 0xFB00 <= code <= 0xFB06:  # ﬀ ﬁ ﬂ ﬃ ﬄ ﬅ ﬆ
        return unicodedata.normalize("NFKC", c)
    if 0xE000 <= code <= 0xF8FF or code >= 0xF0000 or 0xD800 <= code <= 0xDFFF:
        return ""
    if 0x1D400 <= code <= 0x1D7FF:  # mathematical letters and digits (𝑥, 𝐁): plain ones
        return unicodedata.normalize("NFKC", c)
    if c in "\ufffe\uffff\u00ad\u200b\u200c\u200d\u2060\ufeff" or (code < 0x20 and c not in "\n\t"):
        return ""
    if c == "\x7f":
        return ""
    return c


def clean_text(text: str) -> str:
    """Text as chunks and answers should see it: one kind of line break and space, no control
    or private-use characters, ligatures expanded, words hyphenated at line ends joined, lines
    trimmed, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(normalise_char(c) for c in text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = _HYPHEN_BREAK.sub("", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def markdown_table(rows: Sequence[Sequence[str]], header_rows: int = 1) -> tuple[str, int]:
    """A table as Markdown, and the length of its header part (header rows and the separator).

    Cells are flattened to one line; `|` inside a cell is escaped. A table with no header row
    gets none (its rows are all data); rows are padded to the widest.
    """
    width = max((len(r) for r in rows), default=0)
    if width == 0:
        return "", 0

    def line(cells: Sequence[str]) -> str:
        padded = [_cell(c) for c in cells] + [""] * (width - len(cells))
        return "| " + " | ".join(padded) + " |"

    lines = [line(r) for r in rows]
    if header_rows <= 0:
        return "\n".join(lines), 0
    separator = "| " + " | ".join(["---"] * width) + " |"
    head = "\n".join([*lines[:header_rows], separator])
    body = "\n".join(lines[header_rows:])
    return (head + "\n" + body if body else head), len(head)


# Cells that only carry a unit or a sign belong with the number next to them (filings put "$"
# and ")" in cells of their own).
_ATTACH_RIGHT = frozenset({"$", "€", "£", "¥", "(", "($"})
_ATTACH_LEFT = frozenset({"%", ")", ")%", "%)"})


def tidy_rows(rows: Sequence[Sequence[str]]) -> list[list[str]]:
    """A table's rows with empty rows and empty columns dropped, and currency signs, brackets
    and percent signs joined to the cell they belong to."""
    out: list[list[str]] = []
    for row in rows:
        cells = [" ".join(clean_text(c).split()) for c in row]
        joined: list[str] = []
        carry = ""
        for cell in cells:
            if cell in _ATTACH_RIGHT:
                carry += cell
                joined.append("")
                continue
            if cell in _ATTACH_LEFT and joined:
                j = len(joined) - 1
                while j > 0 and not joined[j]:
                    j -= 1
                joined[j] += cell
                joined.append("")
                continue
            joined.append(carry + cell if carry and cell else cell or carry)
            carry = ""
        if any(joined):
            out.append(joined)
    if not out:
        return []
    width = max(len(r) for r in out)
    for r in out:
        r.extend([""] * (width - len(r)))
    keep = [c for c in range(width) if any(r[c] for r in out)]
    out = merge_header_rows([[r[c] for c in keep] for r in out])
    # A header cell spanning several columns repeats its text over them; a column that holds
    # only that repeat (no data below) is one of the span's spares.
    body = out[1:]
    titles = [out[0][n] for n in range(len(out[0])) if any(r[n] for r in body)]
    spare = {
        c
        for c in range(1, len(out[0]))
        if not any(r[c] for r in body) and any(out[0][c] in title for title in titles)
    }
    out = [[v for c, v in enumerate(r) if c not in spare] for r in out]
    # A cell spanning columns in every row is one column.
    twins = {c for c in range(1, len(out[0])) if all(r[c] == r[c - 1] for r in out)}
    return [[v for c, v in enumerate(r) if c not in twins] for r in out]


_DATA = re.compile(r"^[($€£¥-]*\d[\d,.]*\)?%?$|^[-—–]$")
_YEAR = re.compile(r"^(19|20)\d\d$")


def _is_header_row(row: Sequence[str]) -> bool:
    """A row of column titles: nothing in it reads as a data value (years may title a column)."""
    values = [c for c in row[1:] if c]
    return bool(values) and not any(_DATA.match(c) and not _YEAR.match(c) for c in values)


def merge_header_rows(rows: list[list[str]]) -> list[list[str]]:
    """Stacked header rows ("Years ended December 31," above "2021 | 2020") become one row whose
    cells read whole ("Years ended December 31, 2021"), so that every column has one title."""
    depth = 0
    while depth < min(len(rows) - 1, 4) and _is_header_row(rows[depth]) and not rows[depth][0]:
        depth += 1
    if depth < 2 and not (depth == 1 and _is_header_row(rows[1])):
        return rows
    if depth < 2:
        depth = 2
    merged = []
    for c in range(len(rows[0])):
        parts: list[str] = []
        for r in rows[:depth]:
            if r[c] and (not parts or parts[-1] != r[c]):
                parts.append(r[c])
        merged.append(" ".join(parts))
    return [merged, *rows[depth:]]


def _cell(value: str) -> str:
    return " ".join(clean_text(value).split()).replace("|", "\\|")


class PageBuilder:
    """Assembles one page's text from blocks, recording where its tables sit."""

    def __init__(self, number: int, heading: str = "") -> None:
        self.number = number
        self.heading = heading
        self._parts: list[str] = []
        self._length = 0
        self._tables: list[TableSpan] = []
        self._headings: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return self._length

    def _add(self, block: str) -> int:
        if self._parts:
            self._parts.append("\n\n")
            self._length += 2
        start = self._length
        self._parts.append(block)
        self._length += len(block)
        return start

    def paragraph(self, text: str) -> None:
        text = clean_text(text)
        if text:
            self._add(text)

    def title(self, text: str) -> None:
        """A heading: a paragraph of its own that the chunks after it are filed under."""
        text = " ".join(clean_text(text).split())
        if text:
            self._headings.append((self._add(text), text))

    def table(self, rows: Sequence[Sequence[str]], header_rows: int = 1) -> None:
        rows = tidy_rows(rows)
        if len(rows) < 2 or max(len(r) for r in rows) < 2:
            # A layout table (one row or one column) is text, not a table.
            for row in rows:
                self.paragraph(" ".join(row))
            return
        rendered, header_len = markdown_table(rows, min(header_rows, len(rows)))
        start = self._add(rendered)
        header_end = start + header_len if header_len else start
        self._tables.append(TableSpan(start, start + len(rendered), header_end))

    def build(self) -> Page:
        return Page(
            self.number,
            "".join(self._parts),
            self.heading,
            headings=list(self._headings),
            tables=list(self._tables),
        )


SECTION_CHARS = 3000


@dataclass(frozen=True)
class Heading:
    text: str


# A block of a section: a paragraph, a heading, or a table as its rows (first row the header).
Block = str | Heading | list[list[str]]


def sections(
    blocks: Iterable[Block | None],
    *,
    size: int = SECTION_CHARS,
    first: int = 1,
    heading: str = "",
) -> Iterator[Page]:
    """Pages of about `size` characters from a stream of blocks, for formats without pages.

    `None` in the stream forces a new section (a recorded page break). A paragraph longer than a
    section is cut at a line or word boundary; a table is never cut here (chunking keeps its rows
    together and repeats its header).
    """
    number = first
    builder = PageBuilder(number, heading)
    for block in blocks:
        if block is None or (len(builder) and len(builder) + _size(block) > size):
            if len(builder):
                yield builder.build()
                number += 1
                builder = PageBuilder(number, heading)
            if block is None:
                continue
        if isinstance(block, Heading):
            # A page starts under the last heading seen: it is the context of its first chunk.
            heading = " ".join(clean_text(block.text).split()) or heading
            if not len(builder):
                builder.heading = heading
            builder.title(block.text)
            continue
        if isinstance(block, list):
            builder.table(block)
            continue
        for piece in _cut(block, size):
            if len(builder) and len(builder) + len(piece) > size:
                yield builder.build()
                number += 1
                builder = PageBuilder(number, heading)
            builder.paragraph(piece)
    if len(builder):
        yield builder.build()


def _size(block: Block) -> int:
    if isinstance(block, Heading):
        return len(block.text)
    if isinstance(block, list):
        return sum(len(c) + 3 for row in block for c in row)
    return len(block)


def _cut(para: str, size: int) -> Iterator[str]:
    while len(para) > size:
        cut = para.rfind("\n", 0, size)
        if cut < size // 2:
            cut = para.rfind(" ", 0, size)
        if cut < size // 2:
            cut = size
        yield para[:cut]
        para = para[cut:].lstrip()
    if para:
        yield para
