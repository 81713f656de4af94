"""Grids of cells (XLSX sheets, CSV and TSV files) as pages: the header row found below any
title rows, and the rows cut into sheet parts of bounded size that each carry the header row.

A sheet part is one page: its citations say "page N" of the document, the heading names the
sheet, and every chunk of its table starts with the header row (the chunker repeats it), so a
cell is always read with its column name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from docqa.formats.page import Page, PageBuilder

PART_CHARS = 4000
# Title rows above the header (an Excel paste, a report's caption) are looked for this far down.
_HEADER_SEARCH_ROWS = 10
_WIDTH_SAMPLE_ROWS = 50


def _filled(row: Sequence[str]) -> int:
    return sum(1 for cell in row if cell.strip())


def header_index(rows: Sequence[Sequence[str]]) -> int:
    """Which row holds the column names: the first of the first rows that fills at least half
    of the table's width (its fullest row among the first 50), so one-cell title rows above it
    are passed over. 0 when nothing fits."""
    counts = [_filled(r) for r in rows[:_WIDTH_SAMPLE_ROWS]]
    width = max(counts, default=0)
    need = max(2, (width + 1) // 2)
    for i, count in enumerate(counts[:_HEADER_SEARCH_ROWS]):
        if count >= need:
            return i
    return 0


def _row_chars(row: Sequence[str]) -> int:
    return sum(len(cell) + 3 for cell in row) + 2


def table_pages(
    rows: Iterable[list[str]],
    *,
    heading: str,
    first: int,
    part_chars: int = PART_CHARS,
) -> Iterator[Page]:
    """Pages numbered from `first`, for one sheet (or file) of rows in reading order.

    The first `_HEADER_SEARCH_ROWS` rows are held back until the header is found; rows above the
    header become paragraphs (titles, notes) on the first part. `rows` may be a generator: only
    one part is held at a time after the header.
    """
    iterator = iter(rows)
    head: list[list[str]] = []
    for row in iterator:
        head.append(row)
        if len(head) >= _WIDTH_SAMPLE_ROWS:
            break
    if not head:
        return
    at = header_index(head)
    header = head[at]
    number = first
    builder = PageBuilder(number, heading)
    builder.title(heading)
    for row in head[:at]:
        builder.paragraph(" ".join(cell for cell in row if cell.strip()))
    part: list[list[str]] = []
    size = len(builder) + _row_chars(header)

    def body() -> Iterator[list[str]]:
        yield from head[at + 1 :]
        yield from iterator

    for row in body():
        chars = _row_chars(row)
        if part and size + chars > part_chars:
            builder.table([header, *part])
            yield builder.build()
            number += 1
            builder = PageBuilder(number, heading)
            part = []
            size = _row_chars(header)
        part.append(row)
        size += chars
    if part:
        builder.table([header, *part])
    else:  # a header and no rows: text, not a table
        builder.paragraph(" ".join(cell for cell in header if cell.strip()))
    if len(builder):
        yield builder.build()
