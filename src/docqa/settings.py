"""Configuration: one `Settings` object, read from `DOCQA_*` variables or a `.env` file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Where data lived before it moved to the per-user directory; kept working when it exists.
LEGACY_DATA_DIR = Path(".docqa")


def default_data_dir() -> Path:
    """`./.docqa` if it already holds data (older versions put it there), else the per-user data
    directory (`~/.local/share/docqa` on Linux, via platformdirs), never the current directory."""
    if LEGACY_DATA_DIR.is_dir():
        return LEGACY_DATA_DIR
    import platformdirs

    return platformdirs.user_data_path("docqa", appauthor=False)


class Settings(BaseSettings):
    """Every knob docqa has. Built once by the entry point and handed down, never global."""

    model_config = SettingsConfigDict(env_prefix="DOCQA_", env_file=".env", extra="ignore")

    database_url: str | None = Field(
        default=None, description="PostgreSQL with pgvector; unset starts an embedded server"
    )
    data_dir: Path = Field(default_factory=default_data_dir)
    max_upload_mb: int = Field(default=50, ge=1)

    # Uploaded files (docs/storage.md). Unset S3 fields fall back to botocore's AWS_* variables.
    blob_url: str | None = Field(
        default=None, description="unset: DATA_DIR/blobs; s3://bucket/prefix or file:///path"
    )
    s3_endpoint_url: str | None = Field(default=None, description="MinIO, Ceph, R2, ...")
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    s3_part_mb: int = Field(default=8, ge=5, le=512, description="multipart part size")

    llm_base_url: str | None = None
    llm_model: str = "default"
    llm_api_key: SecretStr = SecretStr("not-needed")
    llm_timeout_s: float = Field(default=60.0, gt=0)
    llm_max_tokens: int = Field(default=512, ge=16)
    llm_max_retries: int = Field(default=1, ge=0, description="retries of a failed model call")
    llm_temperature: float = Field(default=0.1, ge=0, le=2)
    llm_context_tokens: int = Field(
        default=3000, ge=256, description="prompt budget for the numbered sources, in tokens"
    )
    ask_top_k: int = Field(default=6, ge=1, le=50, description="sources per answer by default")

    # Reranking (docs/reranking.md): off unless a rerank server is configured.
    rerank_base_url: str | None = Field(
        default=None, description="a server with `POST {base}/rerank`; unset: no reranking"
    )
    rerank_model: str | None = Field(default=None, description="sent as `model` when set")
    rerank_api_key: SecretStr | None = Field(default=None, description="sent as a bearer token")
    rerank_api: Literal["cohere", "tei"] = Field(
        default="cohere",
        description="request shape: `cohere` (Cohere, Jina, vLLM, Infinity) or `tei`",
    )
    rerank_timeout_s: float = Field(
        default=2.0, gt=0, description="past this, the ask goes on with the fused order"
    )
    rerank_candidates: int = Field(
        default=30, ge=1, le=200, description="best fused chunks sent to the reranker per ask"
    )

    embedding_base_url: str | None = None
    embedding_model: str = "all-MiniLM-L6-v2"
    embedding_api_key: SecretStr = SecretStr("not-needed")
    embedding_precision: Literal["auto", "fp32", "bf16"] = "auto"
    embedding_batch_size: int = Field(default=64, ge=1)

    chunk_tokens: int = Field(default=200, ge=32, le=254)
    chunk_overlap_tokens: int = Field(default=32, ge=0)

    max_pages: int = Field(default=2000, ge=1)
    extract_timeout_s: float = Field(default=300.0, gt=0)
    extract_memory_mb: int = Field(default=2048, ge=256)
    ocr: Literal["on", "off"] = Field(
        default="on", description="recognise pages without a usable text layer with Tesseract"
    )
    ocr_languages: str = Field(
        default="eng", description="Tesseract languages, joined by '+' (e.g. eng+deu)"
    )
    ocr_timeout_s_per_page: float = Field(
        default=30.0, gt=0, description="more reading time granted per page that needs OCR"
    )

    worker: bool = Field(default=True, description="run an in-process worker inside `serve`")
    migrate_on_start: bool = Field(default=True, description="apply migrations when starting")
    # Two: one document's reading and writing leave the model idle; a second fills the gaps.
    worker_concurrency: int = Field(
        default=2, ge=1, description="documents larger than SMALL_DOCUMENT_KB processed at once"
    )
    # Many small documents at once (docs/ingestion.md): their chunks share embedding batches.
    small_document_kb: int = Field(
        default=128, ge=0, description="files up to this size go to the small-document queue"
    )
    small_document_concurrency: int = Field(
        default=32, ge=1, description="small documents a worker processes at once"
    )
    extract_sandboxes: int = Field(
        default=2, ge=1, description="files a worker reads at once, each in a sandbox process"
    )
    extract_sandbox_documents: int = Field(
        default=100, ge=1, description="files a sandbox reads before it is replaced"
    )
    job_max_attempts: int = Field(default=3, ge=1)
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    stalled_after_s: float = Field(default=30.0, gt=0)

    auth: Literal["off", "keys"] | None = Field(
        default=None,
        description="`keys`: every request needs an API key; `off`: one local owner, allowed "
        "only on a loopback address. Unset: `off` on loopback, `keys` anywhere else.",
    )
    rate_asks_per_minute: int = Field(default=30, ge=0, description="per API key; 0: no limit")
    rate_uploads_per_minute: int = Field(default=60, ge=0, description="per API key; 0: no limit")
    rate_concurrent_streams: int = Field(
        default=4, ge=0, description="answer streams open at once per API key; 0: no limit"
    )
    stream_lease_s: float = Field(
        default=30.0, gt=0, description="a dead process's answer streams stop counting after this"
    )

    # Request limits (docs/hardening.md): every body is bounded and timed as it streams.
    max_json_kb: int = Field(default=256, ge=1, description="any request body but an upload")
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="a client that sends no body bytes this long gets 408"
    )
    max_header_kb: int = Field(
        default=16, ge=1, description="`docqa serve`: request line and headers together"
    )
    metrics_token: SecretStr | None = Field(
        default=None, description="with DOCQA_AUTH=keys, /metrics needs `Bearer <token>`"
    )

    log_level: str = "INFO"
    log_json: bool | None = Field(
        default=None, description="JSON log lines; unset: JSON unless stderr is a terminal"
    )

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def pg_dir(self) -> Path:
        return self.data_dir / "pg"
