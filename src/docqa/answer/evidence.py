"""Whether the retrieved evidence answers the question at all: the extractive answerer's
"not in your documents".

Four rules, measured on MMLongBench's questions and on off-topic questions asked of its
documents (docs/quality.md):

- Weak evidence: the best sentence is barely like the question (cosine below
  `SENTENCE_FLOOR`) and neither is the nearest chunk (below `CHUNK_FLOOR`). Together they
  refused 88% of 150 off-topic questions ("How do I bake sourdough bread?" asked of a 10-K)
  while refusing 2.8% of the answerable questions whose evidence page was retrieved.
- A year the documents never mention: "What was the share in 2024?" asked of a 2018 report.
  It refused 7 of MMLongBench's 59 unanswerable questions and 4 of its 293 answerable ones
  (years written only inside charts).
- A name the documents never mention, under any spelling one letter off: "Which agency does
  Lebron Brennan belong to?" asked of a report that names no Lebron Brennan, or NIKE's revenue
  asked of Costco's 10-K. With the other two, 43% of the unanswerable questions were refused
  (22% without it), and 7.3% of the answerable ones whose evidence was retrieved (5.3%):
  names written only inside pictures, such as a logo's.

- Unfamiliar words: at least 60% of the question's subject words (`subject_words`) are written
  nowhere in the documents, and neither the best sentence nor the nearest chunk reaches a
  cosine of 0.35: "How do I knit a scarf?" asked of a watch's manual, or gibberish. With the
  others, off-topic questions (`scripts/offtopic_questions.py`) were refused 95.3% of the time
  (90.0% without it), unanswerable MMLongBench questions 48.3% (41.7%), and answerable ones
  whose evidence was retrieved 8.4% (6.8%), with no answer hit lost.

The rest of MMLongBench's unanswerable questions are near misses (the right topic and names,
a detail the document lacks) that no evidence threshold separates from answerable ones.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from docqa.answer.prompt import content_words
from docqa.answer.support import NOT_FOUND

SENTENCE_FLOOR = 0.28
CHUNK_FLOOR = 0.27
# Unfamiliar words: when at least this share of what the question asks about is written nowhere
# in the documents, evidence must be at least this like the question (sentence or chunk).
UNFAMILIAR_SHARE = 0.6
UNFAMILIAR_FLOOR = 0.35
# Names this long or longer also match a mistyped form (one letter off) and the words they begin
# with, so that "Neflix" and "Singaporean" find "Netflix" and "Singapore".
LOOSE_FROM = 6
# The names of at most this many words are looked for (each word costs up to ~400 lookups).
MAX_NAME_WORDS = 12
_YEAR = re.compile(r"(?<![\w.,/-])(1[89]\d\d|20\d\d)(?![\w.,/-]?\d)")
_SENTENCE_END = re.compile(r"[.?!:;]+[\"'”’)]*\s+|\n+")
# A word, with the marks that join words inside a name ("Contact.Meet", "After-tax"); an
# apostrophe ends it ("Japan's").
_WORD = re.compile(r"[^\W_](?:[^\W_]|&|[./_-](?=[^\W_]))*")  # letters of any script
_PARTS = re.compile(r"[./_&-]+")
# Capitalised words that ask, instruct or name a kind of thing or a unit, not something the
# documents must mention; months and weekdays, which a date written in figures leaves out.
_NOT_NAME_WORDS = """
    what which who whom whose when where why how is are was were do does did can could would
    will should shall may might has have had please according answer give write list round
    format enumerate return save represent tell show name find provide state describe
    explain compare calculate among based note the a an in of for this that these those and
    or but if from to by with on at as it its page pages table tables figure figures fig
    chart charts section sections appendix chapter part slide slides document report paper
    image picture photo diagram graph example examples step steps item items line lines row
    rows column columns total fy usd eur gbp jpy cny inr ceo cfo coo cto eps roe roa ebit
    ebitda gaap ipo yoy qoq faq ii iii iv vi vii viii ix ok id yyyy yy mm dd hh january
    february march april may june july august september october november december jan feb
    mar apr jun jul aug sep sept oct nov dec monday tuesday wednesday thursday friday
    saturday sunday
