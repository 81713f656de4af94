"""The office, table, e-book and mail readers on real files (../shared/data/formats): what each
keeps (titles, tables with their headers, notes, dates, encodings, attachments), and how the
upload checks treat each new type."""

from __future__ import annotations

import datetime
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from docqa.errors import ExtractionFailed, UnsupportedType
from docqa.formats import csv as csv_reader
from docqa.formats import eml, epub, odt, pptx, rtf, tsv, xlsx
from docqa.formats.page import Page, ReadContext
from docqa.upload import check_bytes_match, claimed_kind

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _read(module: object, path: Path) -> list[Page]:
    """The pages a reader makes of the file, stored as uploads are: under a name without an
    extension, so no reader can lean on one."""
    read = getattr(module, "read")  # noqa: B009 - every reader module has one
    with tempfile.TemporaryDirectory() as folder:
        blob = Path(folder) / "0123abcd"
        shutil.copyfile(path, blob)
        return list(read(blob, ReadContext(max_pages=2000)))


def _failure(module: object, path: Path) -> ExtractionFailed:
    with pytest.raises(ExtractionFailed) as caught:
        _read(module, path)
    assert len(caught.value.message) > 30, caught.value.message
    return caught.value


def _header_rows(page: Page) -> list[str]:
    return [page.text[t.start : t.header_end] for t in page.tables]


def test_pptx_slide_titles_tables_and_notes(shared_data: Path) -> None:
    pages = _read(pptx, shared_data / "formats/docling/powerpoint_sample.pptx")
    assert [p.number for p in pages] == [1, 2, 3]
    assert pages[1].heading == "Second slide title"
    assert pages[1].text.count("Second slide title") == 1, "the title is read once"
    assert "Notes: Some notes on the second slide." in pages[1].text
    assert "Notes: Final notes on the third slide." in pages[2].text
    (table,) = pages[0].tables
    assert "Class1 A merged with B" in pages[0].text[table.start : table.header_end]


def test_pptx_real_decks_keep_every_slide_and_their_notes(shared_data: Path) -> None:
    deck = shared_data / "formats/poi/customGeo.pptx"
    pages = _read(pptx, deck)
    assert len(pages) == 48
    with_notes = [p for p in pages if "Notes:" in p.text]
    assert len(with_notes) >= 30
    (talk,) = (shared_data / "formats/poi").glob("au.asn.aes.*Maloney.pptx")
    tables = _read(pptx, talk)
    assert sum(len(p.tables) for p in tables) == 9
    japanese = _read(pptx, shared_data / "formats/poi/with_japanese.pptx")
    assert "ゾルゲと尾崎" in japanese[0].text


def test_pptx_grouped_shapes_and_reading_order(tmp_path: Path) -> None:
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[5])  # title only
    slide.shapes.title.text = "Quarterly review"
    group = slide.shapes.add_group_shape()
    low = group.shapes.add_textbox(Inches(1), Inches(5), Inches(3), Inches(1))
    low.text_frame.text = "Second: the lower box"
    high = group.shapes.add_textbox(Inches(1), Inches(2), Inches(3), Inches(1))
    high.text_frame.text = "First: the upper box"
    slide.notes_slide.notes_text_frame.text = "Mention the harbour contract."
    path = tmp_path / "grouped.pptx"
    deck.save(str(path))
    (page,) = _read(pptx, path)
    assert page.heading == "Quarterly review"
    assert page.text.index("First: the upper box") < page.text.index("Second: the lower box")
    assert page.text.endswith("Notes: Mention the harbour contract.")


def test_xlsx_sheets_dates_and_headers_on_every_part(shared_data: Path) -> None:
    pages = _read(xlsx, shared_data / "formats/poi/bug62181.xlsx")
    assert len(pages) > 100, "a 19,455-row sheet is cut into parts"
    assert {p.heading for p in pages} == {"List 2"}
    assert "| 2018-02-01 |" in pages[0].text, "dates as ISO dates, not serial numbers"
    assert not re.search(r"\| 43\d{3}(\.\d+)? \|", pages[0].text)
    headers = {h for p in pages for h in _header_rows(p)}
    assert len(headers) == 1, "every part carries the same header row"
    # Russian sheet with merged ranges: every part readable, the Cyrillic sheet name kept.
    russian = _read(xlsx, shared_data / "formats/poi/no_drawing_patriarch.xlsx")
    assert {p.heading for p in russian} == {"Лист 1"}
    assert all(p.tables for p in russian[1:])


def test_xlsx_value_reads_with_its_column_header(shared_data: Path) -> None:
    pages = _read(
        xlsx, shared_data / "formats/unstructured/2023-half-year-analyses-by-segment.xlsx"
    )
    first = pages[0]
    assert first.heading == "OS-Rev.and results 30 06 2023"
    table = first.tables[0]
    assert "Sales (a)" in first.text[table.start : table.header_end]
    assert "| Zone EUR | 9467 |" in first.text[table.header_end : table.end]
    # The caption merged across the sheet is a title above the table, not its header.
    assert first.text.index("3. Analyses by segment") < table.start


