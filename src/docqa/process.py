"""What a long-running docqa process (`serve`, `worker`) does once it has started."""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Keep what the process has made so far (the model, the libraries, the app) out of the
    cycle collector's sight, for good.

    An API process with the embedding model loaded holds about 590,000 objects that the
    collector tracks, and a full collection walks all of them: 620 to 700 ms here, on the event
    loop, during whatever ask was running (`bench_ask.py` saw one such ask in every 30 to 40, at
    every library size). After `gc.freeze()` a full collection walks only what was made since.
    Frozen objects are still freed when nothing refers to them; only garbage cycles made before
    the freeze stay, and those are a one-time, bounded amount.
    """
    gc.freeze()


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap and are reused once freed: 32 MiB, the upper limit
# mallopt(3) gives on 64-bit, where glibc's own adaptive threshold stops too.
MMAP_THRESHOLD = 32 << 20
# Free memory at the top of the heap is given back to the kernel beyond this: what the process
# may hold unused, per malloc arena that served large blocks (the event loop's, and a few
# threads').
TRIM_THRESHOLD = 64 << 20


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep large freed blocks for reuse instead of unmapping them.

    By default a large block is often a fresh `mmap`, whose every page the kernel zero-fills
    again on first touch. BM25 over a large library makes a few arrays of megabytes per question
    (at 1M chunks, up to 13 MB): scoring the same postings over and over took 18 ms a question,
    and 8 ms with this; a 16 MB array made and freed in a loop cost 113 page faults each time,
    and none with this. Call it once, early, in a long-running process.

    Returns False where the C library is not glibc (nothing changes there).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
