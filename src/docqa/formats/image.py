"""Images (PNG, JPEG, TIFF, WebP): each frame is a page, recognised with Tesseract.

Pages are numbered in frame order, so a page's image is the file's frame of that number. A
hostile image is refused from its header, before any pixel is decoded: too many pixels (a
decompression bomb claims a huge size in a few bytes), or more frames than a document may have
pages. The EXIF orientation is applied, so a phone photo taken sideways reads upright, and word
boxes are in fractions of the upright image.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from docqa.errors import ExtractionFailed
from docqa.formats.page import Page, ReadContext
from docqa.formats.pdf import Line, layout_page

if TYPE_CHECKING:
    from PIL.Image import Image

# At most this many pixels in one frame: a 600-dpi A3 scan has 70 million. Pillow's own guard
# is set to the same, so no decoder starts on a larger frame.
MAX_PIXELS = 80_000_000
# A frame's resolution when the file does not say (or says something implausible): only to
# give lines a font size.
DEFAULT_DPI = 300
# Smaller frames (a page saved at 72 dpi, a screenshot) are enlarged by a whole factor to about
# this many pixels: Tesseract misreads letters only a few pixels high. Measured on a 612 × 792
# page: 1,731 characters read at its size (mean confidence 47), 3,430 at twice it (86), no more
# at three or four times.
SMALL_PIXELS = 2_000_000
MAX_ENLARGE = 4


def _too_large(width: int, height: int) -> ExtractionFailed:
    return ExtractionFailed(
        "too_large",
        f"This image is {width:,} × {height:,} pixels; docqa reads images of at most "
        f"{MAX_PIXELS // 1_000_000} million pixels per page.",
    )


def _open(path: Path) -> Image:
    """The image with its header read and its size checked; no pixel decoded yet."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            # Pillow warns between its limit and twice it, and refuses above: refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ExtractionFailed(
            "too_large",
            f"This image has more than {MAX_PIXELS // 1_000_000} million pixels, the most docqa "
            "reads in one page.",
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ExtractionFailed(
            "corrupt", "This file is damaged or is not a valid image, so it cannot be read."
        ) from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise _too_large(width, height)
    return image


def _frame_count(image: Image, max_pages: int) -> int:
    """Pages in the file: a TIFF's frames, counted by seeking (headers only) and never past
    `max_pages + 1`, so a 10,000-frame TIFF is refused without walking all of it. Other formats
    are one page (an animated PNG or WebP is read by its first frame)."""
    if image.format != "TIFF":
        return 1
    count = 0
    try:
        while count <= max_pages:
            image.seek(count)
            count += 1
    except EOFError:
        pass
    except (OSError, ValueError, SyntaxError):
        if count == 0:
            raise ExtractionFailed(
                "corrupt", "This file is damaged or is not a valid image, so it cannot be read."
            ) from None
    image.seek(0)
    return count


def _upright(image: Image) -> Image:
    """The frame decoded, turned as its EXIF orientation says, on white where it is transparent
    (transparent text on black would vanish), in greyscale for Tesseract."""
    from PIL import Image as PILImage
    from PIL import ImageOps

    width, height = image.size
    if width * height > MAX_PIXELS:
        raise _too_large(width, height)
    frame = ImageOps.exif_transpose(image) or image
    if frame.mode in ("RGBA", "LA", "PA") or (frame.mode == "P" and "transparency" in frame.info):
        rgba = frame.convert("RGBA")
        background = PILImage.new("RGBA", rgba.size, "white")
        frame = PILImage.alpha_composite(background, rgba)
    return frame.convert("L")


def _enlargement(frame: Image) -> int:
    pixels = frame.width * frame.height
    return max(1, min(MAX_ENLARGE, int((SMALL_PIXELS / max(pixels, 1)) ** 0.5)))


def _dpi(image: Image) -> int:
    dpi = image.info.get("dpi")
    try:
        value = round(float(dpi[0])) if dpi else 0
    except (TypeError, ValueError, IndexError):
        value = 0
    return value if 100 <= value <= 2400 else DEFAULT_DPI


def read(path: Path, ctx: ReadContext) -> Iterator[Page]:
    image = _open(path)
    with image:
        frames = _frame_count(image, ctx.max_pages)
        ctx.total(frames)
        if not ctx.ocr:
            # Nothing to read without OCR: empty pages, so the document fails `no_text` saying
            # OCR is off.
            for number in range(1, frames + 1):
                yield Page(number, "")
            return
        yield from _recognise(image, frames, ctx)


def _recognise(image: Image, frames: int, ctx: ReadContext) -> Iterator[Page]:
    from PIL import Image as PILImage

    from docqa.formats.ocr import Tesseract

    ctx.extend_budget(frames * ctx.ocr_timeout_s_per_page)
    ctx.stage("ocr", 0, frames)
    engine = Tesseract(ctx.ocr_languages)
    pending: deque[Future[list[Line]]] = deque()
    done = 0
    try:
        for index in range(frames):
            image.seek(index)
            try:
                frame = _upright(image)
            except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError):
                raise ExtractionFailed(
                    "corrupt",
                    f"Frame {index + 1} of this image is damaged, so it cannot be read.",
                ) from None
            points_high = frame.height * 72 / _dpi(image)
            factor = _enlargement(frame)
            if factor > 1:
                size = (frame.width * factor, frame.height * factor)
                frame = frame.resize(size, PILImage.Resampling.LANCZOS)
            # No resolution is passed on: files often claim a wrong one (72 dpi for a phone
            # photo; a wrong 600 dpi halved what a page read), and Tesseract estimates it from
            # the letters themselves.
            pending.append(engine.submit(frame, points_high))
            # Decode ahead only as far as the threads can take: frames can be large.
            while len(pending) > engine.threads or (pending and pending[0].done()):
                done += 1
                yield _page(done, pending.popleft().result(), ctx, frames)
        while pending:
            done += 1
            yield _page(done, pending.popleft().result(), ctx, frames)
    finally:
        engine.close()


def _page(number: int, lines: list[Line], ctx: ReadContext, frames: int) -> Page:
    ctx.stage("ocr", number, frames)
    page = layout_page(number, lines, set())
    page.ocr = True
    return page
