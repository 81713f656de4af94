"""The pool of extraction sandboxes (docqa.ingest.sandbox): reused across clean files, retired on
any failure, and never letting one file decide another's outcome. No server needed: these drive
`extract_pages` with a `SandboxPool` directly, with real files and the real readers, and with a
few sandboxes whose request loop misbehaves on purpose (defined here, so the child imports them).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from docqa import formats
from docqa.errors import ExtractionFailed
from docqa.formats.page import Page, ReadContext
from docqa.ingest import extract, sandbox
from docqa.ingest.extract import Limits, extract_pages, make_pool, sandbox_context
from docqa.ingest.sandbox import SandboxFailed, SandboxPool

LIMITS = Limits(max_pages=50, timeout_s=60, memory_mb=1024)


@pytest.fixture
def small_pdf(shared_data: Path) -> Path:
    return shared_data / "pdfs" / "pypdf_samples" / "pdflatex-4-pages.pdf"


@pytest.fixture
def pool() -> Iterator[SandboxPool]:
    p = make_pool(1, 100)
    yield p
    p.close()


def _idle_pid(pool: SandboxPool) -> int:
    pids = pool.idle_pids()
    assert len(pids) == 1, pids
    return pids[0]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_one_sandbox_reads_clean_file_after_clean_file(
    pool: SandboxPool, small_pdf: Path, shared_data: Path
) -> None:
    text = shared_data / "formats" / "tesseract-test" / "eurotext.txt"
    first = extract_pages(small_pdf, "pdf", LIMITS, pool=pool)
    pid = _idle_pid(pool)
    for path, kind in [(text, "text"), (small_pdf, "pdf"), (text, "text")]:
        pages = extract_pages(path, kind, LIMITS, pool=pool)
        assert pages
        assert all(p.text for p in pages)
        assert _idle_pid(pool) == pid  # the same process read every file
    assert [p.number for p in first] == [1, 2, 3, 4]
    assert pool.started == 1
    assert pool.retired == 0


def test_a_failure_retires_the_sandbox_and_the_next_file_reads_in_a_new_one(
    pool: SandboxPool, small_pdf: Path, shared_data: Path
) -> None:
    extract_pages(small_pdf, "pdf", LIMITS, pool=pool)
    pid = _idle_pid(pool)
    with pytest.raises(ExtractionFailed) as info:
        extract_pages(small_pdf, "pdf", Limits(2, 60, 1024), pool=pool)
    assert info.value.code == "too_many_pages"
    assert pool.idle_pids() == []
    assert _gone(pid)
    # A reader's own verdict is not read again: one sandbox for the clean file, one for this.
    assert pool.started == 1
    assert pool.retired == 1
    pages = extract_pages(small_pdf, "pdf", LIMITS, pool=pool)
    assert [p.number for p in pages] == [1, 2, 3, 4]
    assert _idle_pid(pool) != pid
    assert pool.started == 2


def test_a_timeout_kills_the_sandbox_and_is_not_read_again(
    pool: SandboxPool, small_pdf: Path, shared_data: Path
) -> None:
    big = shared_data / "pdfs" / "unstructured_example_docs" / "DA-619p.pdf"
    extract_pages(small_pdf, "pdf", LIMITS, pool=pool)
    pid = _idle_pid(pool)
    started = time.monotonic()
    with pytest.raises(ExtractionFailed) as info:
        extract_pages(big, "pdf", Limits(5000, 1.0, 1024), pool=pool)
    assert info.value.code == "timeout"
    assert time.monotonic() - started < 10  # killed at its deadline, not read a second time
    assert _gone(pid)
    assert pool.started == 1
    assert pool.retired == 1
    assert len(extract_pages(small_pdf, "pdf", LIMITS, pool=pool)) == 4


def test_a_sandbox_killed_while_idle_is_replaced(pool: SandboxPool, small_pdf: Path) -> None:
    extract_pages(small_pdf, "pdf", LIMITS, pool=pool)
    pid = _idle_pid(pool)
    os.kill(pid, signal.SIGKILL)
    psutil.Process(pid).wait(10)
    assert len(extract_pages(small_pdf, "pdf", LIMITS, pool=pool)) == 4
    assert _idle_pid(pool) != pid


def test_a_grown_sandbox_is_retired_after_its_file(
    pool: SandboxPool, small_pdf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extract_pages(small_pdf, "pdf", LIMITS, pool=pool)
    assert pool.retired == 0
    # Every sandbox reports its address space (hundreds of MB with the readers loaded); over
    # the share of its limit, it is not used again.
    monkeypatch.setattr(sandbox, "RETIRE_AT_SHARE", 0.01)
    extract_pages(small_pdf, "pdf", LIMITS, pool=pool)
    assert pool.idle_pids() == []
    assert pool.retired == 1


def test_a_pool_retires_a_sandbox_after_max_documents(small_pdf: Path) -> None:
    pool = make_pool(1, 2)
    try:
        for _ in range(5):
            extract_pages(small_pdf, "pdf", LIMITS, pool=pool)
        assert pool.started == 3  # 2 + 2 + 1 files
    finally:
        pool.close()


# -- sandboxes that misbehave on purpose -----------------------------------------------------


def misbehaving_serve(conn: object) -> None:
    """`extract.serve`, but a file named crash* kills the process with SIGSEGV (a reader that
    crashes), and a file named stateful* does so after two pages when the process read a file
    before (a failure that depends on what an earlier file left behind)."""
    import multiprocessing.connection

    assert isinstance(conn, multiprocessing.connection.Connection)
    read = 0
    while True:
        try:
            path, kind, limits, options = conn.recv()
        except EOFError:
            return
        name = Path(path).name
        if name.startswith("crash"):
            os.kill(os.getpid(), signal.SIGSEGV)
        if name.startswith("stateful") and read:
            reader = formats.get(kind).reader()(Path(path), ReadContext(max_pages=50))
            conn.send(("page", next(reader)))
            conn.send(("page", next(reader)))
            os.kill(os.getpid(), signal.SIGKILL)
        if not extract._read_one(conn, path, kind, limits, options):
            return
        read += 1


def _fail_to_load() -> None:
    raise AttributeError("Can't get attribute 'serve' on <module 'docqa.ingest.extract'>")


class Unloadable:
    """A request loop the child cannot unpickle, as when the code on disk is not the code the
    worker runs (a deployment replaced it): the child dies before it starts."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return _fail_to_load, ()

    def __call__(self, conn: object) -> None:
        raise AssertionError("never runs")


