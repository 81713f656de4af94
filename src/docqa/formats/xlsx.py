"""Excel (XLSX): each sheet a section headed by its name, cut into sheet parts that each carry
the header row.

openpyxl reads the workbook streaming (`read_only`), with the values Excel last computed
(`data_only`: a formula's result, not its text), and dates as ISO dates. With `defusedxml`
installed, openpyxl's XML parsing refuses entity declarations, so an entity bomb fails at once.
A merged range's value is repeated over the cells it covers, so every row reads whole.

Rows Excel merely formatted cost time without holding anything: every row the sheet stores is
counted against `MAX_ROWS`, and values against `MAX_CELLS`, and a workbook past either fails
`too_large` with a sentence.
"""

from __future__ import annotations

import datetime
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from docqa.errors import ExtractionFailed
from docqa.formats import zipguard
from docqa.formats.page import Page, ReadContext
from docqa.formats.tables import table_pages

NAME = "an Excel (XLSX) workbook"
MAX_ROWS = 250_000
MAX_CELLS = 1_500_000
# A merged range is filled in only over the sheet's data, and only this many cells of it.
_MAX_MERGE_FILL = 10_000


class _Budget:
    def __init__(self) -> None:
        self.rows = 0
        self.cells = 0

    def row(self, cells: int) -> None:
        self.rows += 1
        self.cells += cells
        if self.rows > MAX_ROWS:
            raise ExtractionFailed(
                "too_large",
                f"This workbook stores more than {MAX_ROWS:,} rows (formatted empty rows count "
                "too), the most docqa reads: delete the unused rows or split the workbook.",
            )
        if self.cells > MAX_CELLS:
            raise ExtractionFailed(
                "too_large",
                f"This workbook holds more than {MAX_CELLS:,} filled cells, the most docqa "
                "reads: split it into smaller workbooks.",
            )


def cell_text(value: Any) -> str:
    """A cell as a person reads it: dates as ISO dates, numbers without float noise."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, datetime.datetime):
        if value.time() == datetime.time():
            return value.date().isoformat()
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return str(value)
    if isinstance(value, float):
        return f"{value:.15g}"
    return " ".join(str(value).split())


def _sheet_cells(
    workbook: Any, sheet: Any, budget: _Budget
) -> tuple[dict[int, dict[int, str]], list[str]]:
    """The sheet's filled cells by row and column, and its merged ranges."""
    # openpyxl's own streaming sheet parser, as its read-only worksheet uses it; called directly
    # because the read-only worksheet does not expose the merged ranges it parses.
    from openpyxl.worksheet._reader import WorkSheetParser

    rows: dict[int, dict[int, str]] = {}
    with sheet._get_source() as source:
        parser = WorkSheetParser(
            source,
            sheet._shared_strings,
            data_only=True,
            epoch=workbook.epoch,
            date_formats=workbook._date_formats,
            timedelta_formats=workbook._timedelta_formats,
        )
        for index, cells in parser.parse():
            filled = {c["column"]: cell_text(c["value"]) for c in cells}
            filled = {col: text for col, text in filled.items() if text}
            budget.row(len(filled))
            if filled:
                rows[index] = filled
        merged = [str(r) for r in parser.merged_cells.mergeCell] if parser.merged_cells else []
    return rows, merged


def _fill_merged(rows: dict[int, dict[int, str]], merged: list[str]) -> None:
    from openpyxl.utils.cell import range_boundaries

    if not rows:
        return
    last_row = max(rows)
    last_col = max(max(r) for r in rows.values())
    for ref in merged:
        try:
            min_col, min_row, max_col, max_row = range_boundaries(ref)
        except (ValueError, TypeError):
            continue
        if min_col is None or min_row is None or max_col is None or max_row is None:
            continue
        value = rows.get(min_row, {}).get(min_col)
        if not value:
            continue
        if max_row == min_row and len(rows[min_row]) == 1:
            # A caption merged across the table is a title, not a header over those columns.
            continue
        max_row, max_col = min(max_row, last_row), min(max_col, last_col)
        if (max_row - min_row + 1) * (max_col - min_col + 1) > _MAX_MERGE_FILL:
            continue
        for r in range(min_row, max_row + 1):
            for c in range(min_col, max_col + 1):
                rows.setdefault(r, {})[c] = value


def _grid(rows: dict[int, dict[int, str]]) -> Iterator[list[str]]:
    # Only the columns that hold something: one stray cell in column XFD must not make every
    # row 16,384 cells wide.
    columns = sorted({c for cells in rows.values() for c in cells})
    for index in sorted(rows):
        cells = rows[index]
        yield [cells.get(c, "") for c in columns]


def _open(path: Path, file: BinaryIO) -> Any:
    import openpyxl
    from defusedxml import DefusedXmlException
    from openpyxl.utils.exceptions import InvalidFileException

    zipguard.check(path, NAME)
    try:
        # A file object, not the path: openpyxl refuses paths without an Excel extension, and
        # stored uploads have none.
        return openpyxl.load_workbook(
            file, read_only=True, data_only=True, keep_links=False, rich_text=False
        )
    except Exception as exc:
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, DefusedXmlException):
                raise ExtractionFailed(
                    "corrupt",
                    "This workbook's XML declares entities (the pattern of an 'XML bomb'), "
                    "which docqa refuses to expand, so it cannot be read.",
                ) from exc
            cause = cause.__cause__ or cause.__context__
        if isinstance(exc, (KeyError, ValueError, InvalidFileException, zipfile.BadZipFile)):
            raise ExtractionFailed("corrupt", f"This file is damaged or is not {NAME}.") from exc
        raise


def read(path: Path, ctx: ReadContext) -> Iterator[Page]:
    import warnings

    with warnings.catch_warnings():
        # openpyxl warns about every feature it drops (conditional formats, extensions, missing
        # styles): none of them is text.
        warnings.simplefilter("ignore")
        yield from _read(path)


def _read(path: Path) -> Iterator[Page]:
    with path.open("rb") as file:
        workbook = _open(path, file)
        try:
            yield from _sheets(workbook)
        finally:
            workbook.close()


def _sheets(workbook: Any) -> Iterator[Page]:
    budget = _Budget()
    number = 1
    for sheet in workbook.worksheets:
        rows, merged = _sheet_cells(workbook, sheet, budget)
        if not rows:
            continue
        _fill_merged(rows, merged)
        for page in table_pages(_grid(rows), heading=sheet.title, first=number):
            yield page
            number = page.number + 1
