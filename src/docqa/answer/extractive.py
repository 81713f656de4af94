"""The built-in extractive answerer, used when no model server is configured.

It answers with the sentences (or list items, or rows of a statement under their column heads)
of the retrieved passages that best answer the question, each followed by its citation `[n]`, in
reading order. It never writes a word of its own: every sentence is copied from a passage (only
its line breaks and runs of spaces are folded), apart from the fixed sentence that says the
documents do not hold the answer.

Sentences are scored by the similarity of their embedding to the question's, by how many of the
question's terms they hold (weighted by rarity), by what they add to the question (a sentence
that only repeats the question's words is worth little; a number for "how many", a name for
"who", a reason for "why" is worth more), and by the rank of their passage. A list question gets
the items of the best list. Only a shortlist is embedded, to keep the time to first word short.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from docqa.answer.prompt import content_words
from docqa.answer.sentences import units
from docqa.ingest.embed import Embedder
from docqa.search.expand import line_items, measure_parts
from docqa.search.figures import asks_for_figure, row_label
from docqa.search.retrieve import Hit

MAX_SENTENCES = 4
MAX_ITEMS = 8
MAX_WORDS = 140
SHORTLIST = 24
MIN_WORDS = 4
# A term only the earlier conversation has counts this much of one the question has.
CONTEXT_WEIGHT = 0.3
# A sentence joins the answer only if it scores at least this share of the best sentence.
RELATIVE_FLOOR = 0.75
WEIGHT_SEMANTIC, WEIGHT_LEXICAL, WEIGHT_RANK, WEIGHT_INFO = 0.5, 0.3, 0.1, 0.1
FRAGMENT_PENALTY = 0.8
# A sentence whose content words are nearly all the question's own restates it.
RESTATES_BELOW = 0.34
WORDS_PER_DELTA = 3
# A question's term that half the passages or more hold (of three or more) counts this much: it
# names what they are all about ("NIKE" asked of NIKE's 10-K), not what tells them apart.
SUBJECT_SHARE, SUBJECT_WEIGHT, SUBJECT_MIN_SOURCES = 0.5, 0.5, 3
# Words this long or longer meet the longer words they begin (`family`).
FAMILY_PREFIX = 6

_SPACE = re.compile(r"\s+")
_NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|"
    "sixty|seventy|eighty|ninety|hundred|thousand|million|billion|dozen|half|twice"
)
_NUMBER = re.compile(rf"\d|\b({_NUMBER_WORDS})\b", re.IGNORECASE)
# A number as a whole token: "1,577", "3.5", "2023", "twelve".
_NUMBER_TOKEN = re.compile(rf"\d[\d,.]*\d|\d|\b({_NUMBER_WORDS})\b", re.IGNORECASE)
_CAUSAL = re.compile(
    r"\b(because|due to|as a result|owing to|caused by|result(?:ed|s)? (?:from|in)|since|"
    r"so that|in order to|driven by|led to|reason)\b",
    re.IGNORECASE,
)
_NAME = re.compile(r"(?<=[a-z,;] )[A-Z][a-zA-Z&.-]+")
_ACRONYM_QUESTION = re.compile(
    r"\bstands? for\b|\bfull (form|name)\b|\babbreviat|\bacronym\b|"
    r"^\s*what (does|do|is|are) [A-Z][A-Za-z0-9&]{1,9} mean\b",
    re.IGNORECASE,
)
_ACRONYM = re.compile(r"\b[A-Z][A-Z0-9&]*[A-Z][A-Z0-9&]*s?\b")  # NARL, R&D, GPUs
_SPELLING_WORD = re.compile(r"[A-Za-z][\w'’-]*")
_JOINING_WORDS = frozenset({"of", "and", "for", "the", "in", "on", "at", "to", "a", "an", "de"})
_LIST_QUESTION = re.compile(
    r"^\s*(what|which)\s+(are|were)\b|^\s*(list|name|enumerate)\b|"
    r"\b(what|which) (\w+ )?(hurdles|factors|reasons|challenges|risks|steps|types|kinds|"
    r"benefits|barriers|ways|features|components|examples|methods|products|services|"
    r"countries|companies|groups|items|options|problems|issues|areas)\b"
    r"|^\s*(what|which) \w+s (do|did|are|were|have|has|can|could|would|will|should|might)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Sentence:
    source: int  # 1-based number of the source it is cited as
    order: tuple[int, int, int]  # reading order: (document group, chunk id, position)
    page_key: tuple[str, int]
    text: str
    fragment: bool
    item: bool = False
    lead: bool = False  # introduces a list
    row: bool = False  # a row of a statement, shown on a line of its own
    header: str = ""  # a row's column heads ("January 28, 2023 January 29, 2022")


@dataclass(frozen=True)
class Selection:
    """The sentences chosen, in reading order, and how well the best of them answers."""

    sentences: list[Sentence]
    similarity: float  # the best sentence's cosine similarity to the question
    coverage: float  # the share of the question's terms (by rarity) the best sentence holds


def question_kind(question: str) -> str:
    """What kind of answer the question wants: what an acronym stands for, a number, a person, a
    reason, a list, or other."""
    if acronym_asked(question):
        return "acronym"
    if asks_for_figure(question):
        return "number"
    if re.match(r"^\s*(who|whom|whose)\b", question, re.IGNORECASE):
        return "who"
    if re.match(r"^\s*why\b", question, re.IGNORECASE) or re.search(
        r"\b(reason|cause)s?\b", question, re.IGNORECASE
    ):
        return "why"
    if _LIST_QUESTION.search(question):
        return "list"
    return "other"


def candidates(hits: Sequence[Hit], acronym: str = "") -> list[Sentence]:
    """Every distinct sentence and list item of the hits, first occurrence kept (passages
    overlap). When the question asks what `acronym` stands for, a heading that spells it out
    ("National Atmospheric Research Laboratory (NARL)") is a candidate too."""
    groups: dict[object, int] = {}
    seen: set[str] = set()
    out: list[Sentence] = []
    for n, hit in enumerate(hits, start=1):
        group = groups.setdefault(hit.document_pk, len(groups))
        for pos, unit in enumerate(units(hit.text, headings=bool(acronym))):
            if unit.heading and not spells_out(acronym, unit.text):
                continue
            key = unit.text.lower()
            if key in seen or (len(unit.text.split()) < MIN_WORDS and not unit.item):
                continue
            seen.add(key)
            out.append(
                Sentence(
                    source=n,
                    order=(group, hit.chunk_id, pos),
                    page_key=(hit.document_id, hit.page),
                    text=unit.text,
                    fragment=unit.fragment,
                    item=unit.item,
                    lead=unit.lead,
                    row=unit.row,
                    header=unit.header,
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


def terms(text: str) -> set[str]:
    return {_stem(w) for w in content_words(text)}


def family(term: str, vocabulary: set[str]) -> set[str]:
    """`term` and the words of `vocabulary` of its family: one of at least `FAMILY_PREFIX`
    letters begins the other ("employ" and "employee", "operat" and "operations"), which the
    light stemmer leaves apart."""
    if len(term) < FAMILY_PREFIX:
        return {term}
    return {term} | {
        w
        for w in vocabulary
        if w.startswith(term) or (len(w) >= FAMILY_PREFIX and term.startswith(w))
    }


def lexical_scores(question: str, sentences: Sequence[Sentence], context: str = "") -> list[float]:
    """The rarity-weighted share of the question's terms each sentence contains (a word of the
    term's `family` counts). Terms that only the conversation before (`context`) has count for
    `CONTEXT_WEIGHT` of their rarity, and terms most passages hold for `SUBJECT_WEIGHT`."""
    s_terms = [terms(s.text) for s in sentences]
    own = terms(question)
    weights = {t: CONTEXT_WEIGHT for t in terms(context) - own} | dict.fromkeys(own, 1.0)
    if not weights or not sentences:
        return [0.0] * len(sentences)
    vocabulary = set().union(*s_terms)
    families = {t: family(t, vocabulary) for t in weights}
    n = len(sentences)
    # A term most of the passages share names what they are all about (the company a filing is
    # by): it tells none of their sentences apart.
    sources: dict[int, set[str]] = {}
    for sentence, st in zip(sentences, s_terms, strict=True):
        sources.setdefault(sentence.source, set()).update(st)
    if len(sources) >= SUBJECT_MIN_SOURCES:
        for t in weights:
            if sum(bool(families[t] & v) for v in sources.values()) >= SUBJECT_SHARE * len(sources):
                weights[t] *= SUBJECT_WEIGHT
    idf = {
        t: w * math.log((n + 1) / (sum(bool(families[t] & st) for st in s_terms) + 0.5))
        for t, w in weights.items()
    }
    total = sum(idf.values()) or 1.0
    return [sum(v for t, v in idf.items() if families[t] & st) / total for st in s_terms]


def novelty(question_terms: set[str], sentence: str) -> float:
    """The share of the sentence's content words that the question does not already have."""
    own = terms(sentence)
    return len(own - question_terms) / len(own) if own else 0.0