@pytest.fixture
def odd_pool() -> Iterator[SandboxPool]:
    p = SandboxPool(sandbox_context, misbehaving_serve, size=1, max_documents=100)
    yield p
    p.close()


def test_a_file_that_crashes_the_reader_does_not_affect_the_next(
    odd_pool: SandboxPool, small_pdf: Path, tmp_path: Path
) -> None:
    crash = shutil.copy(small_pdf, tmp_path / "crash.pdf")
    extract_pages(small_pdf, "pdf", LIMITS, pool=odd_pool)
    pid = _idle_pid(odd_pool)
    with pytest.raises(ExtractionFailed) as info:
        extract_pages(Path(crash), "pdf", LIMITS, pool=odd_pool)
    assert info.value.code == "extract_crashed"
    # It crashed in a used sandbox, so it was read again in a fresh one, which crashed too.
    assert _gone(pid)
    assert odd_pool.started == 2
    assert odd_pool.retired == 2
    pages = extract_pages(small_pdf, "pdf", LIMITS, pool=odd_pool)
    assert [p.number for p in pages] == [1, 2, 3, 4]
    assert all(p.text for p in pages)
    assert odd_pool.started == 3


def test_a_failure_in_a_used_sandbox_is_decided_by_a_fresh_one(
    odd_pool: SandboxPool, small_pdf: Path, tmp_path: Path
) -> None:
    stateful = Path(shutil.copy(small_pdf, tmp_path / "stateful.pdf"))
    alone = extract_pages(stateful, "pdf", LIMITS)  # its own sandbox: read cleanly
    extract_pages(small_pdf, "pdf", LIMITS, pool=odd_pool)
    handed: list[Page] = []
    pages = extract_pages(stateful, "pdf", LIMITS, on_page=handed.append, pool=odd_pool)
    # Two pages came from the used sandbox before it died; the fresh one read all four, and
    # each page was handed over once.
    assert [p.number for p in handed] == [1, 2, 3, 4]
    assert [p.text for p in pages] == [p.text for p in alone]
    assert odd_pool.started == 2
    assert odd_pool.retired == 1


def test_a_sandbox_that_cannot_start_is_not_the_files_fault(small_pdf: Path) -> None:
    pool = SandboxPool(sandbox_context, Unloadable(), size=1, max_documents=100)
    try:
        with pytest.raises(SandboxFailed):  # not ExtractionFailed("corrupt"): the job retries
            extract_pages(small_pdf, "pdf", LIMITS, pool=pool)
        assert pool.idle_pids() == []
    finally:
        pool.close()


def test_a_sandbox_running_other_code_is_refused(
    pool: SandboxPool, small_pdf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fork server imported extract.py and sandbox.py as they were on disk; a worker whose
    # own copies differ (files replaced while it ran) must not trust what the sandbox says.
    monkeypatch.setattr(sandbox, "CODE_ID", "not-the-same")
    with pytest.raises(SandboxFailed):
        extract_pages(small_pdf, "pdf", LIMITS, pool=pool)
    assert pool.idle_pids() == []
    monkeypatch.undo()
    assert len(extract_pages(small_pdf, "pdf", LIMITS, pool=pool)) == 4
