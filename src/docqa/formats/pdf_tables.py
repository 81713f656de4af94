"""Tables in a PDF page, found from where its words sit.

A page's text lines are cut into fragments at wide horizontal gaps. Fragments that share a
height on the page make a row, and a run of rows with several fragments each, whose fragments
line up in columns (there are x ranges that no fragment of those rows crosses), is a table
candidate. A candidate becomes a table when it is not prose in columns, a list, or a table of
contents (those stay text). Its header rows are the rows above its first row of numbers (or its
first row, when it has none); a header written over several lines becomes one row, and a header
spanning several columns a row of its own.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from docqa.formats.pdf import Glyph, Line, TableRegion
from docqa.formats.pdf_table_grid import (
    MARKER,
    SPLIT_GAP,
    Column,
    Frag,
    Row,
    Table,
    cover,
    has_values,
    is_number,
)

# Rows of one table are at most this many line heights apart...
ROW_GAP = 2.2
# ...and header lines above its first row at most this many.
HEADER_GAP = 1.6
MAX_HEADER_ROWS = 4
# At most this many one-cell rows (section labels, wrapped labels) between two rows of cells.
MAX_SINGLE_RUN = 3
# A line of prose: one fragment this long. Lines that go back up the page (a table written a
# column at a time) join the rows there only if no line of prose has come since.
SHORT_FRAGMENT = 40

_CURRENCY = frozenset({"$", "€", "£", "¥", "(", "($", "US$", "C$", "A$"})
_CLOSERS = frozenset({")", "%", ")%", "%)", "*", "**"})
_WORD_END = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ,.;:")


def enabled() -> bool:
    """`DOCQA_PDF_TABLES=on` turns detection on. It is off by default: measured on MMLongBench
    with everything else equal, PDF tables read as Markdown lowered hybrid page hit@5 from 0.799
    to 0.773, on table evidence from 0.829 to 0.740 and on the 10-K filings from 0.699 to 0.602
    (docs/tables.md). Tables of DOCX, HTML, PPTX and spreadsheets, which their files mark as
    tables, are read as tables either way."""
    return os.environ.get("DOCQA_PDF_TABLES", "off").strip().lower() in {"on", "1", "true"}


def _fragments(no: int, line: Line) -> list[Frag]:
    """A line cut at its wide gaps (and where it jumps to another line of the page).

    Only the places where a space (or a character without a box) sits between two glyphs are
    looked at: pdfium puts one wherever text leaves a gap, and this runs on every line."""
    glyphs = line.glyphs
    shown = [k for k, g in enumerate(glyphs) if g.box is not None and g.text]
    if not shown:
        return []
    frags: list[Frag] = []
    start, first, wrapped = 0, shown[0], False
    word_gap = 0.0
    for j in [j for j in range(1, len(shown)) if shown[j] != shown[j - 1] + 1]:
        k, prev = shown[j], shown[j - 1]
        last, b = glyphs[prev].box, glyphs[k].box
        assert last is not None
        assert b is not None
        h = last[3] - last[1]
        if b[3] - b[1] > h:
            h = b[3] - b[1]
        gap = b[0] - last[2]
        jump = b[0] < last[0] - h / 2 or abs(b[1] + b[3] - last[1] - last[3]) > 1.2 * h
        if jump or gap > SPLIT_GAP * h or (glyphs[k].text in _CURRENCY and _lone(glyphs, k)):
            frags.append(_frag(no, glyphs, start, k, first, prev, wrapped, word_gap))
            start, first, wrapped, word_gap = k, k, jump, 0.0
        elif gap > word_gap and glyphs[k].text.isalpha() and glyphs[prev].text[-1:] in _WORD_END:
            word_gap = gap  # a space between two words (not a sign and its number)
    frags.append(_frag(no, glyphs, start, len(glyphs), first, shown[-1], wrapped, word_gap))
    return frags


def _lone(glyphs: Sequence[Glyph], k: int) -> bool:
    """The currency sign at `k` stands alone: a space or the line's end follows it."""
    return k + 1 >= len(glyphs) or glyphs[k + 1].text.isspace()


def _frag(
    no: int,
    glyphs: Sequence[Glyph],
    a: int,
    b: int,
    first: int,
    last: int,
    wrapped: bool,
    word_gap: float,
) -> Frag:
    text = " ".join("".join([g.text for g in glyphs[a:b]]).split())
    b0, b1 = glyphs[first].box, glyphs[last].box
    assert b0 is not None
    assert b1 is not None
    return Frag(
        [(no, a, b)],
        min(b0[0], b1[0]),
        min(b0[1], b1[1]),
        max(b0[2], b1[2]),
        max(b0[3], b1[3]),
        text,
        wrapped,
        word_gap,
    )


