"""PowerPoint (PPTX): one page per slide, numbered as the deck numbers its slides.

A slide's title is its page heading; its text frames follow in reading order (top to bottom,
then left to right), grouped shapes opened up; tables and chart data become tables; the speaker
notes come last under "Notes:". Slide-number, date and footer placeholders are furniture that
every slide repeats, so they are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from docqa.errors import ExtractionFailed
from docqa.formats import zipguard
from docqa.formats.page import Page, PageBuilder, ReadContext

NAME = "a PowerPoint (PPTX) presentation"
NOTES_LABEL = "Notes:"
# Shapes whose tops differ by less than this share of the slide height count as one line, so
# two columns that start level read left column first.
_LINE_BAND = 1 / 24
_MAX_CHART_ROWS = 200


def _skipped_placeholder(shape: Any) -> bool:
    from pptx.enum.shapes import PP_PLACEHOLDER

    if not shape.is_placeholder:
        return False
    kind = shape.placeholder_format.type
    return kind in (PP_PLACEHOLDER.SLIDE_NUMBER, PP_PLACEHOLDER.DATE, PP_PLACEHOLDER.FOOTER)


def _reading_order(shapes: Iterable[Any], band: float) -> list[Any]:
    def key(shape: Any) -> tuple[int, int]:
        top = shape.top if shape.top is not None else 0
        left = shape.left if shape.left is not None else 0
        return int(top // band) if band else 0, int(left)

    return sorted(shapes, key=key)


def _table_rows(table: Any) -> list[list[str]]:
    """The table on its grid, a merged cell's text repeated over every cell it spans."""
    rows = list(table.rows)
    width = len(table.columns)
    grid = [["" for _ in range(width)] for _ in rows]
    for r, row in enumerate(rows):
        for c, cell in enumerate(row.cells):
            if c >= width or cell.is_spanned:
                continue
            text = " ".join(cell.text.split())
            height = cell.span_height if cell.is_merge_origin else 1
            span = cell.span_width if cell.is_merge_origin else 1
            for dr in range(min(height, len(rows) - r)):
                for dc in range(min(span, width - c)):
                    grid[r + dr][c + dc] = text
    return grid


def _chart(builder: PageBuilder, chart: Any) -> None:
    """A chart's title, and its data as a table: categories down, series across."""
    if chart.has_title and chart.chart_title.has_text_frame:
        builder.paragraph(chart.chart_title.text_frame.text)
    try:
        plot = chart.plots[0]
        categories = [str(c) for c in plot.categories]
        series = list(plot.series)
    except (IndexError, KeyError, ValueError, TypeError, AttributeError):
        return
    if not categories or not series:
        return
    rows = [["", *(str(s.name or "") for s in series)]]
    values = [list(s.values) for s in series]
    for i, category in enumerate(categories[:_MAX_CHART_ROWS]):
        rows.append([category, *(_number(v[i]) if i < len(v) else "" for v in values)])
    builder.table(rows)


def _number(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.15g}"
    return str(value)


def _shapes(builder: PageBuilder, shapes: Iterable[Any], band: float, title_id: int) -> None:
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    for shape in _reading_order(shapes, band):
        if shape.shape_id == title_id or _skipped_placeholder(shape):
            continue
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            _shapes(builder, shape.shapes, band, title_id)
        elif getattr(shape, "has_table", False) and shape.has_table:
            builder.table(_table_rows(shape.table))
        elif getattr(shape, "has_chart", False) and shape.has_chart:
            _chart(builder, shape.chart)
        elif shape.has_text_frame:
            lines = [p.text for p in shape.text_frame.paragraphs]
            builder.paragraph("\n".join(line for line in lines if line.strip()))


def _notes(slide: Any) -> str:
    if not slide.has_notes_slide:
        return ""
    frame = slide.notes_slide.notes_text_frame
    return str(frame.text).strip() if frame is not None else ""


def read(path: Path, ctx: ReadContext) -> Iterator[Page]:
    import pptx
    from pptx.exc import PackageNotFoundError

    zipguard.check(path, NAME)
    try:
        deck = pptx.Presentation(str(path))
    except (PackageNotFoundError, KeyError, ValueError) as exc:
        raise ExtractionFailed("corrupt", f"This file is damaged or is not {NAME}.") from exc
    slides = list(deck.slides)
    ctx.total(len(slides))
    band = (deck.slide_height or 6858000) * _LINE_BAND
    for number, slide in enumerate(slides, start=1):
        title = slide.shapes.title
        has_title = title is not None and title.has_text_frame
        title_text = " ".join(title.text_frame.text.split()) if has_title else ""
        builder = PageBuilder(number, title_text or f"Slide {number}")
        if title_text:
            builder.title(title_text)
        _shapes(builder, slide.shapes, band, title.shape_id if has_title else -1)
        notes = _notes(slide)
        if notes:
            builder.paragraph(f"{NOTES_LABEL} {notes}")
        yield builder.build()
