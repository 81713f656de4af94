"""Checking an answer against its sources: citations that name no source, claims their sources
do not support, and replies that say the documents do not hold the answer.

A model's reply streams through `CitationFilter`, which drops a marker like `[7]` when there is
no source 7. Once the reply is complete, each sentence that cites sources gets a support score
against them (`claim_support`): the share of its content words the source holds, and the
similarity of its embedding to the source's best sentence. A citation is supported when a claim
citing it clears `SUPPORTED_AT`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from docqa.answer.sentences import split_text, units
from docqa.ingest.embed import Embedder

NOT_FOUND = "I couldn't find this in your documents."
CLOSEST = "The closest passages I found:"
# [3], [2][5], [2, 5], [2-4]: what a model writes to cite.
MARKER = re.compile(r"\[(\d{1,3}(?:\s*[,–-]\s*\d{1,3})*)\]")
_REFUSALS = re.compile(
    r"(couldn'?t|could not|can ?not|can'?t|unable to|did not|didn'?t) "
    r"(find|locate|answer|determine)"
    r"|(sources|documents|passages|context|texts?) (provided |given )?(do|does) not "
    r"(contain|include|mention|say|provide|hold|specify|state)"
    r"|no (information|mention|details?|data) (about|on|regarding|of)"
    r"|not (mentioned|specified|stated|provided|found|available) in the",
    re.IGNORECASE,
)
# A claim is supported when its support score reaches this (0 to 1; see `claim_support`).
SUPPORTED_AT = 0.5
WEIGHT_WORDS, WEIGHT_MEANING = 0.5, 0.5


def cited(marker: str) -> list[int]:
    """The source numbers one marker names: "2, 5" → [2, 5]; "2-4" → [2, 3, 4]."""
    numbers: list[int] = []
    for part in re.split(r"\s*,\s*", marker):
        if m := re.fullmatch(r"(\d+)\s*[–-]\s*(\d+)", part):
            a, b = int(m.group(1)), int(m.group(2))
            numbers += list(range(a, b + 1)) if 0 < b - a < 20 else [a, b]
        elif part.isdigit():
            numbers.append(int(part))
    return numbers


class CitationFilter:
    """Removes citation markers that name no source from a streamed reply. A `[` is held back
    until its marker is complete, so a delta never carries half a marker it may drop."""

    def __init__(self, sources: int) -> None:
        self.sources = sources
        self._held = ""

    def _clean(self, text: str) -> str:
        def keep(match: re.Match[str]) -> str:
            valid = [n for n in cited(match.group(1)) if 1 <= n <= self.sources]
            return "".join(f"[{n}]" for n in dict.fromkeys(valid))

        return MARKER.sub(keep, text)

    def feed(self, delta: str) -> str:
        text = self._held + delta
        cut = text.rfind("[")
        if cut != -1 and "]" not in text[cut:] and len(text) - cut <= 16:
            self._held, text = text[cut:], text[:cut]
        else:
            self._held = ""
        return self._clean(text)

    def flush(self) -> str:
        text, self._held = self._held, ""
        return self._clean(text)


def refuses(text: str) -> bool:
    """Whether a reply says the documents do not hold the answer."""
    return bool(_REFUSALS.search(text))


@dataclass(frozen=True)
class Claim:
    text: str  # the sentence, without its markers
    sources: tuple[int, ...]


def claims(reply: str) -> list[Claim]:
    """The sentences of a reply that cite sources, each with the sources it cites. A marker at
    the start of a sentence belongs to the sentence before (models write "… 2021. [3]")."""
    out: list[Claim] = []
    for line in reply.split("\n"):
        sentences: list[str] = []
        for piece in split_text(line.strip()):
            lead = re.match(r"^(\s*\[[^\]]*\]\s*)+", piece)
            if lead and sentences:
                sentences[-1] += " " + lead.group().strip()
                piece = piece[lead.end() :]
            if piece.strip():
                sentences.append(piece)
        for sentence in sentences:
            numbers = tuple(n for m in MARKER.finditer(sentence) for n in cited(m.group(1)))
            text = " ".join(MARKER.sub(" ", sentence).split())
            if numbers and len(text.split()) >= 2:
                out.append(Claim(text, tuple(dict.fromkeys(numbers))))
    return out


def source_sentences(text: str) -> list[str]:
    return [u.text for u in units(text)] or [" ".join(text.split())]


@dataclass(frozen=True)
class Support:
    score: float  # 0 to 1
    sentence: str  # the source sentence that supports the claim best


@dataclass(frozen=True)
class Check:
    """One citation to check: a claim, its content words, the cited source and its words."""

    claim: str
    content_words: set[str]
    source: str
    source_words: set[str]


def claims_support(checks: Sequence[Check], embedder: Embedder) -> list[Support]:
    """How well each check's source supports its claim: half the share of the claim's content
    words the source holds, half the best cosine between the claim and one of the source's
    sentences (below 0.3 counts as nothing).

    Every claim and every sentence of the cited sources is embedded in one pass of the model,
    each once: a pass per citation had made the end of an answer wait on the model once for
    each. Blocking: it runs the embedding model."""
    texts: list[str] = []
    claim_at: dict[str, int] = {}
    sentences_at: dict[str, tuple[int, list[str]]] = {}
    for check in checks:
        if check.claim not in claim_at:
            claim_at[check.claim] = len(texts)
            texts.append(check.claim)
        if check.source not in sentences_at:
            sentences = source_sentences(check.source)
            sentences_at[check.source] = (len(texts), sentences)
            texts += sentences
    if not texts:
        return []
    vectors = embedder.embed_documents(texts)
    out: list[Support] = []
    for check in checks:
        words = check.content_words
        share = len(words & check.source_words) / len(words) if words else 0.0
        start, sentences = sentences_at[check.source]
        similarity = np.asarray(
            vectors[start : start + len(sentences)] @ vectors[claim_at[check.claim]],
            dtype=np.float64,
        )
        best = int(np.argmax(similarity))
        meaning = max(0.0, (float(similarity[best]) - 0.3) / 0.7)
        out.append(Support(WEIGHT_WORDS * share + WEIGHT_MEANING * meaning, sentences[best]))
    return out
