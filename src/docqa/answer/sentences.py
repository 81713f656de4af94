"""Cutting passages into the units an extractive answer copies: sentences, list items and rows of
figures.

Headings, table lines and page furniture are left out: an answer never glues a heading into a
sentence. A run of lines that each end in figures ("Total current assets 8,802 10,539", the
lines of a financial statement read from a PDF) is cut into its rows, not joined into one
sentence that runs over the whole statement. A sentence ends at `.`, `!` or `?` before a
capital, a digit or an opening quote, but not after an abbreviation ("Inc.", "No. 5", "U.S.",
"e.g."), an initial ("J. Smith") or inside a number ("3.5"). A list item (a bulleted or numbered
line) is a unit of its own, so a list question can be answered with the items.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from docqa.search.figures import is_row

# Words that end with a period without ending a sentence (compared lower-case, without the dot).
_ABBREVIATIONS = """inc corp co ltd llc plc lp llp bros no nos nr vol vols pp p ch chap sec art
    fig figs
    tab eq eqs ref refs e.g i.e etc vs v cf al approx est dept div gov univ assn ave blvd rd
    st mt ft mr mrs ms dr prof sr jr rev hon gen col capt lt sgt jan feb mar apr jun jul aug
    sep sept oct nov dec mon tue wed thu fri sat sun u.s u.k u.n e.u a.m p.m ph.d m.d b.a
    m.a m.s u.s.a"""
ABBREVIATIONS = frozenset(_ABBREVIATIONS.split())
_CANDIDATE_END = re.compile(r"[.!?][\"'”’)\]]*\s+(?=[\"“‘(\[]?[A-Z0-9À-Ý•])")
_TERMINAL = re.compile(r"[.!?:][\"'”’)\]]*$")
_LIST_ITEM = re.compile(r"^(?:[•\-–—*▪◦●]\s*|\(?(?:\d{1,2}|[a-zA-Z]|[ivx]{1,4})[.)]\s+)")
_SPACE = re.compile(r"\s+")
HEADING_MAX_WORDS = 10
# Column heads hold at most this many lower-case words outside parentheses ("As of", "in").
HEADS_MAX_SMALL_WORDS = 4
_PARENTHESES = re.compile(r"\([^)]*\)")
_WORD_ENDING = re.compile(r"\b([A-Za-z]{3,})[.!?](?=\s|$)")
_YEAR = re.compile(r"(?<!\d)(?:19|20)\d\d(?!\d)")


@dataclass(frozen=True)
class Unit:
    text: str
    item: bool  # a list item (a bulleted or numbered line)
    fragment: bool  # cut by the edge of the passage
    lead: bool = False  # introduces a list ("... include:")
    row: bool = False  # a row of a statement
    heading: bool = False  # a title line (only when asked for)
    header: str = ""  # a row's column heads: the nearest line above it that heads columns


def _ends_sentence(text: str, dot: int) -> bool:
    """Whether the `.`, `!` or `?` at `text[dot]` ends a sentence."""
    if text[dot] != ".":
        return True
    word = re.search(r"(\S+)$", text[:dot])
    if word is None:
        return True
    token = word.group(1).lstrip("(\"'“‘[").lower()
    if token in ABBREVIATIONS or token.rstrip(".") in ABBREVIATIONS:
        return False
    if len(token) == 1 and token.isalpha():
        return False  # an initial: "J. Smith"
    # Dotted abbreviations ("U.S", "a.m") that the list does not name.
    return not re.fullmatch(r"(?:[a-z]\.)+[a-z]", token)


def split_text(text: str) -> list[str]:
    """The sentences of a run of text (no line breaks inside)."""
    out: list[str] = []
    start = 0
    for match in _CANDIDATE_END.finditer(text):
        dot = match.start()
        if _ends_sentence(text, dot):
            end = match.end()
            piece = text[start:end].strip()
            if piece:
                out.append(piece)
            start = end
    rest = text[start:].strip()
    if rest:
        out.append(rest)
    return out


def is_heading(line: str, following: str) -> bool:
    """A short line that starts like a title and holds no sentence end, standing alone or above
    a line that starts a sentence. (A wrapped line of running text ends a sentence inside, or
    starts in lower case, or ends with a comma, so it is not taken for one.)"""
    words = line.split()
    return (
        0 < len(words) <= HEADING_MAX_WORDS
        and (line[:1].isupper() or line[:1].isdigit())
        and not re.search(r"[.!?][\"'”’)\]]*(\s|$)", line)
        and not line.endswith((",", ";", ":", "-"))
        and bool(following)  # a title stands above something; the passage's last line is cut
        and (following[:1].isupper() or bool(_LIST_ITEM.match(following)))
    )


def _names_years(line: str) -> bool:
    return len(set(_YEAR.findall(line))) >= 2


def column_heads(line: str) -> bool:
    """Whether the line heads a statement's columns: it names two years or more and is not
    prose ("Fiscal Years Ended January 28, 2023 January 29, 2022", "(Millions) 2018 2017"). A
    sentence that names two years ("... at December 31, 2019 and 2018, respectively.") has an
    amount, a sentence end or a run of small words."""
    if not _names_years(line) or "$" in line:
        return False
    if any(m.group(1).lower() not in ABBREVIATIONS for m in _WORD_ENDING.finditer(line)):
        return False  # a sentence ends in it ("2015 vs. 2014" ends none)
    outside = _PARENTHESES.sub(" ", line)
    return sum(w.isalpha() and w.islower() for w in outside.split()) <= HEADS_MAX_SMALL_WORDS


Block = tuple[str, str, str]  # kind, text, and a row's column heads


def _flush(out: list[Block], prose: list[str]) -> None:
    if prose:
        out.append(("prose", _SPACE.sub(" ", " ".join(prose)).strip(), ""))
        prose.clear()


def _blocks(text: str) -> list[Block]:
    """(kind, text) of each block: "heading", "item", "row", "table" or "prose" (lines
    joined)."""
    out: list[Block] = []
    header = ""  # the last line seen that heads columns
    paragraphs = [
        [line.strip() for line in para.split("\n") if line.strip()]
        for para in re.split(r"\n\s*\n", text)
    ]
    paragraphs = [p for p in paragraphs if p]
    for n, lines in enumerate(paragraphs):
        after = paragraphs[n + 1][0] if n + 1 < len(paragraphs) else ""
        prose: list[str] = []

        rows = [is_row(line) for line in lines]
        for i, line in enumerate(lines):
            following = lines[i + 1] if i + 1 < len(lines) else after
            if rows[i] and ((i > 0 and rows[i - 1]) or (i + 1 < len(lines) and rows[i + 1])):
                _flush(out, prose)  # a statement's row, next to another
                if column_heads(line):  # shown only above a row of figures, never alone
                    out.append(("heading", line, ""))
                else:
                    out.append(("row", line, header))
            elif line.startswith("|"):
                _flush(out, prose)
                out.append(("table", line, ""))
            elif _LIST_ITEM.match(line):
                _flush(out, prose)
                out.append(("item", line, ""))
            elif out and out[-1][0] == "item" and not prose and line[:1].islower():
                out[-1] = ("item", out[-1][1] + " " + line, "")  # an item wrapped over lines
            elif is_heading(line, following) and (not prose or _TERMINAL.search(prose[-1])):
                _flush(out, prose)  # a title between two sentences is not part of either
                out.append(("heading", line, ""))
            else:
                prose.append(line)
            if column_heads(line):
                header = line
        _flush(out, prose)
    return out


def units(text: str, headings: bool = False) -> list[Unit]:
    """The sentences and list items of a passage, in order, without table lines, and without
    headings unless `headings`."""
    blocks = _blocks(text)
    out: list[Unit] = []
    last = len(blocks) - 1
    for b, (kind, block, header) in enumerate(blocks):
        if kind == "heading" and headings:
            out.append(Unit(block, item=False, fragment=False, heading=True))
            continue
        if kind in ("heading", "table"):
            continue
        if kind == "row":
            out.append(Unit(block, item=False, fragment=False, row=True, header=header))
            continue
        if kind == "item":
            item = _LIST_ITEM.sub("", block, count=1).strip()
            if item:
                out.append(Unit(item, item=True, fragment=b == last and not _TERMINAL.search(item)))
            continue
        parts = split_text(block)
        for i, part in enumerate(parts):
            cut_start = b == 0 and i == 0 and part[:1].islower()
            cut_end = b == last and i == len(parts) - 1 and not _TERMINAL.search(part)
            out.append(
                Unit(part, item=False, fragment=cut_start or cut_end, lead=part.endswith(":"))
            )
    return out
