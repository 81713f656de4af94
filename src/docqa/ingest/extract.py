"""Text extraction under a time and memory budget, in a separate process.

A hostile file can make a parser spin, allocate without bound or crash outright. Extraction
therefore runs in a child process (from a `forkserver`, so no server state is inherited) with an
address-space limit, and the parent kills it when its time is up. The worker itself never dies.
The worker keeps a few such children and reuses them for file after file (`ingest.sandbox`);
any failure retires the child.

The child runs the format's reader (`docqa.formats`) and streams what it reports over a pipe:
the page count once known, each page as it is read, the progress of slow stages (OCR), and
requests for more time when it finds slow work (pages to recognise), granted up to a cap.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from docqa import formats
from docqa.errors import ExtractionFailed
from docqa.formats.page import Page, ReadContext, check_page_count
from docqa.ingest import sandbox as sandbox_module
from docqa.ingest.sandbox import Sandbox, SandboxFailed, SandboxPool, address_space

log = logging.getLogger(__name__)

# What a document that no reader could make sense of says (code `corrupt`), whether the reader
# raised or the child died without saying why.
CORRUPT_MESSAGE = "This file is damaged or malformed, so it cannot be read."

_context_lock = threading.Lock()
_context: multiprocessing.context.ForkServerContext | None = None
# Modules every extraction needs, imported once by the fork server instead of by every child.
# Tesseract itself is loaded by the child that needs it (docqa.formats.ocr sets its threads first).
PRELOAD = [
    "docqa.ingest.extract",
    "docqa.formats.pdf",
    "docqa.formats.page",
    "docqa.formats.ocr",
    "docqa.formats.pdf_ocr",
    "pypdfium2",
    "numpy",  # the PDF reader maps character boxes with it
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


def serve(conn: multiprocessing.connection.Connection) -> None:
    """The sandbox's loop: read each file the worker sends, until it closes the pipe. A failed
    file ends the loop, and with it the process: it is not used again."""
    while True:
        try:
            path, kind, limits, options = conn.recv()
        except EOFError:
            return
        if not _read_one(conn, path, kind, limits, options):
            return


def _read_one(
    conn: multiprocessing.connection.Connection,
    path: str,
    kind: str,
    limits: Limits,
    options: ReadOptions,
) -> bool:
    """Stream one file's pages back over `conn`, then `end` (True) or `failed` (False)."""
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
        conn.send(("end", address_space()))
        return True
    except ExtractionFailed as exc:
        conn.send(("failed", exc.code, exc.message))
    except MemoryError:
        conn.send(("failed", "out_of_memory", _memory_message(limits)))
    except Exception:
        conn.send(("failed", "corrupt", CORRUPT_MESSAGE))
    return False


def _memory_message(limits: Limits) -> str:
    return f"Reading this file needed more than the {limits.memory_mb} MB of memory allowed."


def _timeout_message(allowed_s: float) -> str:
    return f"Reading this file took longer than the {allowed_s:g} seconds allowed."


# Failures a grown heap (or a process damaged by an earlier file) can cause as well as the file
# itself: a file that fails so in a used sandbox is read again in a fresh one, and its outcome is
# what the fresh one says. Not a timeout: the file has had its time.
RETRY_FRESH = frozenset({"out_of_memory", "extract_crashed", "corrupt"})


