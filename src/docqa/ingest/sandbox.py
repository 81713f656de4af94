"""Extraction sandboxes: child processes that read files for the worker, one file at a time.

A sandbox is a process started from the fork server (`extract.sandbox_context`) with an
address-space limit; the worker sends it a file to read and it streams back what the reader
reports. Starting one per document (a fork, the reader's set-up, a pipe, a join) took longer
than reading a one-page text file, so the worker keeps a few in a `SandboxPool` and reuses them.

Reuse never lets one file affect another: a sandbox goes back to the pool only after it read a
file to its end. Any failure (a reader error, a timeout, a crash, running out of memory, the
worker giving up on the file) retires it: it is killed and the next file gets a fresh one. A
sandbox is also retired after `max_documents` files or `MAX_PAGES_PER_SANDBOX` pages, and as
soon as its address space passes `RETIRE_AT_SHARE` of its limit (a heap grown by a large file or
by OCR threads' memory arenas never shrinks back, and `RLIMIT_AS` counts it), so what a long life
leaves behind stays bounded. `extract.extract_pages` reads a file again in a fresh sandbox when
it failed in a used one in a way a grown heap can cause, so a file's outcome does not depend on
the files read before it.

A sandbox says `ready` as soon as it runs, before its memory limit and before any file: a child
that dies without saying it never started (an import or unpickling error: the code on disk is not
the code the worker runs, as when a deployment replaces files under a running worker), which is
the server's fault, not the file's. `SandboxFailed` says so, and the job is retried. `ready`
carries `CODE_ID`, a digest of the code that speaks the protocol as this process imported it:
a sandbox whose fork server imported other code (files replaced after the worker started) is
refused the same way, rather than misreading its messages.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import resource
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# A sandbox is replaced after reading this many pages in all (the 10-K filings have 100-200).
MAX_PAGES_PER_SANDBOX = 1000
# Idle sandboxes are not kept longer than this: each holds the readers' memory.
IDLE_S = 300.0
# A sandbox whose address space passes this share of its limit after a file is replaced, so the
# next file has at least the rest of the limit.
RETIRE_AT_SHARE = 0.5

Serve = Callable[[multiprocessing.connection.Connection], None]


def _code_id() -> str:
    """A digest of the two modules that speak the worker's side and the sandbox's side of the
    pipe, as they were on disk when this process imported them."""
    digest = hashlib.sha256()
    for name in ("sandbox.py", "extract.py"):
        with open(Path(__file__).with_name(name), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


CODE_ID = _code_id()


class SandboxFailed(RuntimeError):
    """A sandbox process died before it ran any of our code: not the file's fault."""


class Sandbox:
    """One child process and the parent's end of its pipe. Used by one thread at a time."""

    def __init__(
        self, ctx: multiprocessing.context.ForkServerContext, serve: Serve, memory_mb: int
    ) -> None:
        self.memory_mb = memory_mb
        self.conn, child_end = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=_limited, args=(serve, child_end, memory_mb), name="docqa-extract", daemon=True
        )
        self.process.start()
        child_end.close()
        self.ready = False  # it said `ready`: it started and runs the worker's code
        self.documents = 0  # files read to their end
        self.pages = 0
        self.address_space = 0  # bytes, as it reported after its last file
        self.idle_since = time.monotonic()

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        """End the child now (it may be stuck in a reader) and reap it."""
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)


def _limited(serve: Serve, conn: multiprocessing.connection.Connection, memory_mb: int) -> None:
    """The child's entry point: `ready` (it started), its memory limit, then the request loop."""
    conn.send(("ready", CODE_ID))
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    serve(conn)


