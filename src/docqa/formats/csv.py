"""CSV (and TSV, through `docqa.formats.tsv`): the encoding detected, the delimiter sniffed,
quoted newlines kept inside their cell, the header row found below any title rows, and the rows
cut into parts that each carry the header row (`docqa.formats.tables`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

from docqa.errors import ExtractionFailed
from docqa.formats.page import Page, ReadContext
from docqa.formats.tables import table_pages

_DELIMITERS = ",;\t|"
_SNIFF_CHARS = 64 * 1024
# Single-byte encodings that decode the same bytes equally well are told apart by use: Western
# European first, as Excel on most systems writes it.
_PREFERRED = ("cp1252", "latin_1", "iso8859_15")


def decode(data: bytes) -> str:
    """The file's text: a BOM, else UTF-8 if it decodes, else charset-normalizer's best guess
    (Big5, Latin-1 and the like), preferring Windows-1252 among equally good single-byte
    guesses."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    import charset_normalizer

    results = charset_normalizer.from_bytes(data)
    best = results.best()
    if best is None:
        raise ExtractionFailed(
            "corrupt", "The text encoding of this table could not be recognised."
        )
    ties = [m for m in results if (m.chaos, m.coherence) == (best.chaos, best.coherence)]
    for match in ties:
        if match.encoding in _PREFERRED:
            best = match
            break
    return data.decode(best.encoding, errors="replace")


def sniff_delimiter(text: str) -> str:
    """The delimiter of a .csv: the sniffer's choice when the first line holds it, else the
    candidate the first line holds most of, else a comma."""
    sample = text[:_SNIFF_CHARS]
    first = sample.split("\n", 1)[0]
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        sniffed = ""
    if sniffed and sniffed in first:
        return sniffed
    counts = {d: first.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def rows(text: str, delimiter: str) -> Iterator[list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for row in reader:
            cells = [" ".join(cell.split()) for cell in row]
            if any(cells):
                yield cells
    except csv.Error as exc:
        raise ExtractionFailed(
            "corrupt", f"This table cannot be parsed at line {reader.line_num}: {exc}."
        ) from exc


def read_table(path: Path, delimiter: str | None) -> Iterator[Page]:
    """The table's pages; `delimiter` None: sniffed."""
    text = decode(path.read_bytes()).replace("\x00", "")
    yield from table_pages(rows(text, delimiter or sniff_delimiter(text)), heading="", first=1)


def read(path: Path, ctx: ReadContext) -> Iterator[Page]:
    yield from read_table(path, None)
