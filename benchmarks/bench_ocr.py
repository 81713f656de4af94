"""OCR accuracy and speed: docqa's OCR path against plain `tesseract`, on the same images.

1. Real pages that have a text layer (mmlongbench PDFs: filings, reports, papers) are rendered
   to 200-dpi greyscale images with mild scan noise: a slight blur, grain, and a rotation of
   under a degree. Their text layer is the ground truth.
2. docqa reads them as one multi-page TIFF through the extraction sandbox (`extract_pages`: a
   child process, Tesseract on a thread per core), timed from the call to the last page.
3. The `tesseract` command line (Debian's) reads the same images, one process per page, as a
   person would run it: once as it comes (OpenMP on), once two at a time with one thread each.
Each round runs all three, interleaved, so a busy machine weighs on them alike.

Character error rate: Levenshtein distance between the recognised text and the text layer, both
cleaned as docqa cleans text (ligatures, hyphenated line ends) and with whitespace collapsed,
over the length of the text layer. Goals: CER <= 3%, docqa pages/s >= 0.9 x tesseract's.

Run: .venv/bin/python benchmarks/bench_ocr.py [--pages N] [--rounds R] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import shared_file
from docqa.formats.ocr import raw_quality
from docqa.formats.page import clean_text
from docqa.ingest.extract import Limits, ReadOptions, extract_pages

DPI = 200
SEED = 7
DOCUMENTS = "mmlongbench/documents"


def normalise(text: str) -> str:
    return " ".join(clean_text(text).split())


def cer(recognised: str, truth: str) -> float:
    from rapidfuzz.distance import Levenshtein

    return Levenshtein.distance(normalise(recognised), truth) / max(1, len(truth))


def pick_pages(count: int) -> list[tuple[Path, int, str]]:
    """Pages of running text (at least 1,500 visible characters, three quarters of them letters
    or digits), at most two per document, chosen with a fixed seed."""
    import pypdfium2 as pdfium

    rng = random.Random(SEED)
    candidates: list[tuple[Path, int, str]] = []
    for path in sorted(shared_file(DOCUMENTS).glob("*.pdf")):
        pdf = pdfium.PdfDocument(path)
        found = []
        for index in range(len(pdf)):
            text = pdf[index].get_textpage().get_text_range()
            quality = raw_quality(text)
            if quality.visible >= 1500 and quality.alnum >= 0.75 * quality.visible:
                found.append((path, index, normalise(text)))
        candidates += rng.sample(found, min(2, len(found)))
        pdf.close()
    return sorted(rng.sample(candidates, min(count, len(candidates))), key=lambda c: str(c[:2]))


def scanned(path: Path, index: int, rng: random.Random) -> Any:
    """The page at 200 dpi in greyscale, as a scanner might give it."""
    import numpy as np
    import pypdfium2 as pdfium
    from PIL import Image, ImageFilter

    pdf = pdfium.PdfDocument(path)
    image = pdf[index].render(scale=DPI / 72, grayscale=True).to_pil().copy()
    pdf.close()
    image = image.rotate(rng.uniform(-0.8, 0.8), Image.Resampling.BICUBIC, fillcolor=255)
    image = image.filter(ImageFilter.GaussianBlur(0.6))
    pixels = np.asarray(image, dtype=np.float32)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 10, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8), "L")


def run_docqa(tiff: Path, pages: int) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    result = extract_pages(
        tiff,
        "tiff",
        Limits(max_pages=pages, timeout_s=60, memory_mb=2048, max_extra_s=60.0 * pages),
        options=ReadOptions(ocr_timeout_s_per_page=60),
    )
    return time.perf_counter() - t0, [p.text for p in result]


def run_cli(images: list[Path], parallel: int) -> tuple[float, list[str]]:
    env = dict(os.environ)
    if parallel > 1:
        env["OMP_THREAD_LIMIT"] = "1"  # one thread each: the processes share the cores

    def one(image: Path) -> str:
        done = subprocess.run(
            ["tesseract", str(image), "stdout", "-l", "eng"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        return done.stdout

    t0 = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        texts = list(pool.map(one, images))
    return time.perf_counter() - t0, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    pages = pick_pages(args.pages)
    rng = random.Random(SEED)
    truths = [truth for _, _, truth in pages]
    workdir = Path(tempfile.mkdtemp(prefix="docqa-bench-ocr-"))
    images = [scanned(path, index, rng) for path, index, _ in pages]
    # The TIFF first: Pillow keeps a PNG save's encoder settings on the image, and its TIFF
    # writer then fails on them.
    tiff = workdir / "scans.tif"
    images[0].save(tiff, save_all=True, append_images=images[1:])  # uncompressed: same pixels
    pngs = []
    for n, image in enumerate(images):
        pngs.append(workdir / f"page-{n:02d}.png")
        image.save(pngs[-1])

    runs: dict[str, list[dict[str, float]]] = {"docqa": [], "tesseract": [], "tesseract x2": []}
    for round_no in range(args.rounds):
        for name, run in (
            ("docqa", lambda: run_docqa(tiff, len(images))),
            ("tesseract", lambda: run_cli(pngs, 1)),
            ("tesseract x2", lambda: run_cli(pngs, 2)),
        ):
            seconds, texts = run()
            errors = [cer(text, truth) for text, truth in zip(texts, truths, strict=True)]
            chars = sum(len(t) for t in truths)
            pooled = sum(e * len(t) for e, t in zip(errors, truths, strict=True)) / chars
            runs[name].append(
                {
                    "seconds": round(seconds, 2),
                    "pages_per_s": round(len(images) / seconds, 3),
                    "cer": round(pooled, 4),
                    "worst_page_cer": round(max(errors), 4),
                }
            )
            if not args.json:
                print(f"round {round_no + 1}  {name:13s} {runs[name][-1]}", flush=True)

    speed = {name: statistics.median(r["pages_per_s"] for r in rs) for name, rs in runs.items()}
    report = {
        "pages": [f"{p.name}#{i + 1}" for p, i, _ in pages],
        "dpi": DPI,
        "cores": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "runs": runs,
        "median_pages_per_s": speed,
        "docqa_vs_tesseract": round(speed["docqa"] / speed["tesseract"], 2),
        "docqa_vs_tesseract_x2": round(speed["docqa"] / speed["tesseract x2"], 2),
    }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