class _Clock:
    """The time one file may take to read, shared by every attempt at it."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.started = time.monotonic()
        self.allowed = limits.timeout_s

    def remaining(self) -> float:
        return self.started + self.allowed - time.monotonic()

    def extend(self, seconds: float) -> None:
        cap = self.limits.timeout_s + self.limits.max_extra_s
        self.allowed = min(self.allowed + max(0.0, seconds), cap)


def extract_pages(
    path: Path,
    kind: str,
    limits: Limits,
    on_progress: ProgressCallback | None = None,
    on_page: Callable[[Page], None] | None = None,
    options: ReadOptions | None = None,
    pool: SandboxPool | None = None,
) -> list[Page]:
    """Extract every page of `path`; blocking, so call it from a thread (the pool's executor).

    `on_page` sees each page as it arrives, so later stages can start before the last page.
    With a `pool`, a sandbox of the pool reads the file; without one, a sandbox of its own.
    Raises `ExtractionFailed` with a stable code for every way a file can fail, and
    `SandboxFailed` when a sandbox could not start at all (the job is retried).
    """
    request = (str(path), kind, limits, options or ReadOptions())
    clock = _Clock(limits)
    pages: list[Page] = []
    sandbox = _sandbox(pool, limits)
    while True:
        used = sandbox.documents > 0
        clean = False
        before = len(pages)
        try:
            try:
                sandbox.conn.send(request)
            except OSError:  # it died while idle: a fresh one
                _discard(pool, sandbox)
                sandbox = _fresh(pool, limits)
                used = False
                sandbox.conn.send(request)
            _read_in(sandbox, limits, clock, pages, on_progress, on_page)
            clean = True
            return pages
        except ExtractionFailed as exc:
            if pool is None or not used or exc.code not in RETRY_FRESH:
                raise
            log.info(
                "extraction failed in a used sandbox; reading the file again in a fresh one",
                extra={"code": exc.code, "documents_before": sandbox.documents},
            )
        finally:
            # Only a file read to its end gives the sandbox back; anything else kills it.
            if pool is not None:
                pool.checkin(sandbox, clean=clean, pages=len(pages) - before)
            else:
                sandbox.kill()
        sandbox = _fresh(pool, limits)


def _read_in(
    sandbox: Sandbox,
    limits: Limits,
    clock: _Clock,
    pages: list[Page],
    on_progress: ProgressCallback | None,
    on_page: Callable[[Page], None] | None,
) -> None:
    """Receive one attempt's messages until `end`. Pages an earlier attempt at the same file
    already handed over are skipped (readers are deterministic): each page arrives once."""
    receiver, process = sandbox.conn, sandbox.process
    total = 0
    seen = 0
    while True:
        remaining = clock.remaining()
        # poll() is also true at end of file, so a dead child falls through to recv().
        if remaining <= 0 or not receiver.poll(remaining):
            raise ExtractionFailed("timeout", _timeout_message(clock.allowed))
        try:
            message = receiver.recv()
        except (EOFError, ConnectionResetError):  # a socket pair: a reset when it died
            process.join(5)
            if not sandbox.ready:
                raise SandboxFailed(
                    f"The extraction process exited (code {process.exitcode}) before it started: "
                    "the worker's log has its traceback."
                ) from None
            raise _died(process.exitcode, limits) from None
        match message:
            case ("ready", str(code_id)):
                if code_id != sandbox_module.CODE_ID:
                    raise SandboxFailed(
                        "The extraction process runs other code than this worker (its files were "
                        "replaced after the worker started?): restart the worker."
                    )
                sandbox.ready = True
            case ("total", int(n)):
                total = n
                if on_progress:
                    on_progress("extracting", len(pages), max(total, len(pages)))
            case ("page", Page() as page):
                seen += 1
                if seen <= len(pages):
                    continue
                pages.append(page)
                if on_page:
                    on_page(page)
                if on_progress:
                    on_progress("extracting", len(pages), max(total, len(pages)))
            case ("stage", str(stage), int(done), int(of)):
                if on_progress:
                    on_progress(stage, done, of)
            case ("budget", float(seconds) | int(seconds)):
                clock.extend(seconds)
            case ("failed", str(code), str(text)):
                raise ExtractionFailed(code, text)
            case ("end", int(size)):
                sandbox.address_space = size
                return


def _sandbox(pool: SandboxPool | None, limits: Limits) -> Sandbox:
    if pool is not None:
        return pool.checkout(limits.memory_mb)
    return Sandbox(sandbox_context(), serve, limits.memory_mb)


def _fresh(pool: SandboxPool | None, limits: Limits) -> Sandbox:
    if pool is not None:
        return pool.fresh(limits.memory_mb)
    return Sandbox(sandbox_context(), serve, limits.memory_mb)


def _discard(pool: SandboxPool | None, sandbox: Sandbox) -> None:
    if pool is not None:
        pool.retire(sandbox)
    else:
        sandbox.kill()


def make_pool(size: int, max_documents: int) -> SandboxPool:
    """The worker's extraction sandboxes (see `ingest.sandbox`)."""
    return SandboxPool(sandbox_context, serve, size=size, max_documents=max_documents)


def _died(exitcode: int | None, limits: Limits) -> ExtractionFailed:
    if exitcode is not None and exitcode < 0 and -exitcode in (signal.SIGKILL, signal.SIGSEGV):
        return ExtractionFailed(
            "extract_crashed",
            "The reader crashed on this file (it may be damaged, or need more than the "
            f"{limits.memory_mb} MB of memory allowed).",
        )
    return ExtractionFailed("corrupt", CORRUPT_MESSAGE)


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
