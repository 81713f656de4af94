"""PDF: the text layer of each page through pypdfium2, with where every word sits.

Each page's characters come with their boxes. Lines are the text layer's own; a paragraph break
goes where the gap between two lines is larger than a line, or where the text jumps back up the
page (a new column). While the text is cleaned (ligatures, bullets, hyphenated line ends, odd
spaces), every character keeps its box, so the page's `words` map runs of the final text to
rectangles for citations.

Running headers and footers are found across the document first: lines near the top or bottom
of the page whose text (digits aside) repeats on many pages, and lone page numbers. They stay in
the page's text but are marked as furniture, which chunking leaves out.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from docqa.errors import ExtractionFailed
from docqa.formats.page import Page, ReadContext, TableSpan, Word, normalise_char

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in page fractions, origin top-left

# Furniture lives in the top or bottom share of the page...
FURNITURE_ZONE = 0.12
# ...among the first or last few lines...
FURNITURE_LINES = 3
# ...and repeats (digits aside) on at least this share of the sampled pages (and 3 of them).
FURNITURE_SHARE = 0.4
FURNITURE_SAMPLE = 40
_PAGE_NUMBER = re.compile(
    r"^(?:page\s+)?[-–—(\[]?\s*(?:\d{1,4}|[ivxlcdm]{1,7})\s*[-–—)\]]?(?:\s*(?:of|/)\s*\d{1,4})?$",
    re.IGNORECASE,
)
# A gap between lines larger than this share of the line height starts a new paragraph.
PARAGRAPH_GAP = 0.9


class Glyph(NamedTuple):
    text: str  # normalised: may be empty (a dropped glyph) or several letters (a ligature)
    box: Box | None  # None for spaces and characters pdfium generated


_SPACE = Glyph(" ", None)
# A glyph from a (text, box) pair without the keyword handling of Glyph(...): it is made for
# every character of a PDF.
_new_glyph = functools.partial(tuple.__new__, Glyph)
_SURROGATE = re.compile("[\ud800-\udfff]")
Transform = tuple[float, float, float, float, float, float]


@dataclass
class Line:
    glyphs: list[Glyph]
    box: Box
    size: float = 0.0  # font size of the line's first character, in points

    @property
    def text(self) -> str:
        return "".join([g[0] for g in self.glyphs])


@dataclass(frozen=True)
class TableRegion:
    """A table found among a page's lines: the lines it replaces, and its cells as runs of
    glyphs (`(line, first glyph, end glyph)`, possibly over several lines)."""

    first_line: int
    end_line: int
    rows: list[list[list[tuple[int, int, int]]]]
    header_rows: int = 1


def open_pdf(path: Path) -> Any:
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code == pdfium.raw.FPDF_ERR_PASSWORD:
            raise ExtractionFailed(
                "encrypted", "This PDF is protected by a password, so its text cannot be read."
            ) from None
        if code == pdfium.raw.FPDF_ERR_SECURITY:
            raise ExtractionFailed(
                "encrypted", "This PDF uses an encryption scheme that cannot be opened."
            ) from None
        raise ExtractionFailed(
            "corrupt", "This file is damaged or is not a valid PDF, so it cannot be read."
        ) from None


def _to_page_fractions(page: Any) -> Transform:
    """The affine map from PDF user space to page fractions as the page is displayed (its
    rotation and crop box applied), from three points mapped by pdfium itself."""
    import pypdfium2.raw as raw

    scale = 100_000
    out = []
    for px, py in ((0.0, 0.0), (1000.0, 0.0), (0.0, 1000.0)):
        dx, dy = ctypes.c_int(), ctypes.c_int()
        raw.FPDF_PageToDevice(page, 0, 0, scale, scale, 0, px, py, dx, dy)
        out.append((dx.value / scale, dy.value / scale))
    (ox, oy), (ax, ay), (bx, by) = out
    return ox, oy, (ax - ox) / 1000, (ay - oy) / 1000, (bx - ox) / 1000, (by - oy) / 1000


def read_lines(page: Any) -> list[Line]:
    """The page's text layer as lines of glyphs with boxes."""
    import pypdfium2.raw as raw

    textpage = page.get_textpage()
    try:
        count = textpage.count_chars()
        if count <= 0:
            return []
        text = textpage.get_text_range(0, count)
        if len(text) != count:  # the text must line up with pdfium's character indices
            text = "".join(
                chr(raw.FPDFText_GetUnicode(textpage, i) or 0xFFFD) for i in range(count)
            )
        transform = _to_page_fractions(page)
        if _SURROGATE.search(text):
            lines = _glyph_lines(textpage, text, transform)
        else:
            lines = _glyph_lines_bulk(textpage, text, transform)
        return [line for line in lines if line.text.strip()]
    finally:
        textpage.close()


