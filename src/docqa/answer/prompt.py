"""What the model reads: numbered sources within a token budget, the conversation, the question;
and the rewrite of a follow-up question into one that stands alone.

Token counts use the embedding model's word-piece tokenizer. It is not the chat model's own, but
word pieces run close to (and usually above) BPE counts for English, so a budget in word pieces
is a safe budget for the model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from docqa.answer.llm import ChatMessage
from docqa.search.retrieve import Hit

SYSTEM_PROMPT = (
    "You answer questions about the user's documents using only the numbered sources given "
    "with the question, never your own knowledge. After every statement, cite the source it "
    "comes from by its number in square brackets, like [1] or [2][3]. If the sources do not "
    'hold the answer, reply "I couldn\'t find this in your documents." and do not guess. '
    "Answer in the language of the question, briefly."
)

REWRITE_PROMPT = (
    "Rewrite the user's last question so that it can be understood without the conversation "
    "before it: resolve pronouns and references, keep every name and number. Reply with the "
    "rewritten question only."
)

# Share of the context budget the earlier conversation may take; the rest holds the sources.
HISTORY_SHARE = 0.25


class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...


def fit_sources(hits: Sequence[Hit], budget: int) -> list[Hit]:
    """The best-ranked hits whose text fits in `budget` tokens together (at least one).

    A hit's size is the token count its chunk was cut to, with the same tokenizer.
    """
    kept: list[Hit] = []
    used = 0
    for hit in hits:
        cost = hit.token_count + 12  # the "[n] file, page p" header line
        if kept and used + cost > budget:
            continue  # a shorter, lower-ranked source may still fit
        kept.append(hit)
        used += cost
    return kept


def _source_block(n: int, hit: Hit) -> str:
    return f"[{n}] {hit.filename}, page {hit.page}\n{hit.text.strip()}"


def fit_history(
    history: Sequence[ChatMessage], counter: TokenCounter, budget: int
) -> list[ChatMessage]:
    """The most recent turns of the conversation that fit in `budget` tokens, oldest first."""
    kept: list[ChatMessage] = []
    used = 0
    for turn in reversed(history):
        cost = counter.count(turn["content"]) + 4
        if used + cost > budget:
            break
        kept.append(turn)
        used += cost
    kept.reverse()
    # A conversation handed to the model starts with the user, not with an orphaned reply.
    while kept and kept[0]["role"] != "user":
        kept.pop(0)
    return kept


def answer_messages(
    question: str,
    sources: Sequence[Hit],
    history: Sequence[ChatMessage],
    counter: TokenCounter,
    budget: int,
) -> list[ChatMessage]:
    """System prompt, the fitted conversation, then the numbered sources and the question."""
    blocks = "\n\n".join(_source_block(n, hit) for n, hit in enumerate(sources, start=1))
    turns = fit_history(history, counter, int(budget * HISTORY_SHARE))
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        *turns,
        {"role": "user", "content": f"Sources:\n\n{blocks}\n\nQuestion: {question}"},
    ]


def rewrite_messages(
    question: str, history: Sequence[ChatMessage], counter: TokenCounter, budget: int
) -> list[ChatMessage]:
    lines = [
        f"{'User' if t['role'] == 'user' else 'Assistant'}: {t['content'].strip()}"
        for t in fit_history(history, counter, budget)
    ]
    conversation = "\n".join(lines)
    return [
        {"role": "system", "content": REWRITE_PROMPT},
        {
            "role": "user",
            "content": f"Conversation:\n{conversation}\n\nLast question: {question}",
        },
    ]


def clean_rewrite(reply: str, question: str) -> str:
    """The model's rewritten question, stripped of labels and quotes; the original if empty."""
    text = reply.strip().splitlines()[0].strip() if reply.strip() else ""
    # Models like to label their reply: "Standalone question: ...", "Last question: ...".
    text = re.sub(r"^(?:[a-z]+\s+){0,2}question\s*:\s*", "", text, flags=re.IGNORECASE)
    text = text.strip().strip("\"'“”").strip()
    return text[:2000] if text else question


# Words that carry no topic: a follow-up inherits only the content words of what came before.
_STOPWORDS = """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    tell show give explain describe list please also else ever much many may might must shall
    let lets s t don't doesn't isn't aren't wasn't weren't it's that's what's one ones thing
    things"""
STOPWORDS = frozenset(_STOPWORDS.split())
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)


def content_words(text: str) -> list[str]:
    """The lower-cased words of `text` that are not stop words, in order, without repeats."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word not in STOPWORDS and (len(word) > 1 or word.isdigit()):
            seen.setdefault(word, None)
    return list(seen)


def rewrite_without_model(question: str, history: Sequence[ChatMessage]) -> str:
    """A deterministic standalone question: the last user question's content words that the
    follow-up lacks, prepended to it ("zorblax reactor capacity" + "And in 2021?")."""
    previous = next((t["content"] for t in reversed(history) if t["role"] == "user"), "")
    have = set(content_words(question))
    carried = [w for w in content_words(previous) if w not in have]
    if not carried:
        return question
    return f"{' '.join(carried)} {question}"