def address_space() -> int:
    """This process's address space in bytes (what `RLIMIT_AS` limits); 0 where unknown."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


class SandboxPool:
    """A few long-lived sandboxes, shared by the documents a worker processes at once.

    `executor` runs the (blocking) reads: it has one thread per sandbox the pool may run, so
    at most `size` files are read at once however many documents are in flight, and documents
    waiting for a sandbox wait in its queue rather than holding threads the event loop needs.
    """

    def __init__(
        self,
        ctx: Callable[[], multiprocessing.context.ForkServerContext],
        serve: Serve,
        *,
        size: int,
        max_documents: int,
    ) -> None:
        self._ctx = ctx
        self._serve = serve
        self.size = size
        self.max_documents = max_documents
        self._idle: list[Sandbox] = []
        self._lock = threading.Lock()
        self.started = 0  # sandboxes started over the pool's life (for tests and metrics)
        self.retired = 0  # sandboxes killed after a failure or a long life
        self.executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="docqa-extract")

    def checkout(self, memory_mb: int) -> Sandbox:
        """An idle sandbox with this memory limit, or a new one."""
        now = time.monotonic()
        stale: list[Sandbox] = []
        found: Sandbox | None = None
        with self._lock:
            keep: list[Sandbox] = []
            for sandbox in self._idle:
                if not sandbox.alive() or now - sandbox.idle_since > IDLE_S:
                    stale.append(sandbox)
                elif found is None and sandbox.memory_mb == memory_mb:
                    found = sandbox
                else:
                    keep.append(sandbox)
            self._idle = keep
            if found is None:
                self.started += 1
        for sandbox in stale:
            sandbox.kill()
        return found or Sandbox(self._ctx(), self._serve, memory_mb)

    def warm(self, memory_mb: int) -> None:
        """Start a sandbox before the first file, when none is idle. The first sandbox of a
        worker also starts the fork server, which imports the readers (`extract.PRELOAD`):
        0.4 s of wall time and 0.35 s of CPU that the first document read would otherwise
        wait for (measured on 2 cores with the 3M 10-K as that document)."""
        with self._lock:
            if self._idle:
                return
            self.started += 1
        self._keep_idle(Sandbox(self._ctx(), self._serve, memory_mb))

    def checkin(self, sandbox: Sandbox, *, clean: bool, pages: int) -> None:
        """Give a sandbox back after a file. `clean`: the file was read to its end and nothing
        is left in the pipe; anything else retires the sandbox."""
        sandbox.documents += 1
        sandbox.pages += pages
        grown = sandbox.address_space > RETIRE_AT_SHARE * sandbox.memory_mb * 1024 * 1024
        worn = (
            grown
            or sandbox.documents >= self.max_documents
            or sandbox.pages >= MAX_PAGES_PER_SANDBOX
        )
        if not clean or worn or not sandbox.alive():
            self.retire(sandbox)
            return
        self._keep_idle(sandbox)

    def _keep_idle(self, sandbox: Sandbox) -> None:
        """Keep a sandbox for the next file, or kill it when the pool has enough idle ones."""
        sandbox.idle_since = time.monotonic()
        with self._lock:
            if len(self._idle) < self.size:
                self._idle.append(sandbox)
                return
        sandbox.kill()

    def retire(self, sandbox: Sandbox) -> None:
        """Kill a sandbox that is not to be used again."""
        with self._lock:
            self.retired += 1
        sandbox.kill()

    def fresh(self, memory_mb: int) -> Sandbox:
        """A new sandbox, whatever is idle (to read a file again after a failure)."""
        with self._lock:
            self.started += 1
        return Sandbox(self._ctx(), self._serve, memory_mb)

    def idle(self) -> int:
        with self._lock:
            return len(self._idle)

    def idle_pids(self) -> list[int]:
        """The process ids of the idle sandboxes (for tests and diagnostics)."""
        with self._lock:
            return [s.process.pid for s in self._idle if s.process.pid is not None]

    def close(self) -> None:
        """Kill the idle sandboxes; reads still running finish on their own threads."""
        with self._lock:
            idle, self._idle = self._idle, []
        for sandbox in idle:
            sandbox.kill()
        self.executor.shutdown(wait=False, cancel_futures=True)
