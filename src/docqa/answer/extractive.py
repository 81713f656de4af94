"""The built-in extractive answerer, used when no model server is configured.

It answers with the sentences of the retrieved passages that best support the question, each
followed by its citation `[n]`, in reading order. It never writes a word of its own: every
sentence is copied from a passage (only its line breaks and runs of spaces are folded).

Sentences are scored by term overlap with the question (weighted by how rare each term is among
the candidates), by the similarity of their embedding to the question's, and by the rank of the
passage they come from. Only a shortlist is embedded, to keep the time to first word short.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from docqa.answer.prompt import content_words
from docqa.ingest.embed import Embedder
from docqa.search.retrieve import Hit

MAX_SENTENCES = 4
MAX_WORDS = 140
SHORTLIST = 24
MIN_WORDS = 4
# A term only the earlier conversation has counts this much of one the question has.
CONTEXT_WEIGHT = 0.3
# A sentence joins the answer only if it scores at least this share of the best sentence.
RELATIVE_FLOOR = 0.75
WEIGHT_SEMANTIC, WEIGHT_LEXICAL, WEIGHT_RANK = 0.55, 0.35, 0.10
FRAGMENT_PENALTY = 0.8
WORDS_PER_DELTA = 3

_SPACE = re.compile(r"\s+")
# A sentence ends at . ! or ? (with any closing quotes or brackets) before a capital, digit or
# opening quote; abbreviations like "e.g." followed by a lower-case word do not end one.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"“‘(\[]?[A-Z0-9À-Ý])")
_TERMINAL = re.compile(r"[.!?][\"'”’)\]]*$")
_SENTENCE_INSIDE = re.compile(r"[.!?][\"'”’)\]]*(\s|$)")


@dataclass(frozen=True)
class Sentence:
    source: int  # 1-based number of the source it is cited as
    order: tuple[int, int, int]  # reading order: (document group, chunk id, position)
    page_key: tuple[str, int]
    text: str
    fragment: bool


def _blocks(text: str) -> Iterator[tuple[str, bool]]:
    """Paragraphs with their line breaks folded, each with whether it is a heading."""
    for para in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in para.split("\n") if line.strip()]
        current: list[str] = []
        for i, line in enumerate(lines):
            following = lines[i + 1] if i + 1 < len(lines) else ""
            if not current and _is_heading(line, following):
                yield line, True
                continue
            current.append(line)
        if current:
            yield _SPACE.sub(" ", " ".join(current)).strip(), False


def _is_heading(line: str, following: str) -> bool:
    """A short line that starts like a title and holds no sentence end, standing alone or above
    a line that starts a sentence. (A wrapped line of running text ends a sentence inside, or
    starts in lower case, or ends with a comma, so it is not taken for one.)"""
    return (
        0 < len(line.split()) <= 8
        and (line[:1].isupper() or line[:1].isdigit())
        and not _SENTENCE_INSIDE.search(line)
        and not line.endswith((",", ";", ":", "-"))
        and (not following or following[:1].isupper())
    )


def split_sentences(text: str) -> list[tuple[str, bool]]:
    """The sentences of a passage (headings left out), each with whether it is a fragment cut
    by the edge of the passage."""
    out: list[tuple[str, bool]] = []
    blocks = list(_blocks(text))
    for b, (block, heading) in enumerate(blocks):
        if heading:
            continue
        parts = [p.strip() for p in _SENTENCE_END.split(block) if p.strip()]
        for i, part in enumerate(parts):
            cut_start = b == 0 and i == 0 and part[:1].islower()
            cut_end = b == len(blocks) - 1 and i == len(parts) - 1 and not _TERMINAL.search(part)
            out.append((part, cut_start or cut_end))
    return out


def candidates(hits: Sequence[Hit]) -> list[Sentence]:
    """Every distinct sentence of the hits, first occurrence kept (passages overlap)."""
    groups: dict[object, int] = {}
    seen: set[str] = set()
    out: list[Sentence] = []
    for n, hit in enumerate(hits, start=1):
        group = groups.setdefault(hit.document_pk, len(groups))
        for pos, (text, fragment) in enumerate(split_sentences(hit.text)):
            key = text.lower()
            if key in seen or len(text.split()) < MIN_WORDS:
                continue
            seen.add(key)
            out.append(
                Sentence(
                    source=n,
                    order=(group, hit.chunk_id, pos),
                    page_key=(hit.document_id, hit.page),
                    text=text,
                    fragment=fragment,
                )
            )
    return out


def _stem(word: str) -> str:
    """A light English stemmer: enough that "crossing", "crosses" and "cross" meet."""
    for suffix, keep in (("sses", "ss"), ("ies", "y"), ("ing", ""), ("ed", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + keep
    if word.endswith("es") and word[:-2].endswith(("s", "x", "z", "ch", "sh")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _terms(text: str) -> set[str]:
    return {_stem(w) for w in content_words(text)}


def lexical_scores(question: str, sentences: Sequence[Sentence], context: str = "") -> list[float]:
    """The rarity-weighted share of the question's terms each sentence contains. Terms that
    only the conversation before (`context`) has count for `CONTEXT_WEIGHT` of their rarity."""
    s_terms = [_terms(s.text) for s in sentences]
    own = _terms(question)
    weights = {t: CONTEXT_WEIGHT for t in _terms(context) - own} | dict.fromkeys(own, 1.0)
    if not weights or not sentences:
        return [0.0] * len(sentences)
    n = len(sentences)
    idf = {
        t: w * math.log((n + 1) / (sum(t in st for st in s_terms) + 0.5))
        for t, w in weights.items()
    }
    total = sum(idf.values()) or 1.0
    return [sum(v for t, v in idf.items() if t in st) / total for st in s_terms]


def select(
    question: str, hits: Sequence[Hit], embedder: Embedder, context: str = ""
) -> list[Sentence]:
    """The sentences that best answer `question`, in reading order. `context` is what the
    question inherits from the conversation (its standalone form). Blocking: it runs the
    embedding model, so call it from a thread."""
    sentences = candidates(hits)
    if not sentences:
        return _opening(hits)
    lexical = lexical_scores(question, sentences, context)
    rank = [1.0 / s.source for s in sentences]
    prior = [WEIGHT_LEXICAL * lx + WEIGHT_RANK * rk for lx, rk in zip(lexical, rank, strict=True)]
    shortlist = sorted(range(len(sentences)), key=lambda i: -prior[i])[:SHORTLIST]
    qvec = embedder.embed_query(question)
    svecs = embedder.embed_documents([sentences[i].text for i in shortlist])
    similarity = np.asarray(svecs @ qvec, dtype=np.float64)
    scored: list[tuple[float, int]] = []
    for i, sim in zip(shortlist, similarity, strict=True):
        score = WEIGHT_SEMANTIC * max(float(sim), 0.0) + prior[i]
        if sentences[i].fragment:
            score *= FRAGMENT_PENALTY
        scored.append((score, i))
    scored.sort(reverse=True)
    best = scored[0][0]
    chosen: list[Sentence] = []
    words = 0
    for score, i in scored:
        sentence = sentences[i]
        length = len(sentence.text.split())
        if len(chosen) >= MAX_SENTENCES or score < RELATIVE_FLOOR * best:
            break
        if chosen and words + length > MAX_WORDS:
            continue
        chosen.append(sentence)
        words += length
    return sorted(chosen, key=lambda s: s.order)


def _opening(hits: Sequence[Hit]) -> list[Sentence]:
    """When no passage holds a whole sentence (tables, lists), the start of the best passage."""
    if not hits:
        return []
    words = _SPACE.sub(" ", hits[0].text).strip().split(" ")
    text = " ".join(words[:MAX_WORDS])
    if not text:
        return []
    key = (hits[0].document_id, hits[0].page)
    return [
        Sentence(source=1, order=(0, hits[0].chunk_id, 0), page_key=key, text=text, fragment=True)
    ]


def compose(sentences: Sequence[Sentence]) -> str:
    """The answer text: each sentence and its citation; a new paragraph where the page changes."""
    parts: list[str] = []
    previous: tuple[str, int] | None = None
    for sentence in sentences:
        if previous is not None:
            parts.append(" " if sentence.page_key == previous else "\n\n")
        parts.append(f"{sentence.text} [{sentence.source}]")
        previous = sentence.page_key
    return "".join(parts)


def deltas(text: str, words_per_delta: int = WORDS_PER_DELTA) -> Iterator[str]:
    """`text` in small pieces (a few words, each with the whitespace after it) that join back
    to exactly `text`."""
    pieces = re.findall(r"\s*\S+\s*", text) if text.strip() else []
    for i in range(0, len(pieces), words_per_delta):
        yield "".join(pieces[i : i + words_per_delta])
