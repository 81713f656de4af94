"""Embedding batches filled across documents (docqa.ingest.batches.EmbedQueue): each caller gets
its own vectors, in its own order, however the batches mixed callers. No model needed: the
embedder here gives every text a vector computed from the text, and records its batches."""

from __future__ import annotations

import asyncio
import hashlib
import threading

import numpy as np
import pytest

from docqa.ingest.batches import EmbedQueue
from docqa.ingest.embed import Vectors


class RecordingEmbedder:
    dim = 8
    lanes = 1

    def __init__(self, poison: str | None = None, delay_s: float = 0.01) -> None:
        self.batches: list[list[str]] = []
        self.poison = poison
        self.delay_s = delay_s
        self.release = threading.Event()
        self.release.set()

    @staticmethod
    def vector(text: str) -> Vectors:
        digest = hashlib.sha256(text.encode()).digest()
        v = np.frombuffer(digest[:8], dtype=np.uint8).astype(np.float32) + 1.0
        return v / np.linalg.norm(v)

    def embed_documents(self, texts: list[str]) -> Vectors:
        self.release.wait(10)
        self.batches.append(list(texts))
        if self.poison is not None and self.poison in texts:
            raise RuntimeError("the model failed on this batch")
        threading.Event().wait(self.delay_s)
        return np.stack([self.vector(t) for t in texts])

    def embed_query(self, text: str) -> Vectors:
        return self.vector(text)


def expected(texts: list[str]) -> Vectors:
    return np.stack([RecordingEmbedder.vector(t) for t in texts])


def doc(name: str, n: int) -> list[str]:
    return [f"{name} chunk {i}" for i in range(n)]


async def test_each_document_gets_its_own_vectors_in_order_from_mixed_batches() -> None:
    embedder = RecordingEmbedder()
    queue = EmbedQueue(embedder, batch_size=4)
    a, b, c = doc("a", 3), doc("b", 5), doc("c", 2)
    try:
        got = await asyncio.gather(queue.embed(a), queue.embed(b), queue.embed(c))
    finally:
        await queue.aclose()
    for texts, vectors in zip((a, b, c), got, strict=True):
        assert vectors.shape == (len(texts), embedder.dim)
        np.testing.assert_array_equal(vectors, expected(texts))
    # Full batches, oldest first, a document split across two of them.
    assert embedder.batches == [[*a, b[0]], b[1:], c]
    assert queue.stats.sizes == [4, 4, 2]
    assert queue.stats.texts == 10


async def test_documents_arriving_while_a_batch_runs_fill_the_next_one() -> None:
    embedder = RecordingEmbedder()
    embedder.release.clear()  # the first batch waits until the others are queued
    queue = EmbedQueue(embedder, batch_size=64)
    try:
        first = asyncio.ensure_future(queue.embed(doc("first", 2)))
        await asyncio.sleep(0.05)
        later = [asyncio.ensure_future(queue.embed(doc(f"d{i}", 3))) for i in range(10)]
        await asyncio.sleep(0.05)
        embedder.release.set()
        results = await asyncio.gather(first, *later)
    finally:
        await queue.aclose()
    assert [len(b) for b in embedder.batches] == [2, 30]  # ten documents, one batch
    for i, vectors in enumerate(results[1:]):
        np.testing.assert_array_equal(vectors, expected(doc(f"d{i}", 3)))


async def test_a_failed_batch_fails_its_callers_only() -> None:
    embedder = RecordingEmbedder(poison="bad chunk 1")
    queue = EmbedQueue(embedder, batch_size=3)  # bad and good in the first batch, later after
    try:
        bad, good_same_batch, good_later = await asyncio.gather(
            queue.embed(doc("bad", 2)),
            queue.embed(doc("good", 1)),
            queue.embed(doc("later", 4)),
            return_exceptions=True,
        )
        assert isinstance(bad, RuntimeError)
        assert isinstance(good_same_batch, RuntimeError)
        assert isinstance(good_later, np.ndarray)
        np.testing.assert_array_equal(good_later, expected(doc("later", 4)))
        # The queue keeps serving.
        again = await queue.embed(doc("after", 2))
        np.testing.assert_array_equal(again, expected(doc("after", 2)))
    finally:
        await queue.aclose()


async def test_a_cancelled_caller_is_left_out_of_later_batches() -> None:
    embedder = RecordingEmbedder()
    embedder.release.clear()
    queue = EmbedQueue(embedder, batch_size=2)
    try:
        first = asyncio.ensure_future(queue.embed(doc("first", 2)))
        await asyncio.sleep(0.05)  # its batch is running
        gone = asyncio.ensure_future(queue.embed(doc("gone", 4)))
        kept = asyncio.ensure_future(queue.embed(doc("kept", 1)))
        await asyncio.sleep(0)
        gone.cancel()
        embedder.release.set()
        await first
        np.testing.assert_array_equal(await kept, expected(doc("kept", 1)))
        with pytest.raises(asyncio.CancelledError):
            await gone
    finally:
        await queue.aclose()
    assert embedder.batches == [doc("first", 2), doc("kept", 1)]


async def test_no_texts_no_batch() -> None:
    embedder = RecordingEmbedder()
    queue = EmbedQueue(embedder, batch_size=4)
    assert (await queue.embed([])).shape == (0, embedder.dim)
    await queue.aclose()
    assert embedder.batches == []


async def test_with_two_lanes_two_batches_run_at_once_and_each_text_keeps_its_vector() -> None:
    embedder = RecordingEmbedder(delay_s=0.2)
    running, most = 0, 0
    lock = threading.Lock()
    embed = embedder.embed_documents

    def counting(texts: list[str]) -> Vectors:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            return embed(texts)
        finally:
            with lock:
                running -= 1

    embedder.embed_documents = counting  # type: ignore[method-assign]
    queue = EmbedQueue(embedder, batch_size=2, lanes=2)
    docs = [doc(name, 3) for name in "abc"]
    try:
        got = await asyncio.gather(*(queue.embed(texts) for texts in docs))
    finally:
        await queue.aclose()
    assert most == 2
    for texts, vectors in zip(docs, got, strict=True):
        np.testing.assert_array_equal(vectors, expected(texts))
    assert sorted(queue.stats.sizes) == [1, 2, 2, 2, 2]


async def test_a_lone_batch_is_shared_out_over_the_free_lanes() -> None:
    """One document's one batch, with two lanes free: half each, not all on one core."""
    embedder = RecordingEmbedder()
    queue = EmbedQueue(embedder, batch_size=8, lanes=2)
    texts = doc("a", 8)
    try:
        got = await queue.embed(texts)
    finally:
        await queue.aclose()
    np.testing.assert_array_equal(got, expected(texts))
    assert sorted(map(len, embedder.batches)) == [4, 4]
    # One lane: the whole batch.
    one = RecordingEmbedder()
    queue = EmbedQueue(one, batch_size=8, lanes=1)
    try:
        await queue.embed(texts)
    finally:
        await queue.aclose()
    assert one.batches == [texts]
