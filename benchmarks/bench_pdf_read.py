"""What PDF table detection costs: `pdf.read()` over a folder of PDFs with detection off and on.

Each round reads every PDF once with `DOCQA_PDF_TABLES=off`, then once with it on, in this one
process, so load from elsewhere on the machine falls on both alike; the best round of each
counts. CPU time (this process) is reported beside wall time: on a shared machine it is the
steadier of the two. OCR is off: this measures born-digital text layers.

Run: .venv/bin/python benchmarks/bench_pdf_read.py [FOLDER] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import shared_file
from docqa.formats import pdf
from docqa.formats.page import ReadContext


def read_all(files: list[Path], tables: bool) -> dict[str, float]:
    os.environ["DOCQA_PDF_TABLES"] = "on" if tables else "off"
    pages = found = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for path in files:
        for page in pdf.read(path, ReadContext(max_pages=100_000, ocr=False)):
            pages += 1
            found += len(page.tables)
    return {
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "pages": pages,
        "tables": found,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", nargs="?", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = args.folder or shared_file("mmlongbench", "documents")
    files = sorted(folder.glob("*.pdf"))
    best: dict[bool, dict[str, float]] = {}
    for _ in range(args.rounds):
        for tables in (False, True):
            run = read_all(files, tables)
            if tables not in best or run["cpu_s"] < best[tables]["cpu_s"]:
                best[tables] = run
    off, on = best[False], best[True]
    result = {
        "files": len(files),
        "pages": on["pages"],
        "tables": on["tables"],
        "off": {k: round(v, 2) for k, v in off.items() if k.endswith("_s")},
        "on": {k: round(v, 2) for k, v in on.items() if k.endswith("_s")},
        "cpu_ratio": round(on["cpu_s"] / off["cpu_s"], 3),
        "wall_ratio": round(on["wall_s"] / off["wall_s"], 3),
        "ms_per_page_added": round(1000 * (on["cpu_s"] - off["cpu_s"]) / on["pages"], 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