"""
_NOT_NAMES = frozenset(_NOT_NAME_WORDS.split())


def subject_words(question: str) -> list[str]:
    """The words a question asks about, lower-cased: not stop words, not words that ask,
    instruct or name a kind of thing (`_NOT_NAMES`: "answer", "page", "chart"), not figures or
    years."""
    return [
        word
        for word in content_words(question)
        if word not in _NOT_NAMES and len(word) > 2 and not any(c.isdigit() for c in word)
    ]


def years_in(question: str) -> list[str]:
    """The calendar years a question names (1800 to 2099), as written."""
    return list(dict.fromkeys(_YEAR.findall(question)))


def names_in(question: str) -> list[str]:
    """The names a question uses: runs of words capitalised inside a sentence ("Lebron Brennan",
    "Apple Inc"), or with a capital past their first letter anywhere ("NIKE", "LLaVa"). Not
    names: words that ask or instruct ("Please", "Answer"), units and months, words with a
    figure ("FY2021", "GPT-4"), an acronym the question spells out ("days payable outstanding
    (DPO)"), and anything in a sentence written in capitals, where case says nothing."""
    names: list[str] = []
    for sentence in _SENTENCE_END.split(question):
        if not any(c.islower() for c in sentence):
            continue
        matches = list(_WORD.finditer(sentence))
        words = [m.group() for m in matches]
        run: list[str] = []
        end = 0
        for position, (word, match) in enumerate(zip(words, matches, strict=True)):
            if run and not sentence[end : match.start()].isspace():
                names.append(" ".join(run))  # a comma or other mark ends a run
                run = []
            if _is_name(word, position, words[:position]):
                run.append(word)
                end = match.end()
            elif run:
                names.append(" ".join(run))
                run = []
        if run:
            names.append(" ".join(run))
    return list(dict.fromkeys(names))


def _is_name(word: str, position: int, before: list[str]) -> bool:
    parts = [part for part in _PARTS.split(word.lower()) if part]
    if any(c.isdigit() for c in word) or all(p in _NOT_NAMES or len(p) < 2 for p in parts):
        return False  # "FY2021", "Answer", "YYYY-MM-DD", initials ("U.S.")
    if word.isupper() and len(word) <= len(before):
        initials = "".join(w[0] for w in before[-len(word) :]).upper()
        if initials == word:
            return False  # spelled out just before it
    return any(c.isupper() for c in word[1:]) or (position > 0 and word[0].isupper())


def word_forms(word: str) -> list[str]:
    """The forms under which the documents may hold `word`: itself, and its parts when marks
    join them ("after tax" for "After-tax"). For a plain word of `LOOSE_FROM` letters or more,
    also the words it begins with and every spelling one letter off (a letter left out, added,
    changed or swapped, or a space put in), keeping its first letter."""
    word = word.lower()
    forms = [word]
    parts = [part for part in _PARTS.split(word) if len(part) > 1]
    if len(parts) > 1 or (parts and parts[0] != word):
        forms.append(" ".join(parts))
    if len(word) < LOOSE_FROM or not word.isalpha():
        return forms
    forms += [word[:cut] for cut in range(LOOSE_FROM, len(word))]
    letters = string.ascii_lowercase
    for i in range(1, len(word) + 1):
        head, tail = word[:i], word[i:]
        forms += [head + letter + tail for letter in letters]  # a letter added
        if tail:
            forms.append(head + tail[1:])  # left out
            forms += [head + letter + tail[1:] for letter in letters if letter != tail[0]]
            forms.append(head + " " + tail)  # a space put in
        if len(tail) > 1:
            forms.append(head + tail[1] + tail[0] + tail[2:])  # swapped
    return list(dict.fromkeys(forms))


@dataclass(frozen=True)
class Evidence:
    sentence_similarity: float  # the best sentence's cosine similarity to the question
    chunk_similarity: float | None  # the nearest chunk's (None: no vector side ran)
    unmentioned: tuple[str, ...] = ()  # years and names the question uses that no document does
    # The question's subject words (`subject_words`) that no document holds, and how many of
    # them the index keeps at all.
    absent_words: tuple[str, ...] = ()
    subject_count: int = 0
    # A follow-up searched with words of the turn before: its nearest chunk was found for them
    # too, so only its own sentence similarity says how close the passages are to what it asks.
    follows_up: bool = False

    def _below(self, floor_sentence: float, floor_chunk: float) -> bool:
        return self.sentence_similarity < floor_sentence and (
            self.chunk_similarity is None or self.chunk_similarity < floor_chunk
        )

    @property
    def weak(self) -> bool:
        return self._below(SENTENCE_FLOOR, CHUNK_FLOOR)

    @property
    def unfamiliar(self) -> bool:
        """Most of what the question asks about is written nowhere in the documents, and no
        passage is close to it: "How do I knit a scarf?" asked of a watch's manual."""
        return (
            self.subject_count > 0
            and len(self.absent_words) >= UNFAMILIAR_SHARE * self.subject_count
            and self._below(UNFAMILIAR_FLOOR, 1.0 if self.follows_up else UNFAMILIAR_FLOOR)
        )

    def answers(self) -> bool:
        return not self.weak and not self.unmentioned and not self.unfamiliar

    def reason(self) -> str:
        """Why the documents do not hold the answer, in a sentence (for a refusal)."""
        if self.unmentioned:
            shown = " or ".join(self.unmentioned)
            return f"{NOT_FOUND.removesuffix('.')}: they never mention {shown}."
        if self.unfamiliar:
            quoted = [f"\u201c{word}\u201d" for word in self.absent_words]
            shown = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
            plural = "s" if len(quoted) > 1 else ""
            return f"{NOT_FOUND.removesuffix('.')}: they never use the word{plural} {shown}."
        return NOT_FOUND
