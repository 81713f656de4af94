"""PDF tables, found on real pages of real documents (../shared/data): rows and headers as read,
and prose pages (columns, lists, a table of contents) left as text."""

from __future__ import annotations

from pathlib import Path

import pytest

from docqa.formats.page import Page
from docqa.formats.pdf import layout_page, open_pdf, read_lines
from docqa.formats.pdf_tables import find_tables
from docqa.ingest.chunk import chunk_page
from docqa.ingest.embed import Tokenizer
from tests.stack import SHARED_DATA

MMLB = SHARED_DATA / "mmlongbench" / "documents"
PDFS = SHARED_DATA / "pdfs"


def _page(path: Path, number: int) -> Page:
    if not path.is_file():
        pytest.skip(f"the shared data file {path} is absent")
    pdf = open_pdf(path)
    try:
        page = pdf[number - 1]
        lines = read_lines(page)
        page.close()
    finally:
        pdf.close()
    return layout_page(number, lines, set(), find_tables(lines))


def _tables(page: Page) -> list[tuple[list[str], list[str]]]:
    """Each table's header lines (without the separator) and body lines."""
    out = []
    for t in page.tables:
        head = page.text[t.start : t.header_end].split("\n")
        body = page.text[t.header_end : t.end].strip("\n").split("\n")
        out.append(([line for line in head if not line.startswith("| ---")], body))
    return out


def test_contractual_obligations_rows_read_with_their_years() -> None:
    page = _page(MMLB / "3M_2018_10K.pdf", 50)
    [(head, body)] = _tables(page)
    assert head[-1] == "| (Millions) | Total | 2019 | 2020 | 2021 | 2022 | 2023 | After 2023 |"
    # The spanning header is a row of its own above the years.
    assert "Payments due by year" in head[0]
    assert body[0] == (
        "| Total debt (Note 12) | $ 14,622 | $ 1,211 | $ 1,330 | $ 1,698 | $ 1,165 | $ 1,328 "
        "| $ 7,890 |"
    )
    assert (
        "| Tax Cuts and Jobs Act (TCJA) transition tax (Note 10) | 649 | — | 16 | 67 | 67 | 125 "
        "| 374 |" in body
    )
    assert body[-1].startswith("| Total contractual cash obligations | $ 22,177 |")
    assert len(body) == 7
    # The prose around the table stays prose, outside it.
    table = page.tables[0]
    assert "follows:" in page.text[: table.start]
    assert "Long-term debt payments due in 2019" in page.text[table.end :]
    # Every cell keeps the boxes of its glyphs, for citations.
    at = page.text.index("14,622")
    [word] = [w for w in page.words if w[0] <= at < w[1]]
    assert 0.4 < word[2] < word[4] < 0.5
    assert 0.14 < word[3] < word[5] < 0.16


def test_balance_sheet_headers_labels_and_signs() -> None:
    page = _page(MMLB / "COSTCO_2021_10K.pdf", 38)
    [(head, body)] = _tables(page)
    # Column headers written over two lines ("August 29," above "2021") read as one.
    assert head == ["|  | August 29, 2021 | August 30, 2020 |"]
    # "$" in a glyph run of its own is joined to its number; section labels are rows.
    assert body[:3] == [
        "| ASSETS |  |  |",
        "| CURRENT ASSETS |  |  |",
        "| Cash and cash equivalents | $ 11,258 | $ 12,277 |",
    ]
    assert "| Accumulated other comprehensive loss | (1,137) | (1,297) |" in body
    # A label wrapped over two lines is one row, with its numbers.
    assert (
        "| Preferred stock $0.01 par value; 100,000,000 shares authorized; no shares issued and "
        "outstanding | — | — |" in body
    )
    assert body[-1] == "| TOTAL LIABILITIES AND EQUITY | $ 59,268 | $ 55,556 |"
    assert (
        "integral part of these consolidated financial statements"
        in page.text[page.tables[0].end :]
    )


def test_spanning_header_over_year_columns() -> None:
    page = _page(MMLB / "AMAZON_2017_10K.pdf", 38)
    head, body = _tables(page)[0]
    assert head == ["|  |  | Year Ended December 31, |  |", "|  | 2015 | 2016 | 2017 |"]
    assert body[0] == "| Net product sales | $ 79,268 | $ 94,665 | $ 118,573 |"


def test_wrapped_label_in_a_cash_flow_statement() -> None:
    page = _page(MMLB / "3M_2018_10K.pdf", 60)
    head, body = _tables(page)[0]
    assert head == ["| (Millions) | 2018 | 2017 | 2016 |"]
    assert (
        "| Adjustments to reconcile net income including noncontrolling interest to net cash "
        "provided by operating activities |  |  |  |" in body
    )
    assert "| Depreciation and amortization | 1,488 | 1,544 | 1,474 |" in body


