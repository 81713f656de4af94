"""Text extraction under a time and memory budget, in a separate process.

A hostile file can make a parser spin, allocate without bound or crash outright. Extraction
therefore runs in a child process (from a `forkserver`, so no server state is inherited) with an
address-space limit, and the parent kills it when its time is up. The worker itself never dies.
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

from docqa.errors import ExtractionFailed
from docqa.ingest import readers

_context_lock = threading.Lock()
_context: multiprocessing.context.ForkServerContext | None = None


@dataclass(frozen=True)
class Limits:
    max_pages: int
    timeout_s: float
    memory_mb: int


@dataclass(frozen=True)
class ExtractedPage:
    page_no: int
    text: str


ProgressCallback = Callable[[int, int], None]


def _mp_context() -> multiprocessing.context.ForkServerContext:
    global _context
    with _context_lock:
        if _context is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["docqa.ingest.readers", "pypdfium2", "docx", "bs4", "lxml"])
            _context = ctx
        return _context


def _child(
    conn: multiprocessing.connection.Connection, path: str, kind: str, limits: Limits
) -> None:
    """Entry point of the extraction process: stream pages back over `conn`."""
    limit = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        if kind == "pdf":
            pdf, total = readers.count_pages_pdf(Path(path))
            _check_pages(total, limits.max_pages)
            conn.send(("total", total))
            for page_no, text in readers.read_pdf(pdf, total):
                conn.send(("page", page_no, text))
        else:
            for page_no, text in readers.read_sections(Path(path), kind):
                _check_pages(page_no, limits.max_pages)
                conn.send(("page", page_no, text))
        conn.send(("end",))
    except ExtractionFailed as exc:
        conn.send(("failed", exc.code, exc.message))
    except MemoryError:
        conn.send(("failed", "out_of_memory", _memory_message(limits)))
    except Exception:
        conn.send(("failed", "corrupt", "This file is damaged or malformed, so it cannot be read."))
    finally:
        conn.close()


def _check_pages(count: int, max_pages: int) -> None:
    if count > max_pages:
        raise ExtractionFailed(
            "too_many_pages",
            f"This document has more than {max_pages} pages, the most docqa accepts.",
        )


def _memory_message(limits: Limits) -> str:
    return f"Reading this file needed more than the {limits.memory_mb} MB of memory allowed."


def extract_pages(
    path: Path,
    kind: str,
    limits: Limits,
    on_progress: ProgressCallback | None = None,
    on_page: Callable[[ExtractedPage], None] | None = None,
) -> list[ExtractedPage]:
    """Extract every page of `path`; blocking, so call it from a thread.

    `on_page` sees each page as it arrives, so later stages can start before the last page.
    Raises `ExtractionFailed` with a stable code for every way a file can fail.
    """
    ctx = _mp_context()
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_child, args=(sender, str(path), kind, limits), name="docqa-extract", daemon=True
    )
    process.start()
    sender.close()
    deadline = time.monotonic() + limits.timeout_s
    pages: list[ExtractedPage] = []
    total = 0
    try:
        while True:
            remaining = deadline - time.monotonic()
            # poll() is also true at end of file, so a dead child falls through to recv().
            if remaining <= 0 or not receiver.poll(remaining):
                raise ExtractionFailed(
                    "timeout",
                    f"Reading this file took longer than the {limits.timeout_s:g} seconds allowed.",
                )
            try:
                message = receiver.recv()
            except EOFError:
                process.join(5)
                raise _died(process.exitcode, limits) from None
            match message:
                case ("total", int(n)):
                    total = n
                    if on_progress:
                        on_progress(0, total)
                case ("page", int(page_no), str(text)):
                    page = ExtractedPage(page_no, text)
                    pages.append(page)
                    if on_page:
                        on_page(page)
                    if on_progress:
                        on_progress(len(pages), total)
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


def check_has_text(pages: list[ExtractedPage]) -> None:
    """Fail documents that are (nearly) all images: fewer than 4 letters or digits per page."""
    alnum = sum(sum(c.isalnum() for c in p.text) for p in pages)
    if not pages or alnum < 4 * len(pages):
        raise ExtractionFailed(
            "no_text",
            "No text could be read from this file: it looks like scanned images, and docqa "
            "does not read text from images (OCR) yet.",
        )
