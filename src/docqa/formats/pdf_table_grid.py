"""A table found on a PDF page, put together: its fragments of lines, its rows, and the cells
they fall in under its columns, with its header rows, and the checks that tell a table from
prose in columns, a list or a table of contents. `docqa.formats.pdf_tables` finds the candidates.
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from docqa.formats.pdf import Line, TableRegion

Run = tuple[int, int, int]  # (line, first glyph, end glyph)
Column = tuple[float, float]  # its x range, in page fractions

# A gap wider than this many glyph heights between two words separates two cells.
SPLIT_GAP = 0.9
# Fragments whose vertical centres are closer than this share of the smaller height share a row.
ROW_CENTRE = 0.4
# A cell this long (in characters or words) is prose, and so is a column whose cells mostly are.
PROSE_CELL = 40
PROSE_WORDS = 7
# Between cells, the gap is at least this many times the widest space inside a cell (justified
# prose stretches every space alike).
GUTTER_RATIO = 2.0

_NUMBER = re.compile(r"^[(\-–—+]?\s*[$€£¥]?\s*\(?\s*\d[\d,.\s]*\)?\s*%?\)?[a-z]?[*†‡]*$")
_DASH = re.compile(r"^[\-–—]+$")
_YEAR = re.compile(r"^(?:fy\s*)?(?:19|20)\d\d[a-z]?$", re.IGNORECASE)
MARKER = re.compile(r"^(?:[•\-–·*o▪►❖✓]|\(?[0-9]{1,2}[.)]|\(?[a-z][.)]|\(?[ivx]{1,4}[.)])$")
_SYMBOLS = re.compile(r"^[^\w\s]{1,3}$")  # bullets in odd fonts, ">>>" and "..." prompts
_LINE_NO = re.compile(r"^\d{1,4}:$")  # numbered lines of code
_LEADERS = re.compile(r"\.{2,}|\s")  # dot leaders and spaces: not counted as symbols
_PAGE_NO = re.compile(r"^(?:\d{1,3}|[ivxlc]{1,6})$", re.IGNORECASE)


@dataclass
class Frag:
    runs: list[Run]
    x0: float
    y0: float
    x1: float
    y1: float
    text: str
    wrapped: bool = False  # starts where its line jumps to another line of the page
    word_gap: float = 0.0  # the widest space between two of its words

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def absorb(self, other: Frag) -> None:
        self.runs.extend(other.runs)
        self.x0, self.x1 = min(self.x0, other.x0), max(self.x1, other.x1)
        self.y0, self.y1 = min(self.y0, other.y0), max(self.y1, other.y1)
        self.text = f"{self.text} {other.text}"


@dataclass
class Row:
    y0: float
    y1: float
    frags: list[Frag] = field(default_factory=list)
    line: int = 0  # the line that started it

    def overlaps(self, f: Frag) -> bool:
        off_centre = abs(self.y0 + self.y1 - f.y0 - f.y1) / 2
        return off_centre <= ROW_CENTRE * min(self.y1 - self.y0, f.height)

    def add(self, f: Frag) -> None:
        self.frags.append(f)


def is_number(text: str) -> bool:
    """A number as tables hold them (not a year, which heads columns)."""
    return bool(_NUMBER.match(text)) and not _YEAR.match(text.strip("()*"))


def is_value(text: str) -> bool:
    """A number, or a dash for none."""
    return is_number(text) or bool(_DASH.match(text.lstrip("$ ")))


def has_values(row: Sequence[Sequence[Frag]]) -> bool:
    return any(is_value(f.text) for cell in row for f in cell)


def cover(f: Frag, cols: Sequence[Column]) -> tuple[int, int]:
    """The first and last column a fragment covers (the nearest one if it sits in a gutter)."""
    hit = [
        c
        for c, (a, b) in enumerate(cols)
        if min(b, f.x1) - max(a, f.x0) > 0.5 * min(b - a, f.x1 - f.x0)
    ]
    if hit:
        return hit[0], hit[-1]
    centre = (f.x0 + f.x1) / 2
    near = min(
        range(len(cols)), key=lambda c: min(abs(centre - cols[c][0]), abs(centre - cols[c][1]))
    )
    return near, near


Cell = list[Frag]


@dataclass
class Table:
    cols: Sequence[Column]
    height: float
    spanning: list[list[Cell]] = field(default_factory=list)  # header rows with spanning cells
    merged: list[Cell] | None = None  # the other header lines, merged column by column
    body: list[list[Cell]] = field(default_factory=list)
    # For each row of several cells: is the narrowest gap between them much wider than the
    # widest space inside one (True), not (False), or unknown (None: single words)?
    spacing: list[bool | None] = field(default_factory=list)

    def _cells(self, row: Row, header: bool) -> tuple[list[Cell], bool]:
        cells: list[Cell] = [[] for _ in self.cols]
        spans = False
        for f in row.frags:
            if header:
                # A header over several columns (centred over them, or wider than its own)
                # goes to the one it covers most, in a row of its own.
                overlaps = [min(b, f.x1) - max(a, f.x0) for a, b in self.cols]
                best = max(range(len(self.cols)), key=lambda c: overlaps[c])
                if overlaps[best] > 0:
                    a, b = self.cols[best]
                    cells[best].append(f)
                    spans = (
                        spans
                        or sum(o > 0.1 * self.height for o in overlaps) > 1
                        or (f.x0 < a - self.height and f.x1 > b + self.height)
                    )
                    continue
            c0, _ = cover(f, self.cols)
            cells[c0].append(f)
        return cells, spans

    def add(self, row: Row, header: bool) -> None:
        cells, spans = self._cells(row, header)
        if not header and len(row.frags) > 1:
            # Two cuts of one line in one column: the cuts are wide spaces, not gutters.
            split = any(len(cell) > 1 for cell in cells) and not has_values(cells)
            self.spacing.append(False if split else _spacing(row))
        if header:
            if spans:
                self.spanning.append(cells)
            elif self.merged is None:
                self.merged = cells
            else:
                for c, cell in enumerate(cells):
                    self.merged[c].extend(cell)
            return
        values = any(is_value(f.text) for cell in cells for f in cell)
        previous = self.body[-1] if self.body else None
        if previous is not None and not cells[0] and not values and not has_values(previous):
            # A row with nothing in the first column and no numbers continues the one above
            # (cells wrapped over several lines).
            for c, cell in enumerate(cells):
                previous[c].extend(cell)
            return
        if (
            previous is not None
            and cells[0]
            and cells[0][0].text[:1].islower()
            and previous[0]
            and not any(previous[1:])
        ):
            # A label wrapped over two lines: the first line has no numbers, the second
            # continues it in lower case.
            previous[0].extend(cells[0])
            previous[1:] = cells[1:]
            return
        self.body.append(cells)

    @property
    def header_rows(self) -> list[list[Cell]]:
        return self.spanning + ([self.merged] if self.merged is not None else [])

    def plausible(self) -> bool:
        """Is this a table, rather than prose in columns, a list or a table of contents?"""
        body = self.body
        full = sum(sum(1 for c in row if c) > 1 for row in body)
        headed = any(sum(1 for c in row if c) > 1 for row in self.header_rows)
        numbers = sum(is_number(f.text) for row in body for cell in row for f in cell)
        # Three rows of cells (a header among them), or, under a header, one row of numbers
        # (filings put a one-line table under each heading).
        if not (full >= 2 and full + headed >= 3) and not (full >= 1 and headed and numbers >= 2):
            return False
        rows = self.header_rows + body
        # A column must hold at least two cells; a few may hold one (a "Change" column filled
        # in one row of a small table).
        sparse = sum(sum(1 for row in rows if row[c]) < 2 for c in range(len(self.cols)))
        if sparse * 3 > len(self.cols):
            return False
        known = [s for s in self.spacing if s is not None]
        if sum(not s for s in known) * 2 > len(known):
            return False  # justified prose: its word spaces are as wide as its "gutters"
        texts = [_text(cell) for row in body for cell in row if cell]
        shown = _LEADERS.sub("", "".join(texts))
        if sum(c.isalnum() for c in shown) * 2 < len(shown):
            return False  # symbols more than letters and digits: a garbled text layer
        if statistics.median(len(t) for t in texts) > PROSE_CELL:
            return False
        prose_cols = 0
        for c in range(len(self.cols)):
            cells = [_text(row[c]) for row in body if row[c]]
            if sum(_prose(t) for t in cells) * 2 > len(cells):
                prose_cols += 1
            if (
                len(self.cols) == 2
                and c == 0
                and (all(_marker(t) for t in cells) or _counting(cells))
            ):
                return False  # a list, or code after its prompts or line numbers
        if prose_cols > 1:
            return False
        return not _contents(body)

    def region(self, lines: Sequence[Line], frags: Sequence[list[Frag]]) -> TableRegion | None:
        """The table as a region of whole lines, if its lines run together and hold nothing
        else."""
        rows = self.header_rows + self.body
        used = {run for row in rows for cell in row for f in cell for run in f.runs}
        numbers = {run[0] for run in used}
        first, end = min(numbers), max(numbers) + 1
        for no in range(first, end):
            if no not in numbers and lines[no].text.strip():
                return None  # a line the table does not hold (a running header, say)
            if any(run not in used for f in frags[no] for run in f.runs):
                return None
        out = [
            [
                [run for f in sorted(cell, key=lambda f: (f.y0, f.x0)) for run in f.runs]
                for cell in row
            ]
            for row in rows
        ]
        return TableRegion(first, end, out, header_rows=len(self.header_rows))


def _spacing(row: Row) -> bool | None:
    frags = row.frags
    word = max(f.word_gap for f in frags)
    if word <= 0:
        return None
    # Gaps that cut the line by their width (not a currency sign's cut before its number).
    gaps = [
        b.x0 - a.x1
        for a, b in itertools.pairwise(frags)
        if b.x0 - a.x1 > 0.95 * SPLIT_GAP * min(a.height, b.height)
    ]
    return min(gaps) >= GUTTER_RATIO * word if gaps else None


def _marker(text: str) -> bool:
    return bool(MARKER.match(text) or _LINE_NO.match(text) or _SYMBOLS.match(text))


def _counting(cells: Sequence[str]) -> bool:
    """1, 2, 3...: the numbers of a list's items or of lines of code."""
    numbers = [int(t) for t in cells if t.isdigit()]
    return len(numbers) == len(cells) > 1 and numbers == list(range(numbers[0], numbers[-1] + 1))


def _prose(text: str) -> bool:
    return len(text) > PROSE_CELL or len(text.split()) >= PROSE_WORDS


def _text(cell: Cell) -> str:
    return " ".join(f.text for f in cell)


def _contents(body: Sequence[Sequence[Cell]]) -> bool:
    """A table of contents: titles, then page numbers that never go down, and no other
    numbers. It stays text: its entries are already one a line."""
    last = [_text(row[-1]) for row in body if row[-1]]
    if len(last) < 3 or not all(_PAGE_NO.match(t) for t in last):
        return False
    digits = [int(t) for t in last if t.isdigit()]
    if digits != sorted(digits):
        return False
    return not any(is_value(_text(cell)) for row in body for cell in row[1:-1] if cell)
