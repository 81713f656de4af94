"""Receiving an upload: stream a multipart body to the blob store, hashing and counting as it goes.

Nothing here holds the file in memory: each network chunk is parsed, hashed and written, and the
parse stops the moment the file passes the size limit.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import Message
from email.utils import collapse_rfc2231_value
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from docqa import formats
from docqa.blobs import BlobStore, BlobWriter
from docqa.errors import BadUpload, EmptyFile, InvalidRequest, UnsupportedType, UploadTooLarge

DOCUMENT_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# The same rule as one regular expression without look-arounds (OpenAPI and pydantic take it):
# `.` and `..` are refused, because browsers and HTTP clients rewrite them out of a URL path.
DOCUMENT_ID_PATTERN = (
    r"^(?:[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}|\.[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}"
    r"|\.\.[A-Za-z0-9._-]{1,62})$"
)
DOCUMENT_ID_RULE = "A document id is 1 to 64 letters, digits, '.', '_' or '-', and not '.' or '..'."
SNIFF_BYTES = 8192
MAX_FIELD_BYTES = 64 * 1024
# Form fields docqa reads; the data of any other part is counted but never kept.
KNOWN_FIELDS = frozenset({"document_id", "metadata"})
MAX_PARTS = 64
METADATA_MAX_DEPTH = 16
# A body may exceed the file by its multipart framing and small form fields; past this, reject
# on Content-Length alone, before reading anything.
FORM_OVERHEAD_BYTES = 256 * 1024


def file_too_large(limit_bytes: int) -> UploadTooLarge:
    mb = limit_bytes // (1024 * 1024)
    return UploadTooLarge(f"File too large: the limit is {mb} MB per file.")


def check_content_length(header: str | None, limit_bytes: int) -> None:
    """Reject before reading the body when the declared length is plainly over the limit."""
    if header is None:
        return
    try:
        declared = int(header)
    except ValueError:
        raise BadUpload("The Content-Length header is not a number.") from None
    if declared > limit_bytes + FORM_OVERHEAD_BYTES:
        raise file_too_large(limit_bytes)


def is_document_id(value: str) -> bool:
    return DOCUMENT_ID_RE.fullmatch(value) is not None and value not in (".", "..")


def check_document_id(value: str) -> str:
    """`value` if it is a valid document id; raises `InvalidRequest` with the rule otherwise."""
    if not is_document_id(value):
        raise InvalidRequest(f"'{_shown(value)}' is not a valid document id. {DOCUMENT_ID_RULE}")
    return value


def _shown(value: str) -> str:
    # Echo what the client sent without control characters and at a readable length.
    text = "".join(c if c.isprintable() else "?" for c in value[:80])
    return text + ("…" if len(value) > 80 else "")


def storable_text_problem(value: str) -> str | None:
    """Why PostgreSQL cannot store `value` as text, or None when it can."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired UTF-16 surrogate, which is not a character"
    return None


