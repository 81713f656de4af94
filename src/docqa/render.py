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
from docqa.ingest.extract import sandbox_context

ImageFormat = Literal["png", "webp"]
MIN_WIDTH, MAX_WIDTH, WIDTH_STEP = 100, 2000, 50
# A very tall page is rendered no taller than this many times its width.
MAX_ASPECT = 4.0
RENDER_TIMEOUT_S = 20.0
RENDER_MEMORY_MB = 1024
# Bump when rendering changes, so that cached images and ETags from before are not reused.
RENDER_VERSION = 1


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
    scale = width / w
    if h * scale > MAX_ASPECT * width:
        scale = MAX_ASPECT * width / h
    return pdf_page.render(scale=scale, may_draw_forms=True).to_pil()


def _image_frame(path: str, page: int, width: int) -> Any:
    from PIL import Image, ImageOps

    image = Image.open(path)
    image.seek(page - 1)
    frame = ImageOps.exif_transpose(image) or image
    if frame.mode not in ("RGB", "L"):
        frame = frame.convert("RGB")
    height = round(frame.height * width / frame.width)
    return frame.resize((width, min(height, int(MAX_ASPECT * width))))


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
            image.save(out, format="WEBP", quality=85, method=2)
        else:
            image.save(out, format="PNG", optimize=False, compress_level=3)
        conn.send(("ok", out.getvalue()))
    except Exception:
        conn.send(("failed",))
    finally:
        conn.close()


def render_page(path: Path, kind: str, page: int, width: int, fmt: ImageFormat) -> bytes:
    """The page as image bytes; blocking, so call it from a thread. Raises `RenderFailed`."""
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
