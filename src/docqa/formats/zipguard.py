"""Zip containers (OOXML, OpenDocument, EPUB) checked before a parser opens them.

A zip's central directory declares each member's uncompressed size, and Python's `zipfile` never
inflates a member past its declared size (it cuts the stream there and fails the CRC check), so
bounding the declared sizes bounds what any parser can inflate: a zip bomb fails `too_large` in
milliseconds instead of filling memory.

Office files saved with a password are not zips at all but OLE (CDFV2) containers holding an
`EncryptedPackage` stream; old binary Office files (.doc, .xls, .ppt) renamed to the new
extensions are OLE containers too. Both get a sentence saying what they are, not "corrupt".
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from docqa.errors import ExtractionFailed

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# Generous for real files (a 50 MB upload of XML inflates to a few hundred MB at most), small
# enough that the 2 GB extraction process never runs out of memory holding what it inflates.
MAX_MEMBERS = 20_000
MAX_TOTAL_BYTES = 1024 * 1024 * 1024
MAX_MEMBER_BYTES = 512 * 1024 * 1024

# An OLE container's streams, by the old format they mark.
_OLD_FORMATS = {
    "WordDocument": ("an old Word (.doc) document", ".docx"),
    "Workbook": ("an old Excel (.xls) workbook", ".xlsx"),
    "Book": ("an old Excel (.xls) workbook", ".xlsx"),
    "PowerPoint Document": ("an old PowerPoint (.ppt) presentation", ".pptx"),
}


def is_ole(head: bytes) -> bool:
    return head.startswith(OLE_MAGIC)


def open_zip(path: Path, name: str) -> zipfile.ZipFile:
    """The file as a zip whose declared sizes are within bounds; `name` ("a PowerPoint (PPTX)
    presentation") is for the sentences. Raises `ExtractionFailed` (`encrypted`,
    `unsupported_type`, `corrupt`, `too_large`)."""
    with path.open("rb") as f:
        head = f.read(len(OLE_MAGIC))
    if is_ole(head):
        raise ole_failure(path, name)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ExtractionFailed(
            "corrupt", f"This file is damaged or is not {name} (its zip container is unreadable)."
        ) from exc
    try:
        check_bounds(archive.infolist())
    except ExtractionFailed:
        archive.close()
        raise
    return archive


def check(path: Path, name: str) -> None:
    """Check the container and close it: for readers whose parser opens the file itself."""
    open_zip(path, name).close()


def check_bounds(members: list[zipfile.ZipInfo]) -> None:
    if len(members) > MAX_MEMBERS:
        raise ExtractionFailed(
            "too_large",
            f"This file's archive holds {len(members):,} parts; docqa reads at most "
            f"{MAX_MEMBERS:,}.",
        )
    total = 0
    for member in members:
        if member.file_size > MAX_MEMBER_BYTES:
            raise ExtractionFailed(
                "too_large",
                f"A part of this file ({member.filename[:80]}) unpacks to "
                f"{_mb(member.file_size)}; docqa reads parts of at most "
                f"{_mb(MAX_MEMBER_BYTES)}.",
            )
        total += member.file_size
    if total > MAX_TOTAL_BYTES:
        raise ExtractionFailed(
            "too_large",
            f"This file unpacks to {_mb(total)}; docqa reads files that unpack to at most "
            f"{_mb(MAX_TOTAL_BYTES)}.",
        )


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):,.0f} MB"


def ole_failure(path: Path, name: str) -> ExtractionFailed:
    """Why an OLE container named as a modern Office file cannot be read."""
    import olefile

    try:
        with olefile.OleFileIO(str(path)) as ole:
            streams = {"/".join(entry) for entry in ole.listdir(streams=True, storages=False)}
    except (OSError, ValueError, EOFError):
        streams = set()
    if "EncryptedPackage" in streams or "EncryptionInfo" in streams:
        return ExtractionFailed(
            "encrypted",
            f"This file is {name} protected with a password, so it cannot be read: remove the "
            "password (in Office: File, Info, Protect, Encrypt with Password, and clear it), "
            "save, and upload it again.",
        )
    for stream, (old, new) in _OLD_FORMATS.items():
        if stream in streams:
            return ExtractionFailed(
                "unsupported_type",
                f"This file is named as {name} but is {old}, which docqa does not read: open it "
                f"and save it as {new}, then upload that.",
            )
    return ExtractionFailed(
        "unsupported_type",
        f"This file is named as {name} but is an old binary Office file (or one protected with "
        "a password), which docqa does not read: save it in the current format without a "
        "password, then upload that.",
    )