def _glyph_lines(textpage: Any, text: str, transform: Transform) -> list[Line]:
    """A page's lines, one character at a time: for the pages whose text has surrogates
    (characters beyond the BMP, which pdfium counts as two), and the reference that
    `_glyph_lines_bulk` must match on every other page."""
    import pypdfium2.raw as raw

    ox, oy, ax, ay, bx, by = transform
    rect = raw.FS_RECTF()
    loose_box = raw.FPDFText_GetLooseCharBox
    lines: list[Line] = []
    current: list[Glyph] = []
    size = 0.0
    high = ""  # the first half of a surrogate pair
    for i, char in enumerate(text):
        if char in "\r\n":
            if current:
                lines.append(_line(current, size))
                current = []
            continue
        if not current:
            size = raw.FPDFText_GetFontSize(textpage, i)
        if char.isspace():
            current.append(_SPACE)
            continue
        box: Box | None = None
        if loose_box(textpage, i, rect):
            left, right, bottom, top = rect.left, rect.right, rect.bottom, rect.top
            xa, xb = ox + ax * left + bx * bottom, ox + ax * right + bx * top
            ya, yb = oy + ay * left + by * bottom, oy + ay * right + by * top
            box = (xa, ya, xb, yb) if xa <= xb else (xb, ya, xa, yb)
            if ya > yb:
                box = (box[0], yb, box[2], ya)
            if not (-0.01 <= box[0] <= 1.01 and -0.01 <= box[1] <= 1.01):
                continue  # outside the visible page: hidden text
        if "\ud800" <= char <= "\udfff":
            # pdfium counts UTF-16 units: a character beyond the BMP (𝑥) is two glyphs.
            if char <= "\udbff":
                high = char
                continue
            if not high:
                continue  # a lone half: nothing to read
            char, high = _join_surrogates(high, char), ""
        text_of = char if " " < char < "\x7f" else normalise_char(char)
        current.append(Glyph(text_of, box))
    if current:
        lines.append(_line(current, size))
    return lines