@dataclass
class _Flow:
    """Consecutive lines that read as one region of the page: its rows, top to bottom."""

    rows: list[Row] = field(default_factory=list)
    height: float = 0.01
    prose: int = -1  # the last line of prose

    def place(self, i: int, fs: list[Frag], recent: bool) -> None:
        row: Row | None = None
        for f in fs:
            if row is None or f.wrapped:
                below = bool(self.rows) and f.y0 > self.rows[-1].y1
                rows = reversed(self.rows) if recent else iter(self.rows)
                row = None if below else next((r for r in rows if r.overlaps(f)), None)
            if row is None:
                row = Row(f.y0, f.y1, [f], i)
                self.rows.append(row)
            else:
                row.add(f)
        if len(fs) == 1 and len(fs[0].text) > SHORT_FRAGMENT:
            self.prose = i


def _flows(frags: Sequence[list[Frag]]) -> list[_Flow]:
    heights = [f.height for fs in frags for f in fs if f.height > 0]
    height = statistics.median(heights) if heights else 0.01
    flows: list[_Flow] = []
    flow: _Flow | None = None
    for i, fs in enumerate(frags):
        if not fs:
            flow = None  # a running header or footer, or an empty line, ends the flow
            continue
        if flow is not None and _joins(flow, fs, height):
            flow.place(i, fs, recent=True)
            continue
        flow = _Flow(height=height)
        flow.place(i, fs, recent=False)
        flows.append(flow)
    for flow in flows:
        flow.rows.sort(key=lambda r: r.y0)
        for row in flow.rows:
            row.frags.sort(key=lambda f: f.x0)
    return flows


def _joins(flow: _Flow, fs: list[Frag], height: float) -> bool:
    """Does a line continue the flow: just below it, or beside fragments of rows it already
    has, no prose line having come since (a table written a column at a time, or bottom up)?"""
    lowest = max(flow.rows, key=lambda r: r.y1)
    lowest_only = len(fs) == 1 and len(fs[0].text) > SHORT_FRAGMENT  # prose only goes down
    for f in fs:
        if f.y0 + f.y1 > lowest.y0 + lowest.y1 and f.y0 - lowest.y1 <= ROW_GAP * height:
            continue
        if lowest_only:
            return False
        row = next((r for r in flow.rows if r.overlaps(f)), None)
        if row is None or row.line <= flow.prose or any(_hits(g, f) for g in row.frags):
            return False
    return True


def _hits(a: Frag, b: Frag) -> bool:
    return min(a.x1, b.x1) > max(a.x0, b.x0)


def find_tables(lines: Sequence[Line], furniture: Collection[int] = ()) -> list[TableRegion]:
    """The tables among a page's lines, in line order, none overlapping. Lines in `furniture`
    (running headers and footers) are never part of one."""
    if len(lines) < 3:
        return []
    frags = [[] if i in furniture else _fragments(i, line) for i, line in enumerate(lines)]
    found: list[TableRegion] = []
    for flow in _flows(frags):
        if len(flow.rows) < 3 or not any(len(r.frags) > 1 for r in flow.rows):
            continue
        for row in flow.rows:
            row.frags = _attach(row.frags)
        for a, b in _runs(flow):
            found.extend(_tables(lines, frags, flow, a, b))
    found.sort(key=lambda t: t.first_line)
    out: list[TableRegion] = []
    for t in found:
        if not out or t.first_line >= out[-1].end_line:
            out.append(t)
    return out


def _attach(frags: list[Frag]) -> list[Frag]:
    """Signs in cells of their own joined to their number ("$" before, ")" or "%" after), and
    list markers to their item."""
    out: list[Frag] = []
    carry: Frag | None = None
    for f in frags:
        if carry is not None:
            carry.absorb(f)
            f, carry = carry, None
        elif f.text in _CURRENCY or (not out and MARKER.match(f.text)):
            carry = f
            continue
        if out and f.text in _CLOSERS:
            out[-1].absorb(f)
            continue
        out.append(f)
    if carry is not None:
        out.append(carry)
    return out


def _runs(flow: _Flow) -> list[tuple[int, int]]:
    """Runs of rows `[a, b)` from a row of several cells to the last such row after it, with
    no more than a few one-cell rows between two of them and no wide gap."""
    rows = flow.rows
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(rows):
        if len(rows[i].frags) < 2:
            i += 1
            continue
        end = i + 1
        j = i + 1
        singles = 0
        while j < len(rows) and rows[j].y0 - rows[j - 1].y1 <= ROW_GAP * flow.height:
            if len(rows[j].frags) > 1:
                end, singles = j + 1, 0
            else:
                singles += 1
                if singles > MAX_SINGLE_RUN:
                    break
            j += 1
        out.append((i, end))
        i = max(end, i + 1)
    return out


