"""Reading documents: the format table, text cleaning, tables, furniture, word boxes, chunking,
and the page text endpoint."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from docqa import formats
from docqa.errors import UnsupportedType
from docqa.formats import docx, html, pdf
from docqa.formats.geometry import rects_for_span
from docqa.formats.page import Page, PageBuilder, ReadContext, TableSpan, clean_text, tidy_rows
from docqa.ingest.chunk import chunk_page, chunk_pages, heading_at
from docqa.ingest.embed import Tokenizer
from docqa.upload import check_bytes_match, claimed_kind
from tests.conftest import upload_file, wait_terminal
from tests.stack import unique_id

TEN_K = "mmlongbench/documents/3M_2018_10K.pdf"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer()


def test_clean_text_joins_hyphenated_words_and_expands_ligatures() -> None:
    assert clean_text("the ﬁnal infor-\nmation") == "the final information"
    # A hyphen before a capital or a digit is part of the text, not a line-end break.
    assert clean_text("Jean-\nPaul and 2018-\n2019") == "Jean-\nPaul and 2018-\n2019"
    assert clean_text("\uf0b7 first point\n\u25aa second") == "• first point\n• second"
    assert clean_text("icon\ue001 glyph\u00ad and  odd\u2003spaces") == "icon glyph and odd spaces"


def test_tidy_rows_folds_currency_cells_and_spare_columns() -> None:
    rows = [
        ["", "2021", "2021", "", "2020", "2020"],
        ["Net income", "$", "2,111", "", "$", "(2,208"],
        ["Tax", "", "24", "", "", "596"],
    ]
    assert tidy_rows(rows) == [
        ["", "2021", "2020"],
        ["Net income", "$2,111", "$(2,208"],
        ["Tax", "24", "596"],
    ]


def test_a_layout_table_is_text() -> None:
    builder = PageBuilder(1)
    builder.table([["A whole paragraph laid out in a one-cell table."]])
    page = builder.build()
    assert page.tables == []
    assert page.text == "A whole paragraph laid out in a one-cell table."


def _table_page(rows: int) -> Page:
    builder = PageBuilder(1)
    builder.paragraph("Revenue by segment, in millions of dollars.")
    header = ["Segment", "Net revenue 2022", "Net revenue 2021"]
    builder.table([header] + [[f"Segment {i}", f"{i},100", f"{i},050"] for i in range(rows)])
    builder.paragraph("Totals exclude intersegment sales.")
    return builder.build()


def test_table_chunks_keep_rows_whole_and_repeat_the_header(tokenizer: Tokenizer) -> None:
    page = _table_page(60)
    table = page.tables[0]
    header = page.text[table.start : table.header_end]
    assert header.startswith("| Segment | Net revenue 2022 | Net revenue 2021 |\n| --- |")
    pieces = [p for p in chunk_page(page, tokenizer, 80, 16) if "| Segment " in p.text]
    assert len(pieces) > 3
    for piece in pieces:
        assert piece.text.startswith(header)  # every piece reads its rows with the headers
        assert tokenizer.count(piece.text) <= 80
        body = piece.text[len(header) :].strip("\n")
        for line in body.split("\n"):
            assert line.startswith("| Segment ")
            assert line.endswith(" |")
        assert page.text[piece.char_start : piece.char_end].endswith(body)
    rows = [line for p in pieces for line in p.text[len(header) :].strip("\n").split("\n")]
    assert len(rows) == 60
    assert len(set(rows)) == 60


def test_chunks_leave_furniture_out(tokenizer: Tokenizer) -> None:
    text = "ACME Corp annual report\n\nThe body of the page says something useful.\n\n12"
    page = Page(1, text, furniture=[(0, 23), (len(text) - 2, len(text))])
    chunks = chunk_pages([page], tokenizer, 100, 10)
    assert [c.text for c in chunks] == ["The body of the page says something useful."]


def test_chunk_heading_is_the_last_heading_before_it() -> None:
    page = Page(1, "x" * 100, heading="Chapter 2", headings=[(40, "Risks"), (80, "Outlook")])
    assert heading_at(page, 0) == "Chapter 2"
    assert heading_at(page, 40) == "Risks"
    assert heading_at(page, 79) == "Risks"
    assert heading_at(page, 95) == "Outlook"


def test_formats_table_checks_names_types_and_bytes() -> None:
    assert claimed_kind("Q3.PDF", "application/octet-stream") == "pdf"
    assert claimed_kind("notes.md", "text/plain") == "markdown"
    with pytest.raises(UnsupportedType, match=r"save the message as \.eml"):
        claimed_kind("mail.msg", "application/vnd.ms-outlook")
    with pytest.raises(UnsupportedType, match="docqa reads PDF"):
        claimed_kind("tool.exe", "application/octet-stream")
    check_bytes_match("text", "\ufeffhello".encode("utf-16"))  # UTF-16 text with its BOM
    with pytest.raises(UnsupportedType, match="bytes are not"):
        check_bytes_match("pdf", b"PK\x03\x04 not a pdf")
    kinds = {f["kind"] for f in formats.public_list()}
    assert {"pdf", "docx", "html", "markdown", "text"} <= kinds


def _page_of(path: Path, number: int) -> Page:
    return next(p for p in pdf.read(path, ReadContext(max_pages=2000)) if p.number == number)


def test_pdf_running_headers_are_furniture(shared_data: Path) -> None:
    page = _page_of(shared_data / TEN_K, 50)
    assert [page.text[a:b] for a, b in page.furniture] == ["Table of Contents"]
    assert "Contractual Obligations" in page.text


def test_a_spans_rects_are_those_of_every_word_it_touches(shared_data: Path) -> None:
    """`rects_for_span` finds a span's words by bisection: the same rectangles as a scan of
    every word of the page, for spans that start and end inside words, between them, and at
    the page's edges."""
    page = _page_of(shared_data / TEN_K, 50)
    assert page.words == sorted(page.words)  # in the order of the text

    def scanned(start: int, end: int) -> list[list[float]]:
        touching = [w for w in page.words if w[0] < end and w[1] > start]
        return rects_for_span(touching, start, end)

    n = len(page.text)
    spans = [(0, n), (0, 1), (n - 1, n), (n, n + 5)] + [
        (a, a + length) for a in range(0, n, 97) for length in (1, 13, 250, 1200)
    ]
    for start, end in spans:
        assert rects_for_span(page.words, start, end) == scanned(start, end), (start, end)
    assert rects_for_span(page.words, 5, 5) == []


