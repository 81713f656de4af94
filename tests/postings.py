"""Posting blocks as the tests write and read them, in `search.index`'s format (a block's
first chunk id beside its `RECORD`s; `bm25_top` takes a term's records and `HEAD`s)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from docqa.search.index import BLOCK, HEAD, RECORD

# A posting as a test reads it.
POSTING = np.dtype([("chunk_id", np.int64), ("tf", np.int64), ("dl", np.int64)])


def pack(chunk_ids: Any, tfs: Any, dls: Any) -> tuple[bytes, bytes]:
    """A term's postings as BM25 reads them (records, heads), in blocks of `BLOCK` by chunk id:
    what `search.index.index_terms` writes, for building terms by hand."""
    ids = np.asarray(chunk_ids, dtype=np.int64)
    starts = np.arange(0, len(ids), BLOCK)
    counts = np.diff(np.append(starts, len(ids)))
    records = np.zeros(len(ids), dtype=RECORD)
    records["offset"] = ids - np.repeat(ids[starts], counts)
    records["tf"], records["dl"] = tfs, dls
    heads = np.zeros(len(starts), dtype=HEAD)
    heads["first_id"], heads["count"] = ids[starts], counts
    return records.tobytes(), heads.tobytes()


def read_blocks(blocks: Iterable[tuple[int, bytes]]) -> np.ndarray:
    """The postings (`POSTING`) of posting rows given as (`first_id`, `entries`), in order."""
    rows = list(blocks)
    found = np.frombuffer(b"".join(entries for _, entries in rows), dtype=RECORD)
    out = np.empty(len(found), dtype=POSTING)
    counts = [len(entries) // RECORD.itemsize for _, entries in rows]
    out["chunk_id"] = np.repeat([first for first, _ in rows], counts)
    out["chunk_id"] += found["offset"]
    out["tf"], out["dl"] = found["tf"], found["dl"]
    return out