def _first_data(rows: Sequence[Row]) -> int | None:
    """The first row with a number beside its first cell."""
    for i, row in enumerate(rows):
        if any(is_number(f.text) for f in row.frags[1:]):
            return i
    return None


def _columns(rows: Sequence[Row], height: float) -> list[Column]:
    """Column spans: the x ranges that the rows' fragments cover, split where (almost) no row
    of several cells has text."""
    basis = [r for r in rows if len(r.frags) > 1]
    tol = len(basis) // 8
    events = sorted((x, d) for r in basis for f in r.frags for x, d in ((f.x0, 1), (f.x1, -1)))
    spans: list[Column] = []
    count, start = 0, 0.0
    for x, d in events:
        before, count = count, count + d
        if before <= tol < count:
            # A sliver of a gutter (narrower than a third of a line) splits nothing.
            start = spans.pop()[0] if spans and x - spans[-1][1] < 0.3 * height else x
        elif before > tol >= count:
            spans.append((start, x))
    return spans


def _trim(rows: Sequence[Row], a: int, b: int) -> tuple[int, int]:
    while a < b and len(rows[a].frags) < 2:
        a += 1
    while b > a and len(rows[b - 1].frags) < 2:
        b -= 1
    return a, b


def _tables(
    lines: Sequence[Line], frags: Sequence[list[Frag]], flow: _Flow, a: int, b: int
) -> list[TableRegion]:
    a, b = _trim(flow.rows, a, b)
    run = flow.rows[a:b]
    if sum(len(r.frags) > 1 for r in run) < 2:
        return []
    # A title, then a new header row (cells but no numbers) after rows of numbers: a new table.
    seen_values = False
    for k, row in enumerate(run):
        if k > 1 and seen_values and len(run[k - 1].frags) == 1 and _heading_row(row):
            return _tables(lines, frags, flow, a, a + k - 1) + _tables(lines, frags, flow, a + k, b)
        seen_values = seen_values or has_values([row.frags])
    h = flow.height
    first = _first_data(run)
    # Columns come from the rows of numbers, when there are some: headers span them.
    numbers = run[first:] if first is not None else []
    cols = _columns(numbers if sum(len(r.frags) > 1 for r in numbers) > 1 else run, h)
    if len(cols) < 2:
        return []
    data_x = cols[1][0]
    # A one-cell row running from the labels into the numbers is prose: the table ends there.
    for k, row in enumerate(run):
        f = row.frags[0]
        if len(row.frags) == 1 and f.x0 < data_x - h and f.x1 > data_x + h:
            return _tables(lines, frags, flow, a, a + k) + _tables(lines, frags, flow, a + k + 1, b)
    top = a
    while top > 0 and a - top < MAX_HEADER_ROWS:
        above = flow.rows[top - 1]
        if flow.rows[top].y0 - above.y1 > HEADER_GAP * h or not _header_like(above, cols, h):
            break
        top -= 1
    rows = flow.rows[top:b]
    first = _first_data(rows)
    start = a - top  # the run's first row, among `rows`
    if first is None:
        header = start + 1
    else:
        header = max((k + 1 for k in range(start, first) if len(rows[k].frags) > 1), default=start)
    table = Table(cols, h)
    for k, row in enumerate(rows):
        table.add(row, k < header)
    if not table.plausible():
        return []
    region = table.region(lines, frags)
    return [region] if region is not None else []


def _heading_row(row: Row) -> bool:
    """Column headings: several cells, no numbers, and at least one year or word beside the
    first cell."""
    first = row.frags[0].text
    return len(row.frags) > 1 and not first[:1].islower() and not has_values([row.frags])


def _header_like(row: Row, cols: Sequence[Column], h: float) -> bool:
    """A line above a table that reads as part of its header: short, each fragment inside one
    column or over the data columns, and at least one over them."""
    data_x = cols[1][0] - h
    over_data = False
    for f in row.frags:
        if len(f.text) > 60:
            return False
        if f.x0 >= data_x:
            over_data = True
            continue
        c0, c1 = cover(f, cols)
        limit = cols[c1 + 1][0] if c1 + 1 < len(cols) else 1.0
        if c0 != c1 or f.x1 > limit or f.x0 < cols[c0][0] - 2 * h:
            return False
    return over_data
