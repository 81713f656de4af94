"""The domain errors that services raise, and the one place that maps them to HTTP.

Every error body is `{"detail": <sentence>, "code": <stable_snake_case>, "request_id": ...}`.
"""

from __future__ import annotations

import errno
from typing import Any, ClassVar

import psycopg
import sqlalchemy.exc


class DocqaError(Exception):
    """Base of every error a person may see. `code` is stable; `detail` is a sentence."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def response_headers(self) -> dict[str, str]:
        """HTTP headers the response to this error carries (`WWW-Authenticate`, `Retry-After`)."""
        return {}


class UploadTooLarge(DocqaError):
    status_code = 413
    code = "file_too_large"


class UnsupportedType(DocqaError):
    status_code = 415
    code = "unsupported_type"


class EmptyFile(DocqaError):
    status_code = 400
    code = "empty_file"


class BadUpload(DocqaError):
    status_code = 400
    code = "bad_upload"


class DocumentNotFound(DocqaError):
    status_code = 404
    code = "document_not_found"


class DocumentNotReady(DocqaError):
    status_code = 409
    code = "document_not_ready"


class PageNotFound(DocqaError):
    status_code = 404
    code = "page_not_found"


class DocumentIdTaken(DocqaError):
    status_code = 409
    code = "document_id_taken"


class InvalidRequest(DocqaError):
    status_code = 422
    code = "invalid_request"


class ModelUnavailable(DocqaError):
    status_code = 503
    code = "model_unavailable"


class ModelError(DocqaError):
    status_code = 502
    code = "model_error"


class ModelTimeout(ModelUnavailable):
    """The model server accepted the request but did not answer within `llm_timeout_s`."""

    code = "model_timeout"


class Unauthorized(DocqaError):
    """No API key, or one that is unknown or revoked (only when DOCQA_AUTH=keys)."""

    status_code = 401
    code = "unauthorized"

    def __init__(self, detail: str, *, invalid_token: bool) -> None:
        super().__init__(detail)
        self.invalid_token = invalid_token

    def response_headers(self) -> dict[str, str]:
        # RFC 6750: a request without credentials gets the bare challenge.
        challenge = 'Bearer realm="docqa"'
        if self.invalid_token:
            challenge += ', error="invalid_token"'
        return {"WWW-Authenticate": challenge}


class MetricsForbidden(DocqaError):
    """With DOCQA_AUTH=keys and no DOCQA_METRICS_TOKEN, /metrics is closed to everyone."""

    status_code = 403
    code = "metrics_disabled"


class RateLimited(DocqaError):
    """One API key used up a rate limit; `retry_after_s` says when to come back."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, detail: str, *, retry_after_s: int, limit: str) -> None:
        super().__init__(detail, retry_after_s=retry_after_s, limit=limit)
        self.retry_after_s = retry_after_s

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class BodyTooLarge(DocqaError):
    """A request body (other than an upload) over `DOCQA_MAX_JSON_KB`."""

    status_code = 413
    code = "body_too_large"


class BodyTimeout(DocqaError):
    """The client stopped sending its request body for longer than `DOCQA_BODY_TIMEOUT_S`."""

    status_code = 408
    code = "body_timeout"


class DatabaseUnavailable(DocqaError):
    """PostgreSQL cannot be reached (down, restarting, or out of connections)."""

    status_code = 503
    code = "database_unavailable"
    retry_after_s: ClassVar[int] = 5

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class InsufficientStorage(DocqaError):
    """The disk that holds uploaded files (or the database's) is full."""

    status_code = 507
    code = "insufficient_storage"


DATABASE_UNAVAILABLE = "The database is not reachable right now; please try again shortly."
DISK_FULL = "The server has no room left to store this; nothing was saved. Please try again later."


def as_domain_error(exc: BaseException) -> DocqaError | None:
    """The domain error an infrastructure failure means for a client, or None for a bug.

    The database driver's connection failures (through SQLAlchemy, psycopg, its pool or
    procrastinate) become `DatabaseUnavailable`; a full disk becomes `InsufficientStorage`.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DocqaError):
            return current
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return InsufficientStorage(DISK_FULL)
        if isinstance(current, psycopg.errors.DiskFull):
            return InsufficientStorage(DISK_FULL)
        if isinstance(current, psycopg.OperationalError | psycopg.InterfaceError):
            return DatabaseUnavailable(DATABASE_UNAVAILABLE)
        if isinstance(current, sqlalchemy.exc.TimeoutError):  # no pooled connection came free
            return DatabaseUnavailable(DATABASE_UNAVAILABLE)
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return DatabaseUnavailable(DATABASE_UNAVAILABLE)
        # SQLAlchemy keeps the driver's error in `orig`; procrastinate chains it as the cause.
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return None


class ExtractionFailed(Exception):
    """Raised by extraction: the document cannot be processed. Not retried; ends `failed`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