class _GlyphTexts(dict[str, str]):
    """What each character of a page becomes as a glyph (" " for any space), worked out once
    per distinct character; `spaces` and `blank` collect the characters seen that are spaces
    (line breaks included) and that show nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.spaces: set[str] = set()
        self.blank: set[str] = set()

    def __missing__(self, char: str) -> str:
        if char.isspace():
            self.spaces.add(char)
            value = " "
        else:
            value = char if " " < char < "\x7f" else normalise_char(char)
            if not value.strip():
                self.blank.add(char)
        self[char] = value
        return value


def _codes(chars: Iterable[str]) -> list[int]:
    return [ord(c) for c in chars]


def _glyph_lines_bulk(textpage: Any, text: str, transform: Transform) -> list[Line]:
    """A page's lines, the same glyphs with the same boxes as `_glyph_lines` gives, with the
    work per character done on whole arrays instead of in Python: pdfium writes every box into
    one buffer, and numpy maps the boxes onto the page, drops hidden text and bounds each line
    (the same float operations in the same order, so the same values). Reading the text layers
    of the 3M 10-K (160 pages, 587k characters) took 1.8 s of CPU one character at a time and
    0.9 s so, of which 0.6 s is pdfium loading the pages and their text."""
    import numpy as np
    import pypdfium2.raw as raw

    count = len(text)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    glyph_text = _GlyphTexts()
    texts = list(map(glyph_text.__getitem__, text))
    breaks = (codes == 10) | (codes == 13)
    marks = ~np.isin(codes, _codes(glyph_text.spaces))  # neither a space nor a line break
    # FS_RECTF is 4 floats: left, top, right, bottom.
    buffer = (ctypes.c_float * (4 * count))()
    base = ctypes.addressof(buffer)
    loose_box = _loose_char_box()
    handle = ctypes.cast(textpage.raw, ctypes.c_void_p).value
    asked = np.flatnonzero(marks).tolist()
    boxed = np.zeros(count, dtype=bool)
    boxed[asked] = [loose_box(handle, i, base + 16 * i) for i in asked]
    rects = np.frombuffer(memoryview(buffer), dtype=np.float32).reshape(count, 4).astype(np.float64)
    left, top, right, bottom = rects.T
    ox, oy, ax, ay, bx, by = transform
    xa, xb = ox + ax * left + bx * bottom, ox + ax * right + bx * top
    ya, yb = oy + ay * left + by * bottom, oy + ay * right + by * top
    flip_x, flip_y = ~(xa <= xb), ya > yb
    x0, x1 = np.where(flip_x, xb, xa), np.where(flip_x, xa, xb)
    y0, y1 = np.where(flip_y, yb, ya), np.where(flip_y, ya, yb)
    visible = (x0 >= -0.01) & (x0 <= 1.01) & (y0 >= -0.01) & (y0 <= 1.01)
    # Line breaks make no glyph, nor does text outside the visible page (hidden text).
    kept = np.flatnonzero(~breaks & ~(boxed & ~visible))
    if not len(kept):
        return []
    corners = np.stack([x0, y0, x1, y1], axis=1)
    boxes: list[Box | None] = list(map(tuple, corners.tolist()))
    for i in np.flatnonzero(~boxed).tolist():
        boxes[i] = None
    order = kept.tolist()
    pairs = zip([texts[i] for i in order], [boxes[i] for i in order], strict=True)
    glyphs = list(map(_new_glyph, pairs))
    # A line: the kept glyphs between two line breaks.
    line_of = np.cumsum(breaks)[kept]
    starts = np.flatnonzero(np.r_[True, line_of[1:] != line_of[:-1]])
    ends = np.r_[starts[1:], len(kept)]
    # Its box bounds those of its glyphs that show something; its size is its first glyph's.
    shows = np.flatnonzero(boxed[kept] & ~np.isin(codes[kept], _codes(glyph_text.blank)))
    bounds = [(0.0, 0.0, 0.0, 0.0)] * len(starts)
    if len(shows):
        owner = np.searchsorted(starts, shows, side="right") - 1
        firsts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        inside = corners[kept[shows]]
        low = np.minimum.reduceat(inside[:, :2], firsts)
        high = np.maximum.reduceat(inside[:, 2:], firsts)
        lows, highs = low.tolist(), high.tolist()
        for k, (a, b), (c, d) in zip(owner[firsts].tolist(), lows, highs, strict=True):
            bounds[k] = (a, b, c, d)
    font_size = raw.FPDFText_GetFontSize
    return [
        Line(glyphs[a:b], bounds[k], font_size(textpage, order[a]))
        for k, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True))
    ]


@functools.cache
def _loose_char_box() -> Any:
    """pdfium's FPDFText_GetLooseCharBox taking plain addresses (textpage, index, FS_RECTF*),
    so that each character's box goes straight into a buffer without a ctypes object per call
    (0.15 s against 0.24 s for the 10-K's 587k characters)."""
    import pypdfium2.raw as raw

    prototype = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)
    address = ctypes.cast(raw.FPDFText_GetLooseCharBox, ctypes.c_void_p).value
    assert address is not None
    return prototype(address)


