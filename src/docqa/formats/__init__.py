"""The formats docqa reads: one table that drives the upload type checks, the reader each file
goes to, and the list of accepted types the web page and the CLI show.

Each reader is a small module (`docqa.formats.<module>`) with one function,
`read(path: Path, ctx: ReadContext) -> Iterator[Page]`, that runs inside the sandboxed extraction
process. Nothing here imports a parser: the API process checks uploads with the table alone.
Adding a format means adding a row here and one reader module.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import filetype

if TYPE_CHECKING:
    from docqa.formats.page import Page, ReadContext

ZIP = b"PK\x03\x04"
OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# An upload named or typed as one of these gets a 415 with this advice, not just "unsupported".
REFUSED_ADVICE = {
    ".doc": "Old Word (.doc) files are not read: save the file as .docx and upload that.",
    ".xls": "Old Excel (.xls) files are not read: save the file as .xlsx and upload that.",
    ".ppt": "Old PowerPoint (.ppt) files are not read: save the file as .pptx and upload that.",
    ".msg": "Outlook .msg files are not read: save the message as .eml (File, Save As) and "
    "upload that.",
    ".zip": "Archives are not read: unpack the files and upload them one by one.",
    ".xlsb": "Binary Excel (.xlsb) workbooks are not read: save the file as .xlsx and upload that.",
    ".ods": "OpenDocument spreadsheets (.ods) are not read: save the file as .xlsx or .csv and "
    "upload that.",
    ".odp": "OpenDocument presentations (.odp) are not read: save the file as .pptx and upload "
    "that.",
    ".pages": "Apple Pages files are not read: export the document as .docx or PDF and upload "
    "that.",
    ".numbers": "Apple Numbers files are not read: export the spreadsheet as .xlsx or .csv and "
    "upload that.",
    ".key": "Apple Keynote files are not read: export the presentation as .pptx or PDF and "
    "upload that.",
    ".mobi": "Kindle (.mobi) e-books are not read: convert the book to EPUB and upload that.",
    ".azw3": "Kindle (.azw3) e-books are not read: convert the book to EPUB and upload that.",
    ".mbox": "Mailbox (.mbox) files are not read: save the messages as .eml files and upload "
    "those.",
}
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})


class Reader(Protocol):
    def __call__(self, path: Path, ctx: ReadContext) -> Iterator[Page]: ...


def _is_text(head: bytes) -> bool:
    """Text formats: no binary signature, and no NUL byte unless the text is UTF-16 with a BOM."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    return b"\x00" not in head and filetype.guess(head) is None


def _is_zip(head: bytes) -> bool:
    return head.startswith(ZIP)


def _is_pdf(head: bytes) -> bool:
    return b"%PDF-" in head[:1024]


def _is_office(head: bytes) -> bool:
    """An OOXML zip, or an OLE container: what Office writes when a password protects the file
    (its reader then says so, rather than the upload calling the bytes wrong)."""
    return head.startswith((ZIP, OLE))


_HEADER_LINE = re.compile(rb"[!-9;-~]{1,76}:")


def _is_mail(head: bytes) -> bool:
    """A saved message: text whose first line is a header field, or an mbox "From " line."""
    first = head.lstrip(b"\r\n").split(b"\n", 1)[0]
    return _is_text(head) and (first.startswith(b"From ") or _HEADER_LINE.match(first) is not None)


