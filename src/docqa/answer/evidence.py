"""Whether the retrieved evidence answers the question at all: the extractive answerer's
"not in your documents".

Two rules, measured on MMLongBench's answerable questions and on off-topic questions asked of
its documents (docs/quality.md):

- Weak evidence: the best sentence is barely like the question (cosine below
  `SENTENCE_FLOOR`) and neither is the nearest chunk (below `CHUNK_FLOOR`). Together they
  refused 88% of 150 off-topic questions ("What is the capital of France?" asked of a 10-K)
  while refusing 2.8% of the answerable questions whose evidence page was retrieved.
- A year the documents never mention: "What was the share in 2024?" asked of a 2018 report.
  It refused 7 of MMLongBench's 59 unanswerable questions and 4 of its 293 answerable ones
  (years written only inside charts).

MMLongBench's unanswerable questions are mostly near misses (the right topic, a detail the
document lacks) that no evidence threshold separates from answerable ones: together the rules
refuse about a fifth of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from docqa.answer.support import NOT_FOUND

SENTENCE_FLOOR = 0.28
CHUNK_FLOOR = 0.27
_YEAR = re.compile(r"(?<![\w.,/-])(1[89]\d\d|20\d\d)(?![\w.,/-]?\d)")


def years_in(question: str) -> list[str]:
    """The calendar years a question names (1800 to 2099), as written."""
    return list(dict.fromkeys(_YEAR.findall(question)))


@dataclass(frozen=True)
class Evidence:
    sentence_similarity: float  # the best sentence's cosine similarity to the question
    chunk_similarity: float | None  # the nearest chunk's (None: no vector side ran)
    unmentioned_years: tuple[str, ...] = ()  # years the question names that no document does

    @property
    def weak(self) -> bool:
        return self.sentence_similarity < SENTENCE_FLOOR and (
            self.chunk_similarity is None or self.chunk_similarity < CHUNK_FLOOR
        )

    def answers(self) -> bool:
        return not self.weak and not self.unmentioned_years

    def reason(self) -> str:
        """Why the documents do not hold the answer, in a sentence (for a refusal)."""
        if self.unmentioned_years:
            shown = " or ".join(self.unmentioned_years)
            return f"{NOT_FOUND.removesuffix('.')}: they never mention {shown}."
        return NOT_FOUND