def _join_surrogates(high: str, low: str) -> str:
    return (high + low).encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _line(glyphs: list[Glyph], size: float) -> Line:
    boxes = [g.box for g in glyphs if g.box is not None and g.text.strip()]
    if not boxes:
        return Line(glyphs, (0.0, 0.0, 0.0, 0.0), size)
    return Line(
        glyphs,
        (
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        ),
        size,
    )


def signature(text: str) -> str:
    """A line's text with digits and spacing folded, to match running headers across pages."""
    return re.sub(r"\d+", "#", " ".join(text.lower().split()))


def _edge_lines(lines: Sequence[Line]) -> Iterator[tuple[int, Line]]:
    """The lines near the top or bottom edge of the page, where furniture lives."""
    for i, line in enumerate(lines):
        near_edge = i < FURNITURE_LINES or i >= len(lines) - FURNITURE_LINES
        top, bottom = line.box[1], line.box[3]
        if near_edge and (top < FURNITURE_ZONE or bottom > 1 - FURNITURE_ZONE):
            yield i, line


@dataclass
class Furniture:
    """What running headers and footers look like in one document."""

    signatures: frozenset[str] = frozenset()
    page_numbers: bool = False

    def lines(self, lines: Sequence[Line]) -> set[int]:
        found = set()
        for i, line in _edge_lines(lines):
            text = line.text.strip()
            if signature(text) in self.signatures or (
                self.page_numbers and _PAGE_NUMBER.match(text)
            ):
                found.add(i)
        return found


def learn_furniture(pages: Sequence[Sequence[Line]]) -> Furniture:
    """Running headers and footers from a sample of the document's pages."""
    if len(pages) < 3:
        return Furniture(page_numbers=len(pages) > 1)
    seen: Counter[str] = Counter()
    for lines in pages:
        seen.update({signature(line.text) for _, line in _edge_lines(lines)})
    needed = max(3, FURNITURE_SHARE * len(pages))
    common = frozenset(s for s, n in seen.items() if n >= needed and any(c.isalnum() for c in s))
    return Furniture(common, page_numbers=True)


@dataclass
class _Writer:
    """Builds the page text while keeping every glyph's box, for `words`."""

    parts: list[str] = field(default_factory=list)
    length: int = 0
    # Each word as it was closed: where it runs, and the boxes of its first and last glyphs.
    spans: list[tuple[int, int, Box, Box]] = field(default_factory=list)
    # The open word: where it starts, and the boxes of its first and last glyphs.
    _start: int = 0
    _first: Box | None = None
    _last: Box | None = None

    def text(self, value: str) -> None:
        """Text with no box (separators, table markup)."""
        if value:
            self._close()
            self.parts.append(value)
            self.length += len(value)

    def glyph(self, glyph: Glyph) -> None:
        value, box = glyph
        if not value:
            return
        if box is None or value.isspace():
            self.text(" " if value.isspace() else value)
            return
        if self._first is None:
            self._start, self._first = self.length, box
        self._last = box
        self.parts.append(value)
        self.length += len(value)

    def glyphs(self, glyphs: Iterable[Glyph]) -> None:
        """`glyph` for each of `glyphs`, with the open word kept in locals: this runs on every
        character of a PDF (on the 3M 10-K, laying the pages out took 0.37 s of CPU with a
        call per glyph, 0.2 s so)."""
        append, spans = self.parts.append, self.spans
        length, start, first, last = self.length, self._start, self._first, self._last
        for value, box in glyphs:
            if not value:
                continue
            if box is None or value.isspace():  # as `text`: it ends the open word
                if first is not None and last is not None:
                    spans.append((start, length, first, last))
                    first = None
                if value.isspace():
                    value = " "
            else:
                if first is None:
                    start, first = length, box
                last = box
            append(value)
            length += len(value)
        self.length, self._start, self._first, self._last = length, start, first, last

    def _close(self) -> None:
        first, last = self._first, self._last
        if first is not None and last is not None:
            self.spans.append((self._start, self.length, first, last))
            self._first = None

    def result(self) -> str:
        self._close()
        return "".join(self.parts)

    def words(self) -> list[Word]:
        """Each word of the page text and its box, to 4 decimals: a word runs along one line,
        so its first and last glyphs bound it. Worked out on whole arrays (a call and four
        `round`s per word took 0.23 s of the 3M 10-K's 1.4 s of CPU)."""
        self._close()
        if not self.spans:
            return []
        import numpy as np

        starts, ends, firsts, lasts = zip(*self.spans, strict=True)
        a, b = np.array(firsts), np.array(lasts)
        box = np.round(np.concatenate([np.minimum(a, b)[:, :2], np.maximum(a, b)[:, 2:]], 1), 4)
        return [(s, e, *rest) for s, e, rest in zip(starts, ends, box.tolist(), strict=True)]