def acronym_asked(question: str) -> str:
    """The acronym whose meaning the question asks ("What does NARL stand for?"), or ""."""
    if not _ACRONYM_QUESTION.search(question):
        return ""
    found = _ACRONYM.findall(question)
    return found[0] if len(found) == 1 else ""


def spells_out(acronym: str, sentence: str) -> bool:
    """Whether the sentence holds words whose capitals spell `acronym`, joined by small words
    if need be: "National Atmospheric Research Laboratory" for NARL, "Bureau of Labor
    Statistics" for BLS."""
    words = _SPELLING_WORD.findall(sentence)
    letters = "".join(c for c in acronym if c.isupper())  # "R&D": R, D; "GPUs": G, P, U
    if len(letters) < 2:
        return False
    for start, first in enumerate(words):
        if first[0] != letters[0]:
            continue
        matched = 0
        for word in words[start:]:
            if word[0] == letters[matched]:
                matched += 1
                if matched == len(letters):
                    return True
            elif word.lower() not in _JOINING_WORDS:
                break
    return False


def information(kind: str, sentence: str, question: str, acronym: str = "") -> float:
    """How much the sentence offers of the kind of answer asked for (0 to 1); `acronym` is the
    one an "acronym" question asks about (`acronym_asked`)."""
    if kind == "acronym":
        return 1.0 if spells_out(acronym, sentence) else 0.0
    if kind == "number":
        return 1.0 if _new_numbers(sentence, question) else 0.0
    if kind == "who":
        names = {m for m in _NAME.findall(sentence) if m.lower() not in question.lower()}
        return 1.0 if names else 0.0
    if kind == "why":
        return 1.0 if _CAUSAL.search(sentence) else 0.0
    if kind == "list":
        return 1.0 if ("," in sentence or ";" in sentence) else 0.3
    return 0.5 if _NUMBER.search(sentence) or _NAME.search(sentence) else 0.0


