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
