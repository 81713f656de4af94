"""OCR with Tesseract: the engine, the languages it has, and how readable a text layer is.

Tesseract is Debian's (`tesseract-ocr` and its `tesseract-ocr-<lang>` language packages); the
binding is `tesserocr`, which runs Tesseract in this process and releases the GIL while it
recognises, so a few threads use every core (docs/ocr.md has the measurements behind the
choice). Its wheel bundles its own libtesseract but no language data: it is pointed at Debian's.

Recognised words become the same `Line`s of `Glyph`s the PDF text layer gives, so OCR'd pages go
through the same layout (paragraphs, hyphenated line ends, furniture, word boxes for citations).
Nothing heavy is imported at module level: the API process checks languages with this module.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docqa.formats.page import normalise_char
from docqa.formats.pdf import Glyph, Line

if TYPE_CHECKING:
    from PIL.Image import Image

# Where Debian (and other distributions) put Tesseract's language data; TESSDATA_PREFIX wins.
TESSDATA_DIRS = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
)
_LANGUAGE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# Threads recognising at once in one extraction: one per core, a few at most (each holds a
# Tesseract instance and a page image).
MAX_THREADS = 4
# A page whose recognised words Tesseract trusts less than this on average (by character) is a
# picture, not text.
MIN_PAGE_CONFIDENCE = 50.0


class OcrUnavailable(Exception):
    """OCR is on but cannot run as configured; the message says what to install or set."""


def tessdata_dir() -> Path | None:
    """The folder holding `<lang>.traineddata`: `TESSDATA_PREFIX` (the folder itself or its
    parent, as Tesseract accepts both), else the first distribution folder that exists."""
    prefix = os.environ.get("TESSDATA_PREFIX")
    candidates = [Path(prefix), Path(prefix) / "tessdata"] if prefix else []
    candidates += [Path(d) for d in TESSDATA_DIRS]
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("*.traineddata")):
            return folder
    return None


def debian_package(language: str) -> str:
    """The Debian package that holds a Tesseract language (`chi_sim`: tesseract-ocr-chi-sim)."""
    return "tesseract-ocr-" + language.lower().replace("_", "-")


def check_languages(languages: str) -> Path:
    """Raise `OcrUnavailable` unless every language of `languages` (`eng+deu`) is installed;
    returns the language data folder."""
    names = languages.split("+")
    if not all(_LANGUAGE.fullmatch(n) for n in names):
        raise OcrUnavailable(
            f"DOCQA_OCR_LANGUAGES must be Tesseract language codes joined by '+', such as eng "
            f"or eng+deu; '{languages}' is not."
        )
    folder = tessdata_dir()
    if folder is None:
        packages = " ".join(["tesseract-ocr", *(debian_package(n) for n in names)])
        raise OcrUnavailable(
            "OCR is on, but Tesseract's language data was not found: install the Debian "
            f"packages {packages} (apt-get install {packages}), or set DOCQA_OCR=off."
        )
    missing = [n for n in names if not (folder / f"{n}.traineddata").is_file()]
    if missing:
        packages = " ".join(debian_package(n) for n in missing)
        noun = "language is" if len(missing) == 1 else "languages are"
        raise OcrUnavailable(
            f"The OCR {noun} not installed: {', '.join(missing)} (DOCQA_OCR_LANGUAGES="
            f"{languages}). Install the Debian package{'s' if len(missing) > 1 else ''} "
            f"{packages} (apt-get install {packages}), or leave "
            f"{'it' if len(missing) == 1 else 'them'} out of DOCQA_OCR_LANGUAGES."
        )
    return folder


def check_settings(ocr: str, languages: str) -> None:
    """At start: with OCR on, refuse languages whose data is not installed (`OcrUnavailable`)."""
    if ocr == "on":
        check_languages(languages)


# Characters that repeat as leaders in tables of contents ("Chapter 1 ........ 5"): neither
# letters nor garbage, so left out of the share.
_LEADERS = "._-·…="
_NOT_ALNUM = re.compile(r"[\W_]+")
# A text layer with fewer letters and digits than this reads as nothing: a scan with a stamp,
# a page number or a title over an image.
SPARSE_CHARS = 32
# A text layer whose visible characters are less than this share letters and digits is garbage:
# glyph ids of fonts without a Unicode map, read as control characters. Measured over 4,295 real
# pages (docs/ocr.md): good pages ≥ 0.57, garbage ones ≤ 0.31.
MIN_ALNUM_SHARE = 0.45


@dataclass(frozen=True)
class TextQuality:
    alnum: int  # letters and digits
    visible: int  # every character but spaces and leaders; undecodable glyphs included

    @property
    def sparse(self) -> bool:
        return self.alnum < SPARSE_CHARS

    @property
    def garbage(self) -> bool:
        return not self.sparse and self.alnum < MIN_ALNUM_SHARE * self.visible


def text_quality(texts: list[str]) -> TextQuality:
    """How readable a text layer is, from its glyphs' normalised texts (`""`: a glyph that
    decodes to nothing, such as a control character or a private-use code point). Counted in
    characters with string operations, not a loop in Python: it runs on every page of every
    PDF."""
    joined = "".join(texts)
    letters = _NOT_ALNUM.sub("", joined)
    shown = "".join(joined.split())
    leaders = sum(shown.count(c) for c in _LEADERS)
    return TextQuality(len(letters), len(shown) - leaders + texts.count(""))


def lines_quality(lines: Sequence[Line]) -> TextQuality:
    return text_quality([g.text for line in lines for g in line.glyphs])


def raw_quality(text: str) -> TextQuality:
    """The same measure over a text layer as pdfium returns it (before normalising)."""
    return text_quality([normalise_char(c) for c in text if not c.isspace()])


@dataclass
class _Word:
    text: str
    box: tuple[float, float, float, float]
    confidence: float  # Tesseract's, 0 to 100


def _trusted(rows: list[list[_Word]]) -> list[list[_Word]]:
    """The recognised lines, or none when the page is a picture: Tesseract reads the texture of
    a photo as words it doubts (confidence about 40 on average, against 80 to 96 for text), so a
    page whose words average under `MIN_PAGE_CONFIDENCE` holds no text. Within a page of text,
    doubtful words stay: dropping them (or whole doubtful lines) lost more real text, in tables
    and formulas, than it removed noise (docs/ocr.md)."""
    words = [w for row in rows for w in row]
    chars = sum(len(w.text) for w in words)
    if not chars or sum(w.confidence * len(w.text) for w in words) < MIN_PAGE_CONFIDENCE * chars:
        return []
    return rows


class Tesseract:
    """Recognition on a few threads, each with its own Tesseract instance."""

    def __init__(self, languages: str, threads: int | None = None) -> None:
        # Debian's libtesseract uses OpenMP; threads of ours times OpenMP's would oversubscribe
        # the cores (measured 4x slower under load). Set before the library is loaded.
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")
        self.languages = languages
        self.datapath = str(check_languages(languages)) + os.sep
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        self.threads = max(1, min(threads or cores, MAX_THREADS))
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="docqa-ocr")
        self._local = threading.local()
        self._apis: list[Any] = []
        self._lock = threading.Lock()

    def _api(self) -> Any:
        api = getattr(self._local, "api", None)
        if api is None:
            import tesserocr

            api = tesserocr.PyTessBaseAPI(path=self.datapath, lang=self.languages)
            self._local.api = api
            with self._lock:
                self._apis.append(api)
        return api

    def submit(self, image: Image, points_high: float, dpi: int = 0) -> Future[list[Line]]:
        """Recognise `image` on a worker thread: its lines, boxes in fractions of the image.
        `points_high` is the page's height in points, to give lines a font size."""
        return self._pool.submit(self._recognise, image, points_high, dpi)

    def _recognise(self, image: Image, points_high: float, dpi: int) -> list[Line]:
        import tesserocr

        api = self._api()
        api.SetImage(image)
        if dpi:
            api.SetSourceResolution(dpi)
        api.Recognize()
        width, height = image.size
        rows: list[list[_Word]] = []
        iterator = api.GetIterator()
        if iterator is None:
            return []
        level = tesserocr.RIL.WORD
        for word in tesserocr.iterate_level(iterator, level):
            try:
                text = word.GetUTF8Text(level) or ""
            except RuntimeError:  # tesserocr's way of saying "no text here"
                continue
            box = word.BoundingBox(level)
            if not rows or word.IsAtBeginningOf(tesserocr.RIL.TEXTLINE):
                rows.append([])
            if text.strip() and box is not None:
                x0, y0, x1, y1 = box
                fractions = (x0 / width, y0 / height, x1 / width, y1 / height)
                rows[-1].append(_Word(text, fractions, word.Confidence(level)))
        api.Clear()
        return [line for row in _trusted(rows) if (line := _line(row, points_high)) is not None]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for api in self._apis:
                api.End()
            self._apis.clear()


def _line(words: Sequence[_Word], points_high: float) -> Line | None:
    """One recognised line as glyphs: a glyph per word (a line-end hyphen on its own, so the
    layout can join the word across the break), a space between words."""
    glyphs: list[Glyph] = []
    for word in words:
        text = "".join(normalise_char(c) for c in word.text).strip()
        if not text:
            continue
        if glyphs:
            glyphs.append(Glyph(" ", None))
        if len(text) > 1 and text.endswith("-") and text[-2].isalpha():
            glyphs += [Glyph(text[:-1], word.box), Glyph("-", word.box)]
        else:
            glyphs.append(Glyph(text, word.box))
    boxes = [g.box for g in glyphs if g.box is not None]
    if not boxes:
        return None
    box = (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
    # Tesseract's word boxes run from ascender to descender: about the font size.
    return Line(glyphs, box, round((box[3] - box[1]) * points_high, 1))
