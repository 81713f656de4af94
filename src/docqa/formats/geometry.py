"""Where a span of page text sits: rectangles from a page's word boxes, one per line.

Rectangles are `[x0, y0, x1, y1]` in page fractions, origin top-left, so any renderer can draw
them over a page image of any size.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

Rect = list[float]


def _same_line(a: Sequence[float], b: Sequence[float]) -> bool:
    """Boxes on one line: they overlap vertically by most of the smaller one's height, and the
    second does not start far to the left of the first (a new column, a new line)."""
    overlap = min(a[3], b[3]) - max(a[1], b[1])
    height = min(a[3] - a[1], b[3] - b[1])
    return height > 0 and overlap >= 0.5 * height and b[0] >= a[0] - 0.5 * height


def rects_for_span(words: Sequence[Sequence[float]], start: int, end: int) -> list[Rect]:
    """The rectangles covering the words of `[start, end)` (a word partly inside counts).
    `words` are a page's, in the order of its text (`Page.words`), so the words of a span are
    one run of them, found by bisection: a chunk of a 10-K page no longer reads its page's
    600 words."""
    lines: list[Rect] = []
    first = bisect.bisect_right(words, float(start), key=lambda word: word[1])  # first ending after
    for i in range(first, len(words)):
        word = words[i]
        if word[0] >= end:
            break
        box = [float(v) for v in word[2:6]]
        if lines and _same_line(lines[-1], box):
            last = lines[-1]
            last[0], last[1] = min(last[0], box[0]), min(last[1], box[1])
            last[2], last[3] = max(last[2], box[2]), max(last[3], box[3])
        else:
            lines.append(box)
    return [[round(v, 4) for v in rect] for rect in lines]
