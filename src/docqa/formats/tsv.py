"""TSV: a table with tab-separated cells, read as CSV is (`docqa.formats.csv`) without sniffing:
readers see only the stored file, not its name, so the format says which delimiter it has."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from docqa.formats.csv import read_table
from docqa.formats.page import Page, ReadContext


def read(path: Path, ctx: ReadContext) -> Iterator[Page]:
    yield from read_table(path, "\t")
