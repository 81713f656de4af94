"""Page images: a PDF page rendered with pypdfium2, or an image document's frame, as PNG or WebP.

Rendering reads an uploaded file with a native library, so it runs in a sandboxed child process
(the extraction sandbox's fork server) with a memory limit and a deadline: a hostile file cannot
take the API process down. The caller caches what comes back (see `api/pages.py`).
"""

from __future__ import annotations

import io
import multiprocessing.connection
import resource
import time
from pathlib import Path
from typing import Any, Literal

from docqa.errors import DocqaError

ImageFormat = Literal["png", "webp"]
MIN_WIDTH, MAX_WIDTH, WIDTH_STEP = 100, 2000, 50
# A very tall page is rendered no taller than this many times its width.
MAX_ASPECT = 4.0
RENDER_TIMEOUT_S = 20.0
RENDER_MEMORY_MB = 1024
# Bump when rendering changes, so that cached images and ETags from before are not reused.
RENDER_VERSION = 2
# Pillow's transposition for each EXIF orientation (as `ImageOps.exif_transpose` applies it),
# used here on the reduced frame rather than on the full-size one.
_ORIENTATIONS = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE"}
_ORIENTATIONS |= {6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}


class RenderFailed(DocqaError):
    status_code = 422
    code = "render_failed"


def snap_width(width: int) -> int:
    """The width served: within bounds, on a step of `WIDTH_STEP` (a bounded set to cache)."""
    width = min(max(width, MIN_WIDTH), MAX_WIDTH)
    return int(round(width / WIDTH_STEP) * WIDTH_STEP)


def _pdf_page(path: str, page: int, width: int) -> Any:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(path)
    pdf_page = pdf[page - 1]
    w, h = pdf_page.get_size()
    out_w, _ = _fit(w, h, width)
    return pdf_page.render(scale=out_w / w, may_draw_forms=True).to_pil()


def _fit(width: float, height: float, wanted: int) -> tuple[int, int]:
    """The size a `width` × `height` page is drawn at: `wanted` wide, unless that makes it
    taller than `MAX_ASPECT` times the width (then narrower, at the same proportions)."""
    scale = min(wanted / width, MAX_ASPECT * wanted / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _image_frame(path: str, page: int, width: int) -> Any:
    """An image document's frame `page`, upright, at `width`. Memory stays near the output's
    size plus one decoded frame (at most `formats.image.MAX_PIXELS`, as ingest allows): a JPEG
    decodes already reduced (`draft`), and the frame is reduced before it is turned."""
    from PIL import Image

    from docqa.formats.image import MAX_PIXELS

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # a larger frame is refused before it is decoded
    image = Image.open(path)
    image.seek(page - 1)
    turn = _ORIENTATIONS.get(int(image.getexif().get(0x0112, 1)))
    sideways = turn in ("TRANSPOSE", "ROTATE_270", "TRANSVERSE", "ROTATE_90")
    upright_w, upright_h = (image.height, image.width) if sideways else image.size
    out_w, out_h = _fit(upright_w, upright_h, width)
    size = (out_h, out_w) if sideways else (out_w, out_h)
    image.draft("RGB", size)
    frame: Any = image
    if frame.mode in ("RGBA", "LA", "PA") or (frame.mode == "P" and "transparency" in frame.info):
        rgba = frame.convert("RGBA")  # transparent parts on white, as OCR read them
        frame = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    if frame.mode not in ("RGB", "L"):
        frame = frame.convert("RGB")
    frame = frame.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if turn is not None:
        frame = frame.transpose(getattr(Image.Transpose, turn))
    return frame


def _child(
    conn: multiprocessing.connection.Connection,
    path: str,
    kind: str,
    page: int,
    width: int,
    fmt: ImageFormat,
) -> None:
    limit = RENDER_MEMORY_MB * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        image = _pdf_page(path, page, width) if kind == "pdf" else _image_frame(path, page, width)
        out = io.BytesIO()
        if fmt == "webp":
            # Method 1: a third less time than 2 for a few percent more bytes (a text page
            # at width 1,000: about 30 ms, 190 KB).
            image.save(out, format="WEBP", quality=85, method=1)
        else:
            image.save(out, format="PNG", optimize=False, compress_level=3)
        conn.send(("ok", out.getvalue()))
    except Exception:
        conn.send(("failed",))
    finally:
        conn.close()


def render_page(path: Path, kind: str, page: int, width: int, fmt: ImageFormat) -> bytes:
    """The page as image bytes; blocking, so call it from a thread. Raises `RenderFailed`."""
    # Imported here, not at the top: the sandboxed child imports this module to run `_child`,
    # and needs none of extraction's.
    from docqa.ingest.extract import sandbox_context

    ctx = sandbox_context()
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_child, args=(sender, str(path), kind, page, width, fmt), daemon=True
    )
    process.start()
    sender.close()
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    try:
        if not receiver.poll(max(0.0, deadline - time.monotonic())):
            raise RenderFailed("This page took too long to draw.")
        try:
            message = receiver.recv()
        except EOFError:
            raise RenderFailed("This page could not be drawn: the file may be damaged.") from None
        if message[0] != "ok":
            raise RenderFailed("This page could not be drawn: the file may be damaged.")
        data: bytes = message[1]
        return data
    finally:
        receiver.close()
        if process.is_alive():
            process.kill()
        process.join(5)