def _is_rtf(head: bytes) -> bool:
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{\\rtf")


def _is_png(head: bytes) -> bool:
    return head.startswith(b"\x89PNG\r\n\x1a\n")


def _is_jpeg(head: bytes) -> bool:
    return head.startswith(b"\xff\xd8\xff")


def _is_tiff(head: bytes) -> bool:
    return head.startswith((b"II*\x00", b"MM\x00*"))


def _is_webp(head: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


@dataclass(frozen=True)
class Format:
    """One kind of file docqa reads."""

    kind: str  # stored in documents.kind
    name: str  # "a PDF": for sentences
    extensions: tuple[str, ...]
    media_types: tuple[str, ...]  # the first is the canonical one, sent back with /file
    sniff: Callable[[bytes], bool]  # do the first bytes fit this format?
    module: str  # the reader: docqa.formats.<module>.read
    family: str  # kinds in one family may be named one way and typed another (text, zip, image)
    unit: str = "section"  # what one of its pages is: page, slide, sheet part, section
    page_images: bool = False  # can a page be shown as an image (PDF pages, image files)?

    @property
    def media_type(self) -> str:
        return self.media_types[0]

    def reader(self) -> Reader:
        module = importlib.import_module(f"docqa.formats.{self.module}")
        read: Reader = module.read
        return read


FORMATS: tuple[Format, ...] = (
    Format("pdf", "a PDF", (".pdf",), ("application/pdf",), _is_pdf, "pdf", "pdf", "page", True),
    Format(
        "docx",
        "a Word (DOCX) document",
        (".docx",),
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document",),
        _is_office,
        "docx",
        "zip",
    ),
    Format(
        "pptx",
        "a PowerPoint (PPTX) presentation",
        (".pptx",),
        ("application/vnd.openxmlformats-officedocument.presentationml.presentation",),
        _is_office,
        "pptx",
        "zip",
        "slide",
    ),
    Format(
        "xlsx",
        "an Excel (XLSX) workbook",
        (".xlsx", ".xlsm"),
        (
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "application/vnd.ms-excel.sheet.macroEnabled.12",
        ),
        _is_office,
        "xlsx",
        "zip",
        "sheet part",
    ),
    Format(
        "csv",
        "a CSV table",
        (".csv",),
        # Windows browsers send .csv as application/vnd.ms-excel: not listed here, so the
        # name decides (claimed_kind), and an .xls sent so still gets REFUSED_ADVICE.
        ("text/csv", "application/csv", "text/x-csv"),
        _is_text,
        "csv",
        "text",
        "sheet part",
    ),
    Format(
        "tsv",
        "a TSV table",
        (".tsv", ".tab"),
        ("text/tab-separated-values",),
        _is_text,
        "tsv",
        "text",
        "sheet part",
    ),
    Format(
        "epub",
        "an EPUB e-book",
        (".epub",),
        ("application/epub+zip",),
        _is_zip,
        "epub",
        "zip",
    ),
    Format(
        "eml",
        "an e-mail message (EML)",
        (".eml",),
        ("message/rfc822",),
        _is_mail,
        "eml",
        "text",
    ),
    Format(
        "odt",
        "an OpenDocument text (ODT)",
        (".odt",),
        ("application/vnd.oasis.opendocument.text",),
        _is_zip,
        "odt",
        "zip",
    ),
    Format(
        "rtf",
        "a Rich Text (RTF) document",
        (".rtf",),
        ("application/rtf", "text/rtf"),
        _is_rtf,
        "rtf",
        "text",
    ),
    Format(
        "html",
        "an HTML page",
        (".html", ".htm", ".xhtml"),
        ("text/html", "application/xhtml+xml"),
        _is_text,
        "html",
        "text",
    ),
    Format(
        "markdown",
        "a Markdown file",
        (".md", ".markdown"),
        ("text/markdown", "text/x-markdown"),
        _is_text,
        "markdown",
        "text",
    ),
    Format(
        "text", "a plain-text file", (".txt", ".text"), ("text/plain",), _is_text, "text", "text"
    ),
    # Images are read by OCR (docs/ocr.md), a page per image; a TIFF has a page per frame.
    Format(
        "png", "a PNG image", (".png",), ("image/png",), _is_png, "image", "image", "page", True
    ),
    Format(
        "jpeg",
        "a JPEG image",
        (".jpg", ".jpeg", ".jpe"),
        ("image/jpeg", "image/pjpeg"),
        _is_jpeg,
        "image",
        "image",
        "page",
        True,
    ),
    Format(
        "tiff",
        "a TIFF image",
        (".tif", ".tiff"),
        ("image/tiff", "image/tiff-fx"),
        _is_tiff,
        "image",
        "image",
        "page",
        True,
    ),
    Format(
        "webp",
        "a WebP image",
        (".webp",),
        ("image/webp",),
        _is_webp,
        "image",
        "image",
        "page",
        True,
    ),
)

_BY_KIND = {f.kind: f for f in FORMATS}
_BY_EXTENSION = {ext: f for f in FORMATS for ext in f.extensions}
_BY_MEDIA_TYPE = {t: f for f in FORMATS for t in f.media_types}


def get(kind: str) -> Format:
    return _BY_KIND[kind]


def by_extension(name: str) -> Format | None:
    """The format a file name's extension names, if docqa reads it."""
    return _BY_EXTENSION.get(extension(name))


def by_media_type(media_type: str) -> Format | None:
    return _BY_MEDIA_TYPE.get(media_type)


def extension(name: str) -> str:
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def accepted_extensions() -> tuple[str, ...]:
    return tuple(_BY_EXTENSION)


def supported_sentence() -> str:
    """'docqa reads PDF, Word (DOCX), ... files': for 415 sentences and help texts."""
    names = sorted({_short_name(f) for f in FORMATS}, key=_order)
    return "docqa reads " + ", ".join(names[:-1]) + " and " + names[-1] + " files"


def _short_name(fmt: Format) -> str:
    return fmt.name.split(" ", 1)[1]


def _order(name: str) -> int:
    return next(i for i, f in enumerate(FORMATS) if _short_name(f) == name)


def public_list() -> list[dict[str, object]]:
    """What `GET /api/v1/formats` returns: every accepted kind with its names and types."""
    return [
        {
            "kind": f.kind,
            "name": _short_name(f),
            "extensions": list(f.extensions),
            "media_types": list(f.media_types),
            "unit": f.unit,
            "page_images": f.page_images,
        }
        for f in FORMATS
    ]