def test_pdf_word_boxes_lie_where_pdfium_finds_the_text(shared_data: Path) -> None:
    """The rectangles of a sentence, from the words docqa stored, cover the boxes pdfium's own
    text search gives for it (checked independently, through `PdfTextPage.search`)."""
    import pypdfium2 as pdfium

    path = shared_data / TEN_K
    number = 50
    page = _page_of(path, number)
    sentence = "Unconditional purchase obligations are defined as agreements"
    start = page.text.index(sentence)
    ours = rects_for_span(page.words, start, start + len(sentence))
    document = pdfium.PdfDocument(str(path))
    pdf_page = document[number - 1]
    width, height = pdf_page.get_size()
    textpage = pdf_page.get_textpage()
    found = textpage.search(sentence).get_next()
    assert found is not None
    index, count = found
    expected = []
    for i in range(textpage.count_rects(index, count)):
        left, bottom, right, top = textpage.get_rect(i)
        expected.append((left / width, 1 - top / height, right / width, 1 - bottom / height))
    area = sum((r[2] - r[0]) * (r[3] - r[1]) for r in expected)
    covered = sum(_overlap(e, o) for e in expected for o in ours)
    assert covered >= 0.8 * area, (expected, ours)


def _overlap(a: tuple[float, ...] | list[float], b: tuple[float, ...] | list[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0.0) * max(h, 0.0)


def test_docx_tables_repeat_merged_cells(shared_data: Path) -> None:
    pages = list(
        docx.read(shared_data / "office/docling/word_tables.docx", ReadContext(max_pages=50))
    )
    text = pages[0].text
    assert "| Header 0.0 | Header 0.1 | Header 0.2 |\n| --- | --- | --- |" in text
    assert "| Cell 1.0 | Merged Cell 1.1 1.2 | Merged Cell 1.1 1.2 |" in text
    assert len(pages[0].tables) >= 5


def test_html_filing_tables_read_with_their_headers(shared_data: Path) -> None:
    pages = list(
        html.read(shared_data / "office/unstructured/example-10k.html", ReadContext(max_pages=500))
    )
    tables = [p.text[t.start : t.end] for p in pages for t in p.tables]
    cash = next(t for t in tables if "Depreciation and amortization" in t)
    assert "| Years ended December 31, 2021 | Years ended December 31, 2020 |\n| --- |" in cash
    assert "| Depreciation and amortization | 2,858,991 | 2,222,042 |" in cash


async def test_page_text_endpoint(client: httpx.AsyncClient, fresh_pdf: Path) -> None:
    doc_id = unique_id("pages")
    response = await upload_file(client, fresh_pdf, document_id=doc_id)
    assert response.status_code == 200, response.text
    assert (await wait_terminal(client, doc_id))["status"] == "ready"
    response = await client.get(f"/api/v1/documents/{doc_id}/pages/2")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["page"] == 2
    assert body["ocr"] is False
    assert body["tables"] == 0
    assert body["page_count"] == 4
    assert "blind text" in body["text"]
    missing = await client.get(f"/api/v1/documents/{doc_id}/pages/9")
    assert missing.status_code == 404
    assert missing.json()["code"] == "page_not_found"
    assert "pages are 1 to 4" in missing.json()["detail"]
    unknown = await client.get(f"/api/v1/documents/{unique_id('nope')}/pages/1")
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "document_not_found"
    zero = await client.get(f"/api/v1/documents/{doc_id}/pages/0")
    assert zero.status_code == 422


async def test_formats_endpoint_lists_what_uploads_accept(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/formats")
    assert response.status_code == 200
    listed = {ext for f in response.json()["formats"] for ext in f["extensions"]}
    assert {".pdf", ".docx", ".md", ".txt", ".html"} <= listed
    assert listed == set(formats.accepted_extensions())


def test_table_span_offsets_round_trip() -> None:
    page = _table_page(3)
    (table,) = page.tables
    assert isinstance(table, TableSpan)
    assert page.text[table.start :].startswith("| Segment |")
    assert page.text[: table.end].endswith("| Segment 2 | 2,100 | 2,050 |")


def test_characters_beyond_the_bmp_read_as_letters(shared_data: Path) -> None:
    """pdfium counts UTF-16 units: mathematical letters (𝑥) come as surrogate halves, which the
    tokenizer cannot take. They are joined and read as plain letters."""
    page = _page_of(shared_data / "mmlongbench/documents/2023.findings-emnlp.248.pdf", 3)
    assert "∃x(LanguageModel x ∧ Giant x" in page.text
    assert not any("\ud800" <= c <= "\udfff" for c in page.text)
    assert clean_text("a\ud835b 𝑥") == "ab x"


async def test_a_document_of_nothing_but_furniture_fails_with_no_text(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Every page says only its running header: there is nothing to search, so the document
    fails `no_text` instead of being ready with no chunks."""
    from tests.pdfgen import make_pdf

    path = tmp_path / "stamped.pdf"
    path.write_bytes(
        make_pdf([f"Case 2:18-cv-1 Filed 09/13/18 Page {n} of 6" for n in range(1, 7)])
    )
    doc_id = unique_id("stamp")
    response = await upload_file(client, path, document_id=doc_id)
    assert response.status_code == 200, response.text
    doc = await wait_terminal(client, doc_id)
    assert doc["status"] == "failed", doc
    assert doc["error"]["code"] == "no_text"
    assert "headers" in doc["error"]["message"]


def test_a_scan_whose_text_layer_is_only_a_stamped_header_is_read_by_ocr(
    shared_data: Path,
) -> None:
    """A court filing scanned with an electronic stamp on every page: the text layer holds only
    the stamp ("Case 2:18-cv-… Page 3 of 16"), which is furniture, so every page needs OCR."""
    from docqa.formats import pdf_ocr

    path = shared_data / "mmlongbench/documents/3276a5b991c49cf5f9a4af0f7d6fce67.pdf"
    document = pdf.open_pdf(path)
    try:
        sampled = {i: pdf.read_lines(document[i]) for i in range(len(document))}
        furniture = pdf.learn_furniture(list(sampled.values()))
        assert pdf_ocr.plan(document, len(document), sampled, furniture) == set(range(16))
        # Counted as text, the stamp hides most pages from OCR.
        assert len(pdf_ocr.plan(document, len(document), sampled) or ()) < 4
    finally:
        document.close()


def test_markdown_is_read_as_markdown_whatever_the_stored_file_is_called(tmp_path: Path) -> None:
    """Uploads are stored without their extension: the format table, not the path, decides."""
    stored = tmp_path / "0a1b2c"
    stored.write_text(
        "# Results\n\nRevenue grew.\n\n| Region | Sales |\n|---|---|\n| EU | 12 |\n| US | 30 |\n"
    )
    (page,) = formats.get("markdown").reader()(stored, ReadContext(max_pages=10))
    assert page.headings == [(0, "Results")]
    assert len(page.tables) == 1
    assert "| EU | 12 |" in page.text