def _glyph_runs(glyphs: Sequence[Glyph]) -> list[Glyph]:
    """The glyphs with runs of spaces folded to one and the ends trimmed."""
    out: list[Glyph] = []
    space = True  # the last glyph kept is a space (or none is kept yet)
    for g in glyphs:
        if g[0].isspace():
            if not space:
                out.append(_SPACE)
                space = True
        else:
            out.append(g)
            space = False
    if space and out:
        out.pop()  # runs are folded, so only one space can trail
    return out


def _paragraph_break(previous: Line, line: Line, height: float) -> bool:
    gap = line.box[1] - previous.box[3]
    return gap > PARAGRAPH_GAP * height or line.box[1] < previous.box[1] - height / 2


def _ends_hyphenated(glyphs: Sequence[Glyph], lines: Sequence[Line], i: int) -> bool:
    """Line `i` (its `glyphs`) ends in a hyphen that splits a word with the next line. The
    texts are only put together for a line whose last glyph could end in one."""
    tail = glyphs[-1][0]
    if tail and not tail.endswith("-"):
        return False
    following = lines[i + 1].text.strip() if i + 1 < len(lines) else ""
    return _hyphenated("".join([g[0] for g in glyphs]), following)


def _hyphenated(text: str, following: str) -> bool:
    return (
        len(text) >= 2
        and text.endswith("-")
        and text[-2].isalpha()
        and following[:1].isalpha()
        and following[:1].islower()
    )


def layout_page(
    number: int,
    lines: Sequence[Line],
    furniture: set[int],
    tables: Sequence[TableRegion] = (),
) -> Page:
    """One page's text from its lines: paragraphs, furniture spans, tables and word boxes."""
    heights = [ln.box[3] - ln.box[1] for ln in lines if ln.box[3] > ln.box[1]]
    height = statistics.median(heights) if heights else 0.01
    table_at = {t.first_line: t for t in tables}
    out = _Writer()
    spans: list[tuple[int, int]] = []
    table_spans: list[TableSpan] = []
    previous: Line | None = None
    joined = False  # the previous line ended in a hyphen that was dropped
    i = 0
    while i < len(lines):
        if i in table_at:
            region = table_at[i]
            if out.length:
                out.text("\n\n")
            table_spans.append(_write_table(out, lines, region))
            previous, joined = lines[region.end_line - 1], False
            i = region.end_line
            continue
        line = lines[i]
        glyphs = _glyph_runs(line.glyphs)
        if not glyphs:
            i += 1
            continue
        start_of_line = out.length
        if previous is not None and not joined:
            out.text("\n\n" if _paragraph_break(previous, line, height) else "\n")
            start_of_line = out.length
        joined = (
            i not in furniture
            and i + 1 not in furniture
            and i + 1 not in table_at
            and _ends_hyphenated(glyphs, lines, i)
            and not _paragraph_break(line, lines[i + 1], height)
        )
        out.glyphs(glyphs[:-1] if joined else glyphs)
        if i in furniture:
            spans.append((start_of_line, out.length))
        previous = line
        i += 1
    return Page(
        number,
        out.result(),
        words=out.words(),
        tables=table_spans,
        furniture=spans,
    )


