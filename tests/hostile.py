"""Hostile office files, made by the tests: zip bombs named .xlsx and .pptx, and a workbook with
a million empty formatted rows."""

from __future__ import annotations

import zipfile
from pathlib import Path

CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="xml" ContentType="application/xml"/></Types>'
)


def zip_bomb(path: Path, member: str, inflated_mb: int = 600) -> Path:
    """A small zip whose one XML part inflates to `inflated_mb` MB of spaces."""
    chunk = b" " * (1024 * 1024)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        with archive.open(member, "w", force_zip64=True) as f:
            f.write(b'<?xml version="1.0"?><sst>')
            for _ in range(inflated_mb):
                f.write(chunk)
            f.write(b"</sst>")
    return path


def empty_styled_rows(path: Path, rows: int = 1_000_000) -> Path:
    """A real workbook (written by openpyxl) whose sheet then gets `rows` formatted, empty rows
    below its one line of data, as a sheet formatted down to the bottom stores them."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Account", "Balance"])
    sheet.append(["Savings", 1200])
    sheet["A3"].font = Font(bold=True)  # a style the empty rows can point at
    plain = path.with_suffix(".plain.xlsx")
    book.save(plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename != "xl/worksheets/sheet1.xml":
                out.writestr(info, data)
                continue
            head, tail = data.decode().split("</sheetData>")
            head = head.replace('<dimension ref="A1:B3"/>', f'<dimension ref="A1:B{rows}"/>')
            with out.open(info.filename, "w", force_zip64=True) as f:
                f.write(head.encode())
                batch = []
                for r in range(4, rows + 4):
                    batch.append(f'<row r="{r}" s="1" customFormat="1"><c r="A{r}" s="1"/></row>')
                    if len(batch) == 10_000:
                        f.write("".join(batch).encode())
                        batch = []
                f.write("".join(batch).encode())
                f.write(("</sheetData>" + tail).encode())
    plain.unlink()
    return path
