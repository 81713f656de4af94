"""The domain errors that services raise, and the one place that maps them to HTTP.

Every error body is `{"detail": <sentence>, "code": <stable_snake_case>, "request_id": ...}`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DocqaError(Exception):
    """Base of every error a person may see. `code` is stable; `detail` is a sentence."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


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


class ExtractionFailed(Exception):
    """Raised by extraction: the document cannot be processed. Not retried; ends `failed`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
