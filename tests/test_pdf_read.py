"""The PDF reader's two ways to a page's lines give the same glyphs, boxes and sizes: the bulk
one (numpy, every page without surrogates) and the one character at a time (the reference, and
what pages with surrogates still use)."""

from __future__ import annotations

from pathlib import Path

import pytest

from docqa.formats import pdf
from tests.pdfgen import make_pdf

# Pages with hidden text (outside the visible page), fill-in forms, a rotated page, a filing.
CASES = [
    "pdfs/pdfjs_test/freeculture.pdf",
    "pdfs/pdfminer_samples/i1040nr.pdf",
    "pdfs/pdfplumber_tests/nics-background-checks-2015-11-rotated.pdf",
    "mmlongbench/documents/3M_2018_10K.pdf",
]


def _both_ways(path: Path, pages: int = 30) -> int:
    """Compare the two on the first `pages` pages of `path`; returns the pages compared."""
    document = pdf.open_pdf(path)
    compared = 0
    try:
        for index in range(min(len(document), pages)):
            page = document[index]
            textpage = page.get_textpage()
            try:
                count = textpage.count_chars()
                text = textpage.get_text_range(0, count) if count > 0 else ""
                if not text or len(text) != count or pdf._SURROGATE.search(text):
                    continue
                transform = pdf._to_page_fractions(page)
                bulk = pdf._glyph_lines_bulk(textpage, text, transform)
                reference = pdf._glyph_lines(textpage, text, transform)
            finally:
                textpage.close()
                page.close()
            assert [(ln.glyphs, ln.box, ln.size) for ln in bulk] == [
                (ln.glyphs, ln.box, ln.size) for ln in reference
            ], f"{path.name} page {index + 1}"
            compared += 1
    finally:
        document.close()
    return compared


def test_bulk_lines_match_the_reference_on_a_generated_pdf(tmp_path: Path) -> None:
    path = tmp_path / "lines.pdf"
    path.write_bytes(make_pdf(["A first page.\n\nWith two paragraphs, and a hyphen-\nated word."]))
    assert _both_ways(path) == 1


@pytest.mark.parametrize("name", CASES)
def test_bulk_lines_match_the_reference(shared_data: Path, name: str) -> None:
    assert _both_ways(shared_data / name) > 0
