"""Figures: the rows of a statement in a passage, and questions that ask for a figure.

Shared by retrieval (a question that asks for a figure prefers passages made of figures) and by
the extractive answerer (which quotes a statement's rows under their column heads).
"""

from __future__ import annotations

import re

from docqa.search.expand import measure_parts

# A figure: an amount, a count, a percentage or a dash for none ("$ 1,874", "(12.5)", "3%",
# "(15)%", "—"), or a sign written apart from its figure ("14 %", "$ 8.50").
_FIGURE = re.compile(r"[$€£¥]?\(?[-–—]?\d[\d,.]*%?\)?%?|[-–—]|[$€£¥%]")
_FIGURE_ENDS = frozenset(")%-–—$€£¥.,")
_SENTENCE_INSIDE = re.compile(r"[.!?][\"'”’)\]]*\s+[A-Z]")
_LEADER = re.compile(r"(\.\s?){4,}|…")  # a contents line's dots: "Removing the grille ..... 16"


def _split_figures(line: str) -> tuple[list[str], list[str]]:
    """A line's words, and the figures at its end."""
    words = line.split()
    figures = 0
    while figures < len(words) and _FIGURE.fullmatch(words[-1 - figures]):
        figures += 1
    return words[: len(words) - figures], words[len(words) - figures :]


def row_label(line: str) -> str:
    """What a row of a statement is about: its words without the figures at its end
    ("Working capital" of "Working capital (1) 1,902,216 1,263,899": a footnote mark is
    taken for a figure)."""
    return " ".join(_split_figures(line)[0])


def is_row(line: str) -> bool:
    """A line of a statement: words, then one or more figures, and no sentence inside."""
    line = line.rstrip()
    if not line or not (line[-1].isdigit() or line[-1] in _FIGURE_ENDS):
        return False  # the quick answer for most lines of prose
    words = line.split()
    label = _split_figures(line)[0]
    return (
        any(w.isalpha() for w in label)
        and any(c.isdigit() for w in words[len(label) :] for c in w)
        and not _SENTENCE_INSIDE.search(line)
        and not _LEADER.search(line)
    )


# A question that asks how many, how much, what share, when, or for an amount of money.
_NUMBER_QUESTION = re.compile(
    r"^\s*(how (many|much|long|old|often|far|large|big)|what (percentage|percent|share|"
    r"proportion|number|amount|year|date|fraction|ratio|rate)|when\b|in which year)"
    r"|^\s*what (was|were|is|are)\b.*\b(revenue|revenues|income|sales|profit|profits|cost|"
    r"costs|price|value|growth|margin|total|net|gross|average|amount|number|rate|ratio|debt|"
    r"earnings|expenses?|assets|liabilities|cash|dividends?|eps|share|percentage)\b",
    re.IGNORECASE,
)

_REASON_OR_WAY = re.compile(r"\s*(why|how(?! (many|much))|explain|describe)\b", re.IGNORECASE)


def asks_for_number(question: str) -> bool:
    """Whether the question asks how many, how much, what share or amount, or when."""
    return bool(_NUMBER_QUESTION.search(question))


def asks_for_figure(question: str) -> bool:
    """Whether the answer is a figure: a number, or the value of a financial measure the
    question names ("What was working capital in 2023?"), unless it asks why or how."""
    return asks_for_number(question) or (
        bool(measure_parts(question)) and not _REASON_OR_WAY.match(question)
    )


def _tabular(line: str) -> bool:
    return is_row(line) or (line.startswith("|") and any(c.isdigit() for c in line))


def figure_share(text: str) -> float:
    """The share of a passage's lines that are rows of figures: a statement's lines ("Total
    current assets 8,802 10,539"), or a Markdown table's lines that hold a figure."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    return sum(map(_tabular, lines)) / len(lines) if lines else 0.0
