"""E-mail (EML): the message's From, To, Cc, Date and Subject on its first page, then its plain
body (or its HTML body, read as HTML is, when there is no plain one); then, as further sections
of the same document, forwarded and digest messages, and attachments in a format docqa reads.

The standard library's `email` with `policy.default` decodes encoded-word headers and body
charsets (windows-1255, iso-8859-1, ...). An attachment is written to a temporary file inside
the extraction sandbox and read by its own format's reader; nesting depth and the number of
attachments are bounded, and an attachment that cannot be read is named on the first page
instead of failing the message.
"""

from __future__ import annotations

import email
import tempfile
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage, MIMEPart
from pathlib import Path

from docqa import formats
from docqa.errors import ExtractionFailed
from docqa.formats.html import html_blocks
from docqa.formats.page import Block, Page, ReadContext, sections
from docqa.formats.text import decode, paragraphs

MAX_DEPTH = 3
MAX_ATTACHMENTS = 30
_HEADERS = ("From", "To", "Cc", "Date", "Subject")


class _Walk:
    """One message's reading: pages numbered on from `number`, attachments counted."""

    def __init__(self, ctx: ReadContext) -> None:
        self.ctx = ctx
        self.number = 1
        self.attachments = 0

    def pages(self, blocks: Iterator[Block | None], heading: str) -> Iterator[Page]:
        for page in sections(blocks, first=self.number, heading=heading):
            self.number = page.number + 1
            yield page


def _header(message: EmailMessage, name: str) -> str:
    try:
        value = message.get(name)
    except (ValueError, IndexError, TypeError):  # a malformed header the parser cannot fold
        value = message.get_all(name, [""])[0] if message.get_all(name) else ""
    return " ".join(str(value or "").split())


def _part_text(part: MIMEPart) -> str:
    try:
        content = part.get_content()
    except (LookupError, UnicodeError, ValueError, KeyError):  # unknown or lying charset
        content = None
    if isinstance(content, str):
        return content
    payload = part.get_payload(decode=True)
    return decode(payload) if isinstance(payload, bytes) and payload else ""


def _body_blocks(message: EmailMessage) -> Iterator[Block]:
    body = message.get_body(preferencelist=("plain", "html"))
    if body is None:
        return
    if body.get_content_type() == "text/html":
        yield from html_blocks(_part_text(body))
    else:
        yield from paragraphs(_part_text(body))


def _is_inline_image(part: MIMEPart) -> bool:
    # Logos and signatures the HTML body shows through a cid: reference.
    return part.get_content_maintype() == "image" and part.get("Content-ID") is not None


def _attachment_format(part: MIMEPart) -> formats.Format | None:
    name = part.get_filename() or ""
    fmt = formats.by_extension(name) if name else None
    return fmt or formats.by_media_type(part.get_content_type())


def _message_pages(walk: _Walk, message: EmailMessage, depth: int) -> Iterator[Page]:
    subject = _header(message, "Subject")
    parts: list[MIMEPart] = []
    if message.is_multipart():
        has_body = message.get_body(preferencelist=("plain", "html")) is not None
        candidates = message.iter_attachments() if has_body else message.iter_parts()
        parts = [p for p in candidates if isinstance(p, MIMEPart)]

    def first_page() -> Iterator[Block | None]:
        lines = [f"{name}: {_header(message, name)}" for name in _HEADERS if _header(message, name)]
        yield "\n".join(lines)
        names = [p.get_filename() for p in parts if p.get_filename() and not _is_inline_image(p)]
        if names:
            yield "Attachments: " + ", ".join(str(n) for n in names)
        yield from _body_blocks(message)

    yield from walk.pages(first_page(), subject)
    for part in parts:
        yield from _part_pages(walk, part, depth)


def _part_pages(walk: _Walk, part: MIMEPart, depth: int) -> Iterator[Page]:
    if _is_inline_image(part) or depth >= MAX_DEPTH or walk.attachments >= MAX_ATTACHMENTS:
        return
    if part.get_content_type() == "message/rfc822":
        inner = part.get_content()
        if isinstance(inner, EmailMessage):
            walk.attachments += 1
            yield from _message_pages(walk, inner, depth + 1)
        return
    fmt = _attachment_format(part)
    if fmt is None or part.is_multipart():
        return
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes) or not payload or not fmt.sniff(payload[:8192]):
        return
    walk.attachments += 1
    name = part.get_filename() or f"attachment {walk.attachments}"
    with tempfile.TemporaryDirectory(prefix="docqa-attachment-") as folder:
        file = Path(folder) / "attachment"
        file.write_bytes(payload)
        del payload
        if fmt.kind == "eml":
            inner = email.message_from_bytes(file.read_bytes(), policy=policy.default)
            if isinstance(inner, EmailMessage):
                yield from _message_pages(walk, inner, depth + 1)
            return
        try:
            for page in fmt.reader()(file, walk.ctx):
                page.number = walk.number
                page.heading = f"{name}: {page.heading}" if page.heading else name
                walk.number += 1
                yield page
        except ExtractionFailed:
            # The message stays readable without this attachment (encrypted, damaged, ...).
            return


def read(path: Path, ctx: ReadContext) -> Iterator[Page]:
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    if not isinstance(message, EmailMessage):
        raise ExtractionFailed("corrupt", "This file is not a readable e-mail message.")
    yield from _message_pages(_Walk(ctx), message, 0)
