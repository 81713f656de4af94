"""Text extraction under a time and memory budget, in a separate process.

A hostile file can make a parser spin, allocate without bound or crash outright. Extraction
therefore runs in a child process (from a `forkserver`, so no server state is inherited) with an
address-space limit, and the parent kills it when its time is up. The worker itself never dies.

The child runs the format's reader (`docqa.formats`) and streams what it reports over a pipe:
the page count once known, each page as it is read, the progress of slow stages (OCR), and
requests for more time when it finds slow work (pages to recognise), granted up to a cap.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import resource
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from docqa import formats
from docqa.errors import ExtractionFailed
from docqa.formats.page import Page, ReadContext, check_page_count

_context_lock = threading.Lock()
_context: multiprocessing.context.ForkServerContext | None = None
# Modules every extraction needs, imported once by the fork server instead of by every child.
# Tesseract itself is loaded by the child that needs it (docqa.formats.ocr sets its threads first).
PRELOAD = [
    "docqa.formats.pdf",
    "docqa.formats.page",
    "docqa.formats.ocr",
    "docqa.formats.pdf_ocr",
    "pypdfium2",
    "PIL.Image",
    "docx",
    "bs4",
    "lxml",
]


@dataclass(frozen=True)
class Limits:
    max_pages: int
    timeout_s: float
    memory_mb: int
    # More time the reader may ask for (pages to recognise), in all; 0: none.
    max_extra_s: float = 0.0


@dataclass(frozen=True)
class ReadOptions:
    ocr: bool = True
    ocr_languages: str = "eng"
    ocr_timeout_s_per_page: float = 30.0


# (stage, done, total): "extracting" counts pages read, "ocr" pages recognised.
ProgressCallback = Callable[[str, int, int], None]


def sandbox_context() -> multiprocessing.context.ForkServerContext:
    """The fork server every sandboxed child (extraction, page rendering) starts from."""
    global _context
    with _context_lock:
        if _context is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            _context = ctx
        return _context


def _child(
    conn: multiprocessing.connection.Connection,
    path: str,
    kind: str,
    limits: Limits,
    options: ReadOptions,
) -> None:
    """Entry point of the extraction process: stream pages back over `conn`."""
    limit = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    ctx = ReadContext(
        max_pages=limits.max_pages,
        ocr=options.ocr,
        ocr_languages=options.ocr_languages,
        ocr_timeout_s_per_page=options.ocr_timeout_s_per_page,
        report=conn.send,
    )
    try:
        read = formats.get(kind).reader()
        for page in read(Path(path), ctx):
            check_page_count(page.number, limits.max_pages)
            conn.send(("page", page))
        conn.send(("end",))
    except ExtractionFailed as exc:
        conn.send(("failed", exc.code, exc.message))
    except MemoryError:
        conn.send(("failed", "out_of_memory", _memory_message(limits)))
    except Exception:
        conn.send(("failed", "corrupt", "This file is damaged or malformed, so it cannot be read."))
    finally:
        conn.close()


def _memory_message(limits: Limits) -> str:
    return f"Reading this file needed more than the {limits.memory_mb} MB of memory allowed."


def _timeout_message(allowed_s: float) -> str:
    return f"Reading this file took longer than the {allowed_s:g} seconds allowed."


def extract_pages(
    path: Path,
    kind: str,
    limits: Limits,
    on_progress: ProgressCallback | None = None,
    on_page: Callable[[Page], None] | None = None,
    options: ReadOptions | None = None,
) -> list[Page]:
    """Extract every page of `path`; blocking, so call it from a thread.

    `on_page` sees each page as it arrives, so later stages can start before the last page.
    Raises `ExtractionFailed` with a stable code for every way a file can fail.
    """
    ctx = sandbox_context()
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_child,
        args=(sender, str(path), kind, limits, options or ReadOptions()),
        name="docqa-extract",
        daemon=True,
    )
    process.start()
    sender.close()
    allowed = limits.timeout_s
    started = time.monotonic()
    pages: list[Page] = []
    total = 0
    try:
        while True:
            remaining = started + allowed - time.monotonic()
            # poll() is also true at end of file, so a dead child falls through to recv().
            if remaining <= 0 or not receiver.poll(remaining):
                raise ExtractionFailed("timeout", _timeout_message(allowed))
            try:
                message = receiver.recv()
            except EOFError:
                process.join(5)
                raise _died(process.exitcode, limits) from None
            match message:
                case ("total", int(n)):
                    total = n
                    if on_progress:
                        on_progress("extracting", 0, total)
                case ("page", Page() as page):
                    pages.append(page)
                    if on_page:
                        on_page(page)
                    if on_progress:
                        on_progress("extracting", len(pages), max(total, len(pages)))
                case ("stage", str(stage), int(done), int(of)):
                    if on_progress:
                        on_progress(stage, done, of)
                case ("budget", float(seconds) | int(seconds)):
                    allowed = min(
                        allowed + max(0.0, seconds), limits.timeout_s + limits.max_extra_s
                    )
                case ("failed", str(code), str(text)):
                    raise ExtractionFailed(code, text)
                case ("end",):
                    return pages
    finally:
        receiver.close()
        if process.is_alive():
            process.kill()
        process.join(5)


def _died(exitcode: int | None, limits: Limits) -> ExtractionFailed:
    if exitcode is not None and exitcode < 0 and -exitcode in (signal.SIGKILL, signal.SIGSEGV):
        return ExtractionFailed(
            "extract_crashed",
            "The reader crashed on this file (it may be damaged, or need more than the "
            f"{limits.memory_mb} MB of memory allowed).",
        )
    return ExtractionFailed("corrupt", "This file is damaged or malformed, so it cannot be read.")


def check_has_text(pages: list[Page], *, ocr: bool = True) -> None:
    """Fail documents with (nearly) nothing to read, OCR included: fewer than 4 letters or
    digits per page. `ocr` says whether pages without a text layer were recognised."""
    alnum = sum(sum(c.isalnum() for c in p.text) for p in pages)
    if not pages or alnum < 4 * len(pages):
        raise ExtractionFailed(
            "no_text",
            "No text could be read from this file, not even by recognising its images (OCR): "
            "its pages look blank, or hold pictures without words."
            if ocr
            else "No text could be read from this file: it looks like scanned images, and text "
            "recognition (OCR) is turned off here (DOCQA_OCR=off).",
        )
