"""OCR for PDFs: which pages need it, and their lines in order with the recognised ones in.

A page is recognised when its text layer is garbage or reads (next to) nothing while the page
draws something (docs/ocr.md has the rule and its measurements); every other page keeps its text
layer. Pages are rendered on the reading thread (pdfium is not thread-safe) and recognised on
`Tesseract`'s threads while the next pages are read.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from docqa.formats.ocr import Tesseract, TextQuality, lines_quality, raw_quality
from docqa.formats.page import ReadContext
from docqa.formats.pdf import Furniture, Line

if TYPE_CHECKING:
    from PIL.Image import Image

# PDF pages are rendered at this resolution for recognition (measured: docs/ocr.md)...
DPI = 300
# ...unless the page is so large that the image would pass this many pixels (a poster, a
# drawing): then at the resolution that fits.
MAX_RENDER_PIXELS = 50_000_000
# Pages read ahead of the one to hand over next, while it is being recognised.
MAX_PENDING = 32


def render(pdf: Any, index: int) -> tuple[Image, float, int]:
    """Page `index` as a greyscale image for recognition, the page's height in points, and the
    resolution used. pdfium is not thread-safe: call this from the reading thread only."""
    page = pdf[index]
    try:
        width, height = page.get_size()
        scale = DPI / 72
        if width * height * scale * scale > MAX_RENDER_PIXELS:
            scale = (MAX_RENDER_PIXELS / (width * height)) ** 0.5
        bitmap = page.render(scale=scale, grayscale=True, may_draw_forms=True)
        try:
            image = bitmap.to_pil().copy()  # the bitmap's buffer is freed with it
        finally:
            bitmap.close()
        return image, image.height / scale, round(scale * 72)
    finally:
        page.close()


def _draws(pdf: Any, index: int, *, images_only: bool) -> bool:
    """Does the page draw images (or, with `images_only` false, anything at all)?"""
    import pypdfium2 as pdfium
    import pypdfium2.raw as raw

    try:
        page = pdf[index]
    except pdfium.PdfiumError:
        return False
    try:
        count = raw.FPDFPage_CountObjects(page)
        if not images_only:
            return bool(count > 0)
        pictures = (raw.FPDF_PAGEOBJ_IMAGE, raw.FPDF_PAGEOBJ_FORM)
        return any(
            raw.FPDFPageObj_GetType(raw.FPDFPage_GetObject(page, i)) in pictures
            for i in range(count)
        )
    finally:
        page.close()


def needs_ocr(pdf: Any, index: int, quality: TextQuality) -> bool:
    """A page needs OCR when its text layer is garbage, or reads (next to) nothing while the
    page draws something: images, or, with no text at all, anything (text drawn as outlines)."""
    if quality.garbage:
        return True
    return quality.sparse and _draws(pdf, index, images_only=quality.alnum > 0)


def _scan_quality(pdf: Any, index: int) -> TextQuality:
    """A page's text-layer quality without laying it out: cheap, for planning."""
    import pypdfium2 as pdfium

    try:
        page = pdf[index]
    except pdfium.PdfiumError:
        return TextQuality(0, 0)
    try:
        textpage = page.get_textpage()
        try:
            return raw_quality(textpage.get_text_range())
        finally:
            textpage.close()
    except pdfium.PdfiumError:
        return TextQuality(0, 0)
    finally:
        page.close()


def content(lines: list[Line], furniture: Furniture | None) -> list[Line]:
    """The lines that are the page's own, not its running header, footer or page number: a
    scan whose text layer is only a stamped header ("Case 2:18-cv-… Page 3 of 16") still needs
    reading."""
    if furniture is None:
        return lines
    edges = furniture.lines(lines)
    return [line for i, line in enumerate(lines) if i not in edges]


def plan(
    pdf: Any, total: int, sampled: dict[int, list[Line]], furniture: Furniture | None = None
) -> set[int] | None:
    """The pages that need OCR, when it shows in the sampled pages (then every other page is
    checked cheaply, so that the `ocr` stage knows its total); None when no sampled page needs
    it: a born-digital document pays nothing more, and a rare scanned page is found as read."""
    flagged = {
        i
        for i, lines in sampled.items()
        if needs_ocr(pdf, i, lines_quality(content(lines, furniture)))
    }
    if not flagged or len(sampled) == total:
        return flagged or None
    return flagged | {
        i for i in range(total) if i not in sampled and needs_ocr(pdf, i, _scan_quality(pdf, i))
    }


def recognise(
    pdf: Any,
    ctx: ReadContext,
    layers: Iterator[list[Line]],
    planned: set[int] | None,
    furniture: Furniture | None = None,
) -> Iterator[tuple[list[Line], bool]]:
    """Each page's lines in order, as `(lines, recognised)`: the text layer, or what OCR read
    where the page needs it and OCR reads more letters and digits than the layer has.

    Pages are rendered here (pdfium is single-threaded) and recognised on `Tesseract`'s threads
    while the next pages are read; every page that needs OCR asks for more time.
    """
    expected = len(planned) if planned else 0
    if expected:
        ctx.extend_budget(expected * ctx.ocr_timeout_s_per_page)
        ctx.stage("ocr", 0, expected)
    engine: Tesseract | None = None
    pending: deque[tuple[list[Line], Future[list[Line]] | None]] = deque()
    done = 0

    def finish(lines: list[Line], job: Future[list[Line]] | None) -> tuple[list[Line], bool]:
        nonlocal done
        if job is None:
            return lines, False
        recognised = job.result()
        done += 1
        ctx.stage("ocr", done, max(expected, done))
        if lines_quality(recognised).alnum > lines_quality(lines).alnum:
            return recognised, True
        return lines, False

    try:
        for index, lines in enumerate(layers):
            job = None
            if planned is not None:
                wanted = index in planned
            else:
                wanted = needs_ocr(pdf, index, lines_quality(content(lines, furniture)))
                if wanted:
                    expected += 1
                    ctx.extend_budget(ctx.ocr_timeout_s_per_page)
            if wanted:
                engine = engine or Tesseract(ctx.ocr_languages)
                job = _submit(engine, pdf, index)
            pending.append((lines, job))
            while pending and (
                pending[0][1] is None
                or pending[0][1].done()
                or len(pending) >= MAX_PENDING
                # One rendered page waits for each thread to free up; no more.
                or sum(j is not None for _, j in pending) > engine_threads(engine) + 1
            ):
                yield finish(*pending.popleft())
        while pending:
            yield finish(*pending.popleft())
    finally:
        if engine is not None:
            engine.close()


def _submit(engine: Tesseract, pdf: Any, index: int) -> Future[list[Line]] | None:
    import pypdfium2 as pdfium

    try:
        image, points_high, dpi = render(pdf, index)
    except pdfium.PdfiumError:
        return None  # a page pdfium cannot draw keeps what it has, as one it cannot read
    return engine.submit(image, points_high, dpi)


def engine_threads(engine: Tesseract | None) -> int:
    return engine.threads if engine is not None else 1
