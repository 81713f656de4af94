"""What a long-running process does once it has started."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from docqa.settings import Settings
from tests.stack import new_database


async def test_serve_freezes_its_startup_objects_once_the_model_is_loaded(
    pg_server_url: str, local_embedder: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Once the model is warm, what the API process made at start (the model, the libraries) is
    out of the cycle collector's sight: a full collection over it took 620 to 700 ms, on the
    event loop, in the middle of whatever ask was running."""
    from docqa import app as app_module

    url = new_database(pg_server_url, "docqa_freeze")
    monkeypatch.setattr(app_module, "make_embedder", lambda settings: local_embedder)
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    app = app_module.create_app(Settings(database_url=url, data_dir=tmp_path, worker=False))
    try:
        async with app.router.lifespan_context(app):
            for _ in range(400):
                if gc.get_freeze_count():
                    break
                await asyncio.sleep(0.05)
            # The model's and the libraries' objects: hundreds of thousands.
            assert gc.get_freeze_count() > 100_000
    finally:
        gc.unfreeze()


_FAULTS = """
import resource, sys
import numpy as np
from docqa.process import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
np.ones(2_000_000).sum()  # 16 MB, once, so that the heap has grown
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    np.ones(2_000_000).sum()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def test_large_arrays_reuse_freed_memory_instead_of_faulting_in_new_pages() -> None:
    """BM25 at scale makes arrays of megabytes per question. With `keep_freed_memory` (as
    `serve` and `worker` call it), making one again after freeing it reuses the same memory:
    no page faults, where glibc's default cost dozens each time here (41 to 113)."""
    faults = {}
    for mode in ("default", "keep"):
        done = subprocess.run(
            [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True
        )
        faults[mode] = float(done.stdout)
    assert faults["keep"] <= 1, faults