def test_xlsx_computed_values_not_formulas(shared_data: Path) -> None:
    pages = _read(xlsx, shared_data / "formats/poi/StructuredRefs-lots-with-lookups.xlsx")
    text = "\n".join(p.text for p in pages)
    assert "=VLOOKUP" not in text.upper()
    assert not re.search(r"\| =[A-Z]", text)


def test_xlsx_right_to_left_sheet(shared_data: Path) -> None:
    pages = _read(xlsx, shared_data / "formats/poi/right-to-left.xlsx")
    assert "عربى" in {p.heading for p in pages}
    assert re.search(r"[\u0590-\u05ff]", "".join(p.text for p in pages)), "Hebrew text kept"


def test_xlsx_written_by_openpyxl(tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Sales"
    sheet.append(["Regional sales, first half"])
    sheet.append(["Region", "Closed on", "Net revenue", "Share"])
    sheet.append(["Northwind", datetime.date(2023, 3, 31), 48213.5, 0.1 + 0.2])
    sheet.append(["Southgate", datetime.datetime(2023, 6, 30, 14, 5), 39000, True])
    sheet.merge_cells("A5:A6")
    sheet["A5"] = "Eastport"
    sheet["B5"], sheet["B6"] = "2023-01-02", "2023-01-03"
    path = tmp_path / "sales.xlsx"
    book.save(path)
    (page,) = _read(xlsx, path)
    assert page.text.startswith("Sales\n\nRegional sales, first half")
    assert "| Region | Closed on | Net revenue | Share |" in page.text
    assert "| Northwind | 2023-03-31 | 48213.5 | 0.3 |" in page.text
    assert "| Southgate | 2023-06-30 14:05:00 | 39000 | TRUE |" in page.text
    assert "| Eastport | 2023-01-03 |" in page.text, "a vertical merge repeats its value"


def test_broken_and_protected_office_files_fail_with_their_reason(shared_data: Path) -> None:
    formats_dir = shared_data / "formats"
    assert _failure(xlsx, formats_dir / "poi/protected_passtika.xlsx").code == "encrypted"
    from docqa.formats import docx

    assert _failure(docx, formats_dir / "msoffcrypto/example_password.docx").code == "encrypted"
    bomb = _failure(xlsx, formats_dir / "poi/poc-xmlbomb.xlsx")
    assert (bomb.code, "entities" in bomb.message) == ("corrupt", True)
    for broken in (
        "poi/clusterfuzz-testcase-minimized-POIXSSFFuzzer-5089447305609216.xlsx",
        "poi/49609.xlsx",
    ):
        assert _failure(xlsx, formats_dir / broken).code == "corrupt"
    for broken in (
        "poi/Divino_Revelado.pptx",
        "poi/clusterfuzz-testcase-minimized-POIXSLFFuzzer-6254434927378432.pptx",
    ):
        assert _failure(pptx, formats_dir / broken).code == "corrupt"


def test_an_old_binary_file_named_as_new_says_so(shared_data: Path, tmp_path: Path) -> None:
    # An Outlook .msg is an OLE container like an old .xls: renamed, it is not "corrupt".
    renamed = tmp_path / "budget.xlsx"
    renamed.write_bytes((shared_data / "formats/poi/cyrillic_message.msg").read_bytes())
    failure = _failure(xlsx, renamed)
    assert failure.code == "unsupported_type"
    assert "old binary Office file" in failure.message


def test_csv_encodings_quoted_newlines_and_title_rows(shared_data: Path) -> None:
    big5 = _read(csv_reader, shared_data / "formats/messytables/characters.csv")
    text = "\n".join(p.text for p in big5)
    assert "景點中文名稱" in _header_rows(big5[0])[0]
    assert "雲嘉南濱海國家風景區管理處" in text
    rows = sum(p.text[t.header_end : t.end].count("\n| ") for p in big5 for t in p.tables)
    assert rows == 382, "a quoted newline stays inside its record"
    latin = "\n".join(
        p.text for p in _read(csv_reader, shared_data / "formats/messytables/spanish_chars.csv")
    )
    assert "Descripción" in latin
    assert "diseño" in latin
    (pasted,) = _read(csv_reader, shared_data / "formats/messytables/excel_pasting.csv")
    assert pasted.text.startswith("CO2 emissions by different sub-groups")
    assert _header_rows(pasted)[0].startswith("| Year | 2000 | 2001 |")
    assert "| Iron and steel | 22,927 |" in pasted.text


def test_tsv_and_sniffed_delimiters(shared_data: Path, tmp_path: Path) -> None:
    pages = _read(tsv, shared_data / "formats/messytables/example.tsv")
    assert _header_rows(pages[0])[0].startswith("| hour | expr1_0_imp |")
    semicolons = tmp_path / "prices.csv"
    semicolons.write_text('Item;Price;Note\nTea;3,50;"loose; green"\nCake;4,20;\n', "utf-8")
    (page,) = _read(csv_reader, semicolons)
    assert "| Tea | 3,50 | loose; green |" in page.text


def test_epub_chapters_in_reading_order(shared_data: Path) -> None:
    pages = _read(epub, shared_data / "formats/epubjs/alice.epub")
    headings = [p.heading for p in pages]
    rabbit, tears = headings.index("Down The Rabbit-Hole"), headings.index("The Pool Of Tears")
    assert rabbit < tears
    assert "Alice was beginning to get very tired" in pages[rabbit].text
    poetry = _read(epub, shared_data / "formats/docling/epub_purvis_poetry.epub")
    assert "The Grave of the Slave" in [p.heading for p in poetry]


def test_eml_headers_bodies_charsets_and_attachments(shared_data: Path) -> None:
    mail = shared_data / "formats/unstructured"
    hebrew = _read(eml, mail / "email-no-utf8-2008-07-16.062410.eml")
    assert hebrew[0].heading == "RE: שלום"
    assert "Subject: RE: שלום" in hebrew[0].text
    assert "סלבה היקר" in hebrew[0].text, "the windows-1255 body decoded"
    html_only = _read(eml, mail / "email-replace-mime-encodings-error-1.eml")
    assert "Someone has joined your meeting" in html_only[0].text
    assert "<div" not in html_only[0].text
    attached = _read(eml, mail / "fake-email-attachment.eml")
    assert "From: Mallori Harrell <mallori@unstructured.io>" in attached[0].text
    assert "Attachments: fake-attachment.txt" in attached[0].text
    assert attached[1].heading == "fake-attachment.txt"
    assert "Hey this is a fake attachment!" in attached[1].text
    digest = _read(eml, mail / "mime-multipart-digest.eml")
    assert [p.heading for p in digest][1:] == ["First Message", "Second Message", "Third Message"]
    logos = _read(eml, mail / "email-no-utf8-2014-03-17.111517.eml")
    assert len(logos) == 1, "images the HTML shows inline are not attachments to read"


def test_eml_nesting_is_bounded(tmp_path: Path) -> None:
    from email.message import EmailMessage

    inner = EmailMessage()
    inner["Subject"] = "level 0"
    inner.set_content("The innermost sentence.")
    for level in range(1, 6):
        outer = EmailMessage()
        outer["Subject"] = f"level {level}"
        outer.set_content(f"Body at level {level}.")
        outer.add_attachment(inner)
        inner = outer
    path = tmp_path / "nested.eml"
    path.write_bytes(inner.as_bytes())
    pages = _read(eml, path)
    assert [p.heading for p in pages] == [f"level {n}" for n in (5, 4, 3, 2)]


def test_odt_and_rtf(shared_data: Path) -> None:
    doc = _read(odt, shared_data / "formats/docling/text_document_03.odt")
    assert doc[0].heading == "Table with rich cells"
    assert sum(len(p.tables) for p in doc) >= 3
    court = _read(rtf, shared_data / "formats/striprtf/BVWGT_20241227_W258_2227269_1_00_01.rtf")
    assert sum(len(p.text) for p in court) > 150_000
    assert "Bundesverwaltungsgericht" in court[0].text
    polish = _read(rtf, shared_data / "formats/striprtf/ansicpg1250.rtf")
    assert "Proszę o zapoznanie się" in polish[0].text, "the 1250 code page applied"


def test_upload_checks_for_the_new_types(shared_data: Path) -> None:
    assert claimed_kind("export.csv", "application/vnd.ms-excel") == "csv"  # Windows browsers
    assert claimed_kind("export.csv", "text/plain") == "csv"
    assert claimed_kind("deck.pptx", "application/octet-stream") == "pptx"
    assert claimed_kind("mail.eml", "message/rfc822") == "eml"
    assert claimed_kind("data.tsv", "text/tab-separated-values") == "tsv"
    with pytest.raises(UnsupportedType, match=r"save the file as \.xlsx"):
        claimed_kind("old.xls", "application/vnd.ms-excel")
    with pytest.raises(UnsupportedType, match="named like"):
        claimed_kind("deck.pptx", "text/csv")
    protected = (shared_data / "formats/poi/protected_passtika.xlsx").read_bytes()[:8192]
    check_bytes_match("xlsx", protected)  # accepted: its reader says it is encrypted
    with pytest.raises(UnsupportedType, match="bytes are not"):
        check_bytes_match("pptx", b"%PDF-1.7 not a deck")
    with pytest.raises(UnsupportedType, match="bytes are not"):
        check_bytes_match("epub", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1 an OLE file")
    with pytest.raises(UnsupportedType, match="bytes are not"):
        check_bytes_match("eml", b"just some words, no header\n")
    with pytest.raises(UnsupportedType, match="bytes are not"):
        check_bytes_match("csv", b"PK\x03\x04 a zip named .csv")
    check_bytes_match(
        "eml", (shared_data / "formats/unstructured/mime-multipart-digest.eml").read_bytes()
    )
    check_bytes_match("rtf", b"{\\rtf1\\ansi hello}")