def _new_numbers(sentence: str, question: str) -> bool:
    """Whether the sentence holds a number the question does not: the year a question asks
    about ("at the end of fiscal 2023") answers nothing."""
    asked = {m.group(0).lower() for m in _NUMBER_TOKEN.finditer(question)}
    return any(m.group(0).lower() not in asked for m in _NUMBER_TOKEN.finditer(sentence))


def select(
    question: str,
    hits: Sequence[Hit],
    embedder: Embedder,
    context: str = "",
    question_vector: Sequence[float] | None = None,
) -> Selection:
    """The sentences that best answer `question`, in reading order. `context` is what the
    question inherits from the conversation (its standalone form). `question_vector`, the
    embedder's vector of `question` when the caller has it already (retrieval made it), saves
    a model call on the way to the first word. Blocking: it runs the embedding model, so call
    it from a thread."""
    acronym = acronym_asked(question)
    sentences = candidates(hits, acronym)
    if not sentences:
        return Selection(_opening(hits), 0.0, 0.0)
    kind = question_kind(question)
    q_terms = terms(question)
    # The line items of a financial measure the question names count as its own words:
    # "capital expenditure" is answered by "Purchases of property, plant and equipment".
    lexical = lexical_scores(f"{question} {measure_parts(question)}", sentences, context)
    prior = [
        WEIGHT_LEXICAL * lx
        + WEIGHT_RANK / s.source
        + WEIGHT_INFO * information(kind, s.text, question, acronym)
        for s, lx in zip(sentences, lexical, strict=True)
    ]
    shortlist = sorted(range(len(sentences)), key=lambda i: -prior[i])[:SHORTLIST]
    if kind == "list":  # the items of a list travel with the sentence that leads into them
        shortlist = _with_list_items(sentences, shortlist)
    qvec = (
        embedder.embed_query(question)
        if question_vector is None
        else np.asarray(question_vector, dtype=np.float32)
    )
    # A row is also compared with the question by its label alone, which its figures blur
    # ("Working capital" of "Working capital (1) 1,902,216 1,263,899 883,049"); the closer counts.
    rows = [i for i in shortlist if sentences[i].row]
    svecs = embedder.embed_documents(
        [sentences[i].text for i in shortlist] + [row_label(sentences[i].text) for i in rows]
    )
    similarity = np.asarray(svecs @ qvec, dtype=np.float64)
    by_label = dict(zip(rows, similarity[len(shortlist) :], strict=True))
    similarity = np.asarray(
        [
            max(sim, by_label.get(i, sim))
            for i, sim in zip(shortlist, similarity[: len(shortlist)], strict=True)
        ]
    )
    scored: list[tuple[float, int]] = []
    restating: list[tuple[float, int]] = []
    sims: dict[int, float] = {}
    for i, sim in zip(shortlist, similarity, strict=True):
        sims[i] = float(sim)
        score = WEIGHT_SEMANTIC * max(float(sim), 0.0) + prior[i]
        if sentences[i].fragment or (sentences[i].lead and kind != "list"):
            # Half a sentence, or one that only leads into what follows ("... were as follows:")
            score *= FRAGMENT_PENALTY
        # A sentence that only restates the question answers nothing: it is used only when
        # every candidate does.
        if novelty(q_terms, sentences[i].text) < RESTATES_BELOW:
            restating.append((score, i))
        else:
            scored.append((score, i))
    scored = sorted(scored or restating, reverse=True)
    best_score, best = scored[0]
    if kind == "list" and (items := _list_answer(sentences, scored)):
        chosen = items
    else:
        chosen = _pick(sentences, scored, best_score)
    if kind == "number":
        chosen += _line_item_rows(question, sentences, prior, chosen)
    chosen = _with_headers(sorted(chosen, key=lambda s: s.order))
    # How well the passages answer is judged on their sentences: a short row of figures is like
    # many questions by one shared word ("France 100%" for "What is the capital of France?").
    judged = next((i for _, i in scored if not sentences[i].row), best)
    return Selection(chosen, sims[judged], lexical[judged])