def test_two_tables_side_by_side_in_a_two_column_paper() -> None:
    page = _page(MMLB / "2023.acl-long.386.pdf", 8)
    (left_head, left), (right_head, right) = _tables(page)
    assert left_head[-1] == "|  | 2-hop | 3-hop | 4-hop |"
    assert left[0] == "| Syntax error | 0% | 0% | 0% |"
    assert left[-1] == "| Incorrect execution | 71% | 62% | 23% |"
    assert right_head[-1] == "|  | 2-hop | 3-hop | 4-hop |  |"
    assert "| - Direct | 56.51 | 51.75 | 49.68 | 60.13 |" in right
    # The prose of both columns stays outside the tables.
    for t in page.tables:
        assert "Closed-Book Fact-Checking" not in page.text[t.start : t.end]


def test_stacked_tables_are_split_at_their_titles() -> None:
    page = _page(MMLB / "3M_2018_10K.pdf", 84)
    heads = [head[-1] for head, _ in _tables(page)]
    assert heads == [
        "| (Millions) | 2018 | 2017 | 2016 |",
        "| (Millions) | 2018 | 2017 | 2016 |",
        "| (Millions) | 2018 | 2017 |",
    ]


def test_table_written_a_column_at_a_time() -> None:
    """The WARN report's text layer runs down one column, then up the others."""
    page = _page(PDFS / "pdfplumber_tests" / "WARN-Report-for-7-1-2015-to-03-25-2016.pdf", 1)
    [(head, body)] = _tables(page)
    assert head[0].startswith("| Notice Date | Effective | Received | Company | City |")
    assert "| 06/30/2015 | 08/29/2015 | 07/01/2015 | McGraw-Hill Education | Monterey | 137 |" in (
        "\n".join(body)
    )
    assert len(body) > 30


def test_chunks_of_a_long_table_repeat_its_header() -> None:
    page = _page(MMLB / "COSTCO_2021_10K.pdf", 38)
    table = page.tables[0]
    pieces = [
        p for p in chunk_page(page, Tokenizer(), 64, 8) if table.start <= p.char_start < table.end
    ]
    assert len(pieces) > 3
    for piece in pieces:
        assert piece.text.startswith("|  | August 29, 2021 | August 30, 2020 |\n| --- |")


@pytest.mark.parametrize(
    ("path", "number", "what"),
    [
        (MMLB / "3M_2018_10K.pdf", 51, "a page of prose"),
        (MMLB / "3M_2018_10K.pdf", 3, "a table of contents (titles, then page numbers)"),
        (PDFS / "pdfminer_samples" / "naacl06-shinyama.pdf", 1, "a two-column paper"),
        (PDFS / "pdfminer_samples" / "naacl06-shinyama.pdf", 3, "a two-column paper"),
        (PDFS / "pdfjs_test" / "tracemonkey.pdf", 1, "a two-column paper"),
        (PDFS / "pdfplumber_tests" / "federal-register-2020-17221.pdf", 1, "three columns"),
        (PDFS / "pdfplumber_tests" / "federal-register-2020-17221.pdf", 2, "three columns"),
        (PDFS / "unstructured_example_docs" / "multi-column.pdf", 1, "two columns"),
        (PDFS / "unstructured_example_docs" / "multi-column.pdf", 2, "two columns"),
        (PDFS / "pdfminer_samples" / "dmca.pdf", 4, "a bulleted list"),
        (PDFS / "pdfminer_samples" / "dmca.pdf", 10, "a bulleted list"),
        (PDFS / "pdfplumber_tests" / "scotus-transcript-p1.pdf", 1, "numbered lines"),
        (MMLB / "tacl_a_00660.pdf", 7, "justified narrow columns"),
        (MMLB / "2303.08559v2.pdf", 14, "an algorithm with numbered lines"),
    ],
)
def test_prose_gets_no_table(path: Path, number: int, what: str) -> None:
    page = _page(path, number)
    assert page.tables == [], f"{what}: {page.text[page.tables[0].start : page.tables[0].end]}"


def test_table_of_contents_stays_one_entry_a_line() -> None:
    page = _page(MMLB / "3M_2018_10K.pdf", 3)
    assert "Note 2. Revenue 71\n" in page.text


def test_running_headers_never_join_a_table() -> None:
    path = MMLB / "3M_2018_10K.pdf"
    if not path.is_file():
        pytest.skip(f"the shared data file {path} is absent")
    pdf = open_pdf(path)
    try:
        page = pdf[49]
        lines = read_lines(page)
        page.close()
    finally:
        pdf.close()
    whole = find_tables(lines)
    assert len(whole) == 1
    # With the header rows' lines marked as furniture the table keeps its body and loses them.
    first = whole[0].first_line
    [table] = find_tables(lines, furniture={first})
    assert table.first_line > first
    assert table.end_line == whole[0].end_line
