"""Answering one question: which documents, the standalone question, retrieval, and an answer
stream that is already open when `Answerer.start` returns.

Everything that can fail before the first word (an unknown or unready document, the model
server down) fails inside `start`, so the HTTP layer can still answer with a plain error.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select

from docqa import documents
from docqa.answer import extractive
from docqa.answer.evidence import (
    MAX_NAME_WORDS,
    Evidence,
    names_in,
    subject_words,
    word_forms,
    years_in,
)
from docqa.answer.llm import LLM, ChatMessage, CompletionStream, make_llm
from docqa.answer.prompt import (
    answer_messages,
    clean_rewrite,
    fit_sources,
    rewrite_messages,
    rewrite_without_model,
)
from docqa.answer.reply import Answer, Checks, Mode, Quote, TextStream, check_model_reply
from docqa.answer.support import CLOSEST
from docqa.db.engine import Database
from docqa.db.models import Document
from docqa.errors import DocumentNotFound, DocumentNotReady
from docqa.ingest.embed import Embedder, Tokenizer
from docqa.search.lexical import Library, Scope, presence
from docqa.search.rerank import Reranker
from docqa.search.retrieve import SearchStats, retrieve
from docqa.search.vector import drop_embedding, start_embedding
from docqa.settings import Settings

REWRITE_MAX_TOKENS = 96
# When the documents do not hold the answer, this many of the closest sentences are shown.
CLOSEST_SHOWN = 2


@dataclass(frozen=True)
class Question:
    """What was asked: the text, the documents to answer from (none: all that are ready), how
    many sources to retrieve (None: the configured default) and the conversation so far."""

    text: str
    document_ids: Sequence[str] = ()
    top_k: int | None = None
    history: Sequence[ChatMessage] = ()


async def document_scope(db: Database, owner_id: str, document_ids: Sequence[str]) -> Scope:
    """What to search: the named documents' primary keys, which must all be ready, or else the
    whole library (every ready document of the owner)."""
    if document_ids:
        pks: list[uuid.UUID] = []
        for document_id in dict.fromkeys(document_ids):
            doc = await documents.get_document(db, owner_id, document_id)
            if doc.status != "ready":
                raise DocumentNotReady(
                    _not_ready_sentence(document_id, doc.status),
                    status=doc.status,
                    document_id=document_id,
                )
            pks.append(doc.pk)
        return pks
    async with db.session() as session:
        ready = await session.scalar(
            select(func.count()).where(Document.owner_id == owner_id, Document.status == "ready")
        )
        if ready:
            return Library(ready)
        rows = await session.execute(
            select(Document.status, func.count())
            .where(Document.owner_id == owner_id)
            .group_by(Document.status)
        )
        # Not dict(rows): a Result has .keys() (its column names), so dict() would misread it.
        counts = {status: count for status, count in rows.tuples()}
    if not counts:
        raise DocumentNotFound("You have no documents yet: upload one, then ask about it.")
    raise DocumentNotReady(
        "None of your documents is ready yet; ask again when one is.",
        status=next(s for s in ("processing", "queued", "failed") if s in counts),
        statuses=counts,
    )


def _follows_up(question: Question) -> bool:
    return any(t["role"] == "user" for t in question.history)


def _not_ready_sentence(document_id: str, status: str) -> str:
    if status == "failed":
        return f"The document '{document_id}' could not be processed, so it cannot be asked about."
    return f"The document '{document_id}' is {status}, not ready yet; ask again when it is ready."


@dataclass(frozen=True)
class Unwritten:
    """What of a question none of the searched documents holds."""

    unmentioned: tuple[str, ...] = ()  # years and names
    absent: tuple[str, ...] = ()  # subject words
    subject_count: int = 0  # subject words the index keeps


class Answerer:
    """Answers questions for one process: holds the database, the embedder and the model."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        embedder: Embedder,
        llm: LLM | None,
        reranker: Reranker | None = None,
    ) -> None:
        self._settings = settings
        self._reranker = reranker  # owned by the caller, who closes it
        self._db = db
        self._embedder = embedder
        self._llm = llm
        # Only the model's prompt needs token counts; the extractive answerer never loads this.
        self._tokenizer = Tokenizer() if llm is not None else None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        db: Database,
        embedder: Embedder,
        reranker: Reranker | None = None,
    ) -> Answerer:
        return cls(settings, db, embedder, make_llm(settings), reranker)

    @property
    def mode(self) -> Mode:
        return "extractive" if self._llm is None else "llm"

    async def aclose(self) -> None:
        if self._llm is not None:
            await self._llm.aclose()

    async def standalone(self, question: Question) -> str:
        """The question rewritten to stand alone, when it follows earlier turns."""
        if not _follows_up(question):
            return question.text
        if self._llm is None or self._tokenizer is None:
            return rewrite_without_model(question.text, question.history)
        messages = rewrite_messages(
            question.text, question.history, self._tokenizer, self._settings.llm_context_tokens
        )
        reply = await self._llm.complete(messages, max_tokens=REWRITE_MAX_TOKENS)
        return clean_rewrite(reply, question.text)

    async def _unwritten(
        self, owner_id: str, pks: Scope, question: str, own: str | None = None
    ) -> Unwritten:
        """What of `question` none of the documents holds: its years and names
        (`unmentioned`), and the subject words of `own` (the words the user wrote, when
        `question` is a follow-up made to stand alone; `absent`, of `subject_count` the index
        keeps). One lookup in the postings."""
        years = years_in(question)
        names: dict[str, list[str]] = {}
        for name in names_in(question):
            if sum(map(len, names.values())) + len(name.split()) > MAX_NAME_WORDS:
                break
            names[name] = name.split()
        forms = {word: word_forms(word) for words in names.values() for word in words}
        subjects = subject_words(question if own is None else own)
        if not years and not forms and not subjects:
            return Unwritten()
        spellings = (form for spellings in forms.values() for form in spellings)
        wanted = list(dict.fromkeys([*years, *spellings, *subjects]))
        async with self._db.session() as session:
            found = await presence(session, owner_id=owner_id, document_pks=pks, forms=wanted)

        def absent(word: str) -> bool:
            # A word the index does not keep (a stop word) cannot be looked for.
            return word.lower() in found and not any(found.get(f) for f in forms[word])

        unmentioned = [year for year in years if found.get(year) is False]
        unmentioned += [name for name, words in names.items() if any(map(absent, words))]
        kept = [word for word in subjects if word in found]
        return Unwritten(tuple(unmentioned), tuple(w for w in kept if not found[w]), len(kept))

    async def start(self, owner_id: str, question: Question) -> Answer:
        """Resolve the documents, retrieve, and open the answer stream.

        Raises `DocumentNotFound`, `DocumentNotReady`, or a model error, before any text exists.
        """
        # A question that stands alone is embedded while its documents are looked up.
        embedding = None
        if not _follows_up(question):
            embedding = start_embedding(self._embedder, question.text)
        question_vector: list[float] | None = None  # the extractive answerer reuses it
        try:
            pks = await document_scope(self._db, owner_id, question.document_ids)
            standalone = await self.standalone(question)
            started = time.perf_counter()
            stats = SearchStats()
            hits = await retrieve(
                self._db,
                self._embedder,
                owner_id=owner_id,
                document_pks=pks,
                question=standalone,
                top_k=question.top_k or self._settings.ask_top_k,
                query_vector=embedding,
                reranker=self._reranker,
                rerank_candidates=self._settings.rerank_candidates,
                stats=stats,
            )
            retrieval_ms = (time.perf_counter() - started) * 1000
            if (
                embedding is not None
                and embedding.done()
                and not embedding.cancelled()
                and embedding.exception() is None
            ):
                question_vector = embedding.result()
        finally:
            if embedding is not None:  # done by now, unless a document was unknown or not ready
                await drop_embedding(embedding)
        checks = Checks(self._db, self._embedder)
        if not hits:
            stream: CompletionStream = TextStream("", "no_sources")
            return Answer(self.mode, standalone, [], retrieval_ms, stream, checks, answered=False)
        if self._llm is None or self._tokenizer is None:
            # The follow-up's own words lead; what it inherits from the conversation helps.
            context = standalone if standalone != question.text else ""
            selection, unwritten = await asyncio.gather(
                asyncio.to_thread(
                    extractive.select,
                    question.text,
                    hits,
                    self._embedder,
                    context,
                    question_vector,
                ),
                self._unwritten(owner_id, pks, standalone, question.text),
            )
            evidence = Evidence(
                selection.similarity,
                stats.best_similarity,
                unwritten.unmentioned,
                unwritten.absent,
                unwritten.subject_count,
                follows_up=standalone != question.text,
            )
            answered = evidence.answers()
            text = extractive.compose(selection.sentences)
            chosen = selection.sentences
            if not answered:
                # Said plainly, then the nearest passages, labelled as such, never as an answer.
                chosen = selection.sentences[:CLOSEST_SHOWN]
                text = f"{evidence.reason()}\n\n{CLOSEST}\n\n{extractive.compose(chosen)}"
            quotes = [Quote(s.source, s.text) for s in chosen]
            return Answer(
                "extractive",
                standalone,
                list(hits),
                retrieval_ms,
                TextStream(text, "stop"),
                checks,
                answered=answered,
                quotes=quotes,
            )
        budget = self._settings.llm_context_tokens
        sources = fit_sources(hits, budget)
        messages = answer_messages(
            question.text, sources, question.history, self._tokenizer, budget
        )
        stream = await self._llm.stream(messages, max_tokens=self._settings.llm_max_tokens)
        return Answer(
            "llm",
            standalone,
            sources,
            retrieval_ms,
            stream,
            checks,
            answered=False,
            conclude_hook=check_model_reply,
        )