def parse_metadata(raw: str) -> dict[str, Any]:
    """The `metadata` form field: a JSON object of bounded depth whose text PostgreSQL stores."""
    too_deep = InvalidRequest(
        f"metadata is nested too deeply: at most {METADATA_MAX_DEPTH} levels of objects and lists."
    )
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"metadata must be a JSON object, but it is not valid JSON: {exc.msg} "
            f"at line {exc.lineno}, column {exc.colno}."
        ) from None
    except RecursionError:  # nested past Python's own limit
        raise too_deep from None
    if not isinstance(metadata, dict):
        raise InvalidRequest("metadata must be a JSON object.")
    stack: list[tuple[Any, int]] = [(metadata, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > METADATA_MAX_DEPTH:
            raise too_deep
        texts: list[str] = []
        if isinstance(value, dict):
            texts = list(value)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, str):
            texts = [value]
        for text in texts:
            if problem := storable_text_problem(text):
                raise InvalidRequest(f"metadata {problem}; send text without it.")
    return metadata


def clean_filename(raw: str) -> str:
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(
        c for c in unicodedata.normalize("NFC", name) if unicodedata.category(c)[0] != "C"
    )
    return name.strip()[:255] or "upload"


def claimed_kind(filename: str, content_type: str) -> str:
    """The kind the client says the file is, from its name and part content type."""
    by_name = formats.by_extension(filename)
    by_type = formats.by_media_type(content_type)
    if by_type and by_name and by_type is not by_name:
        # A name and a type that disagree (report.md sent as text/plain, a .csv sent by Windows
        # as an Excel type): within one family the name is more specific; otherwise trust
        # neither.
        if by_type.family == by_name.family or by_type.family == "loose":
            return by_name.kind
        raise UnsupportedType(
            f"The file is named like {by_name.name} but was sent as {content_type}."
        )
    fmt = by_name or by_type
    if fmt is None:
        advice = formats.REFUSED_ADVICE.get(formats.extension(filename))
        if advice:
            raise UnsupportedType(advice)
        shown = content_type if content_type not in formats.GENERIC_TYPES else "an unknown type"
        raise UnsupportedType(
            f"{formats.supported_sentence()}; '{filename}' ({shown}) is none of these."
        )
    return fmt.kind


def check_bytes_match(kind: str, head: bytes) -> None:
    """Raise when the first bytes contradict the claimed kind."""
    fmt = formats.get(kind)
    if not fmt.sniff(head):
        raise UnsupportedType(f"The file is named or typed as {fmt.name}, but its bytes are not.")


def canonical_type(kind: str, content_type: str) -> str:
    """The content type to store and serve: the client's, if it names this kind, else ours."""
    fmt = formats.get(kind)
    return content_type if content_type in fmt.media_types else fmt.media_type


@dataclass
class ReceivedFile:
    filename: str
    content_type: str
    kind: str
    size_bytes: int
    sha256: str
    writer: BlobWriter


@dataclass
class ReceivedUpload:
    file: ReceivedFile
    document_id: str | None
    metadata: dict[str, Any]


@dataclass
class _Part:
    headers: dict[str, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    content_type: str = ""
    data: bytearray = field(default_factory=bytearray)


class _Receiver:
    """Adapter from python-multipart's synchronous callbacks to our async blob writes."""

    def __init__(self, limit_bytes: int, store: BlobStore) -> None:
        self.limit = limit_bytes
        self.store = store
        self.part: _Part | None = None
        self._field_name = bytearray()
        self._field_value = bytearray()
        self.fields: dict[str, str] = {}
        self.file: _Part | None = None
        self.file_done = False
        self.size = 0
        self.parts = 0
        self.head = bytearray()
        self.hasher = hashlib.sha256()
        self.pending: list[bytes] = []
        self.writer: BlobWriter | None = None
        self.ended = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda d, s, e: self._field_name.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._field_value.extend(d[s:e]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise BadUpload(f"The upload has more than {MAX_PARTS} form fields.")
        self.part = _Part()

    def on_header_end(self) -> None:
        assert self.part is not None
        name = self._field_name.decode("latin-1").strip().lower()
        self.part.headers[name] = bytes(self._field_value).strip()
        self._field_name.clear()
        self._field_value.clear()

    def on_headers_finished(self) -> None:
        part = self.part
        assert part is not None
        part.name, part.filename = disposition_names(part.headers.get("content-disposition", b""))
        ctype, _ = parse_options_header(part.headers.get("content-type", b"").decode("latin-1"))
        part.content_type = ctype.decode("latin-1").lower()
        if part.name == "file":
            if self.file is not None:
                raise BadUpload("Send one file per upload, in the form field 'file'.")
            self.file = part
            self.writer = self.store.writer()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        assert part is not None
        chunk = data[start:end]
        if part is self.file:
            self.size += len(chunk)
            if self.size > self.limit:
                raise file_too_large(self.limit)
            if len(self.head) < SNIFF_BYTES:
                self.head += chunk[: SNIFF_BYTES - len(self.head)]
            self.hasher.update(chunk)
            self.pending.append(chunk)
        elif part.name in KNOWN_FIELDS:
            part.data += chunk
            if len(part.data) > MAX_FIELD_BYTES:
                raise InvalidRequest(f"The form field '{part.name}' is longer than 64 KB.")

    def on_part_end(self) -> None:
        part = self.part
        assert part is not None
        if part is self.file:
            self.file_done = True
        elif part.name:
            self.fields[part.name] = part.data.decode("utf-8", "replace")
        self.part = None

    def on_end(self) -> None:
        self.ended = True


def disposition_names(header: bytes) -> tuple[str, str | None]:
    """The field name and file name of a part's Content-Disposition header.

    Browsers send names as raw UTF-8 (WHATWG); other clients use RFC 5987/2231 `filename*=`,
    which wins over a plain `filename` (RFC 6266). python-multipart reads header values as
    Latin-1 and ignores `filename*`, so the standard library's MIME parser reads them here.
    """
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError:
        text = header.decode("latin-1")  # an old client's ISO-8859-1 bytes
    message = Message()
    message["content-disposition"] = text
    name = ""
    plain: str | None = None
    extended: str | None = None
    for key, value in message.get_params([], header="content-disposition")[1:]:
        if key == "name" and isinstance(value, str):
            name = value
        elif key == "filename":
            if isinstance(value, tuple):
                extended = collapse_rfc2231_value(value, fallback_charset="utf-8")
            else:
                plain = value
    return name, extended if extended is not None else plain


async def receive_upload(
    body: AsyncIterator[bytes], content_type: str | None, *, limit_bytes: int, store: BlobStore
) -> ReceivedUpload:
    """Parse a multipart upload from `body`, streaming the file into `store`.

    On any error the partial blob is removed before the error propagates.
    """
    ctype, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise BadUpload("Send the file as multipart/form-data, in a form field named 'file'.")
    receiver = _Receiver(limit_bytes, store)
    try:
        parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
        async for chunk in body:
            parser.write(chunk)
            if receiver.pending:
                assert receiver.writer is not None
                for piece in receiver.pending:
                    await receiver.writer.write(piece)
                receiver.pending.clear()
        parser.finalize()
        return _finish(receiver)
    except FormParserError as exc:
        if receiver.writer is not None:
            await receiver.writer.abort()
        raise BadUpload(_parse_failure(exc)) from None
    except BaseException:
        if receiver.writer is not None:
            await receiver.writer.abort()
        raise


def _parse_failure(exc: FormParserError) -> str:
    reason = str(exc).lower()
    if "header size" in reason:
        return "A part of the upload has headers longer than 4 KB (a file name that long?)."
    if "header count" in reason:
        return "A part of the upload has too many headers."
    return (
        "The upload is not valid multipart/form-data: its parts do not follow the boundary "
        "given in its Content-Type header."
    )


def _finish(receiver: _Receiver) -> ReceivedUpload:
    part = receiver.file
    if part is None or receiver.writer is None:
        raise BadUpload("The upload has no file: send it in a form field named 'file'.")
    if not receiver.ended or not receiver.file_done:
        raise BadUpload("The upload ended before the file was complete.")
    filename = clean_filename(part.filename or "upload")
    if receiver.size == 0:
        raise EmptyFile(f"'{filename}' is empty: there is nothing to read.")
    kind = claimed_kind(filename, part.content_type)
    check_bytes_match(kind, bytes(receiver.head))
    document_id = receiver.fields.get("document_id") or None
    if document_id is not None:
        check_document_id(document_id)
    metadata: dict[str, Any] = {}
    if raw := receiver.fields.get("metadata"):
        metadata = parse_metadata(raw)
    content_type = canonical_type(kind, part.content_type)
    return ReceivedUpload(
        file=ReceivedFile(
            filename=filename,
            content_type=content_type,
            kind=kind,
            size_bytes=receiver.size,
            sha256=receiver.hasher.hexdigest(),
            writer=receiver.writer,
        ),
        document_id=document_id,
        metadata=metadata,
    )