def _line_item_rows(
    question: str, sentences: Sequence[Sentence], prior: Sequence[float], chosen: list[Sentence]
) -> list[Sentence]:
    """For a question about a financial measure ("What is Nike's current ratio?"), the rows of
    the line items it is computed from ("Total current assets", "Total current liabilities")
    that the answer does not hold yet: the best row whose label has every word of the item."""
    items = line_items(question)
    labels = {i: terms(row_label(s.text)) for i, s in enumerate(sentences) if s.row and items}
    added: list[Sentence] = []
    for item in items:
        wanted = terms(item)
        rows = [i for i, label in labels.items() if wanted <= label]
        if rows and not any(sentences[i] in chosen or sentences[i] in added for i in rows):
            added.append(sentences[max(rows, key=lambda i: prior[i])])
    return added


def _with_headers(chosen: Sequence[Sentence]) -> list[Sentence]:
    """The sentences, each row of a statement after its column heads (once), so that "Basic
    earnings per share $ 6.31 $ 9.94" says which figure is which year."""
    out: list[Sentence] = []
    shown = {s.text for s in chosen}
    for sentence in chosen:
        if sentence.row and sentence.header and sentence.header not in shown:
            shown.add(sentence.header)
            out.append(dataclasses.replace(sentence, text=sentence.header, header=""))
        out.append(sentence)
    return out


def _pick(
    sentences: Sequence[Sentence], scored: Sequence[tuple[float, int]], best: float
) -> list[Sentence]:
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
    return chosen


def _with_list_items(sentences: Sequence[Sentence], shortlist: list[int]) -> list[int]:
    """The shortlist, plus the list items that follow any list lead in it."""
    extra: list[int] = []
    for i in shortlist:
        if sentences[i].lead:
            j = i + 1
            while j < len(sentences) and sentences[j].item and j - i <= MAX_ITEMS:
                extra.append(j)
                j += 1
    return list(dict.fromkeys([*shortlist, *extra]))


def _list_answer(
    sentences: Sequence[Sentence], scored: Sequence[tuple[float, int]]
) -> list[Sentence]:
    """For a list question: the best list (its lead, if any, and its items), when one of its
    items or its lead is among the best sentences."""
    best = scored[0][0]
    for score, i in scored[:6]:
        if score < RELATIVE_FLOOR * best:
            break
        found = sentences[i]
        if not (found.item or found.lead):
            continue
        start = i
        while (
            start > 0
            and sentences[start].item
            and sentences[start - 1].source == found.source
            and (sentences[start - 1].item or sentences[start - 1].lead)
        ):
            start -= 1
        members = [sentences[start]] if sentences[start].lead else []
        j = start + len(members)
        while (
            j < len(sentences)
            and sentences[j].item
            and sentences[j].source == found.source
            and len(members) <= MAX_ITEMS
        ):
            members.append(sentences[j])
            j += 1
        if sum(m.item for m in members) >= 2:
            return members
    return []


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
    """The answer text: each sentence and its citation; list items on lines of their own; a new
    paragraph where the page changes."""
    parts: list[str] = []
    previous: Sentence | None = None
    for sentence in sentences:
        if previous is not None:
            if sentence.item or (sentence.row and previous.row):
                parts.append("\n")
            elif sentence.page_key != previous.page_key:
                parts.append("\n\n")
            else:
                parts.append("\n\n" if previous.item else " ")
        text = f"• {sentence.text}" if sentence.item else sentence.text
        parts.append(f"{text} [{sentence.source}]")
        previous = sentence
    return "".join(parts)


def deltas(text: str, words_per_delta: int = WORDS_PER_DELTA) -> Iterator[str]:
    """`text` in small pieces (a few words, each with the whitespace after it) that join back
    to exactly `text`."""
    pieces = re.findall(r"\s*\S+\s*", text) if text.strip() else []
    for i in range(0, len(pieces), words_per_delta):
        yield "".join(pieces[i : i + words_per_delta])