def _write_table(out: _Writer, lines: Sequence[Line], region: TableRegion) -> TableSpan:
    """Write a table as Markdown, each cell's glyphs keeping their boxes."""
    width = max(len(row) for row in region.rows)
    start = out.length
    header_end = start
    for r, row in enumerate(region.rows):
        if r:
            out.text("\n")
        if r == region.header_rows and r:
            out.text("| " + " | ".join(["---"] * width) + " |")
            header_end = out.length
            out.text("\n")
        out.text("|")
        for cell in [*row, *([[]] * (width - len(row)))]:
            out.text(" ")
            first = True
            for line_no, g0, g1 in cell:
                glyphs = _glyph_runs(lines[line_no].glyphs[g0:g1])
                while glyphs and glyphs[0].text.isspace():
                    glyphs.pop(0)
                if glyphs and not first:
                    out.text(" ")
                for g in glyphs:
                    out.glyph(Glyph(g.text.replace("|", "\\|"), g.box))
                first = first and not glyphs
            out.text(" |")
    if region.header_rows and len(region.rows) == region.header_rows:
        out.text("\n| " + " | ".join(["---"] * width) + " |")
        header_end = out.length
    return TableSpan(start, out.length, header_end)


def _cell_text(lines: Sequence[Line], part: tuple[int, int, int]) -> str:
    line_no, g0, g1 = part
    return "".join(g.text for g in _glyph_runs(lines[line_no].glyphs[g0:g1])).strip()


def read(path: Path, ctx: ReadContext) -> Iterator[Page]:
    pdf = open_pdf(path)
    total = len(pdf)
    ctx.total(total)
    # The sampled pages are read once: kept for their turn, dropped as it passes.
    sampled = {i: _lines(pdf, i) for i in _sample(total)}
    furniture = learn_furniture(list(sampled.values()))

    def text_layers() -> Iterator[list[Line]]:
        for index in range(total):
            lines = sampled.pop(index, None)
            yield _lines(pdf, index) if lines is None else lines

    # Pages without a usable text layer are recognised (docs/ocr.md); the others keep theirs.
    pages: Iterator[tuple[list[Line], bool]] = ((lines, False) for lines in text_layers())
    if ctx.ocr:
        from docqa.formats import pdf_ocr  # imported here: it builds on this module's lines

        planned = pdf_ocr.plan(pdf, total, sampled, furniture)
        pages = pdf_ocr.recognise(pdf, ctx, text_layers(), planned, furniture)
    from docqa.formats import pdf_tables  # imported here: it builds on this module's lines

    tables = pdf_tables.enabled()
    for index, (lines, recognised) in enumerate(pages):
        with uncollected():
            edges = furniture.lines(lines)
            found = pdf_tables.find_tables(lines, edges) if tables else []
            page = layout_page(index + 1, lines, edges, found)
        page.ocr = recognised
        yield page


def _sample(total: int) -> list[int]:
    if total <= FURNITURE_SAMPLE:
        return list(range(total))
    step = total / FURNITURE_SAMPLE
    return sorted({int(i * step) for i in range(FURNITURE_SAMPLE)})


def _lines(pdf: Any, index: int) -> list[Line]:
    import pypdfium2 as pdfium

    try:
        page = pdf[index]
    except pdfium.PdfiumError:
        return []  # one unreadable page should not cost the whole document
    try:
        with uncollected():
            return read_lines(page)
    except pdfium.PdfiumError:
        return []
    finally:
        page.close()


@contextlib.contextmanager
def uncollected() -> Iterator[None]:
    """Python's cycle collector off while a page's glyphs and words are made. A page of a
    10-K makes some 7,000 tuples, lists and boxes, none of them in a cycle, and every 700 new
    objects started a collection that walked them again (and every few, everything the
    document had read so far): 0.4 of the 2.2 s of CPU it took to read the 3M 10-K."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
