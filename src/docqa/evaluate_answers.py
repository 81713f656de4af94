"""`docqa eval --answers`: the answers themselves, through the real ask path, on a page-QA folder.

Every document is ingested as `docqa eval` does; every question goes through `Answerer.start`
with its one document, exactly as `/api/v1/ask` answers it, with the configured answerer (a model
server, or the extractive one). Reported:

- answer hit: the gold answer appears in the answer, after folding case, punctuation and the
  ways numbers are written (1,234.5; $1.2 billion; 12 %); a list answer needs every item;
- refusal: the share of unanswerable questions answered "not in your documents", and the share
  of answerable ones refused (the false refusals), overall and where an evidence page was among
  the sources;
- citation precision: the share of cited sources whose page is an evidence page.
"""

from __future__ import annotations

import ast
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from sqlalchemy import select

from docqa.answer import Answerer, Question
from docqa.answer.support import MARKER, cited
from docqa.db.models import Document
from docqa.evalsets import DatasetError, EvalQuery, load
from docqa.evaluate import ProgressFn, ingested_run, no_progress
from docqa.search.rerank import make_reranker
from docqa.settings import Settings

_SCALE = {"thousand": "e3", "million": "e6", "billion": "e9", "trillion": "e12"}


def normalise(text: str) -> str:
    """Text folded for matching: lower case, numbers without grouping commas or currency signs,
    "percent" as "%", scales spelled out attached ("1.2 billion" → "1.2e9"), punctuation and
    runs of spaces folded."""
    text = text.lower().replace("’", "'")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = re.sub(r"[$€£¥]\s*", "", text)
    text = re.sub(r"\s*(percent|per cent|pct)\b", "%", text)
    text = re.sub(r"\s+%", "%", text)
    text = re.sub(
        r"(\d+(?:\.\d+)?)\s*(thousand|million|billion|trillion)\b",
        lambda m: m.group(1) + _SCALE[m.group(2)],
        text,
    )
    text = re.sub(r"(?<=\d)\.0+\b", "", text)  # 12.0 → 12
    text = re.sub(r"[^\w%.\-e ]+", " ", text)
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text)
    return " ".join(text.split())


def gold_items(answer: str) -> list[str]:
    """The parts a gold answer has: a list's items (MMLongBench writes lists as Python lists),
    or the answer itself."""
    stripped = answer.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            value = ast.literal_eval(stripped)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, list) and value:
            return [str(v) for v in value]
    return [stripped]


def answer_hit(gold: str, answer: str) -> bool:
    """Whether every part of the gold answer appears in the answer, once both are folded."""
    folded = f" {normalise(answer)} "
    items = [normalise(item) for item in gold_items(gold)]
    return bool(items) and all(item and f" {item} " in folded for item in items)


@dataclass
class Scored:
    query: EvalQuery
    answered: bool
    hit: bool
    evidence_retrieved: bool
    cited_pages: list[int]
    seconds: float


def cited_pages(text: str, pages: Sequence[int]) -> list[int]:
    """The page of each source the text cites."""
    numbers = [n for m in MARKER.finditer(text) for n in cited(m.group(1))]
    return [pages[n - 1] for n in numbers if 1 <= n <= len(pages)]


async def answer_one(
    answerer: Answerer, owner_id: str, document_id: str, query: EvalQuery
) -> Scored:
    started = time.perf_counter()
    answer = await answerer.start(owner_id, Question(query.text, (document_id,)))
    try:
        async for _ in answer.deltas():
            pass
    finally:
        await answer.aclose()
    pages = [hit.page for hit in answer.sources]
    return Scored(
        query=query,
        answered=answer.answered,
        hit=query.answerable and answer_hit(query.answer, answer.text),
        evidence_retrieved=any(p in query.pages for p in pages),
        cited_pages=cited_pages(answer.text, pages),
        seconds=time.perf_counter() - started,
    )


def summarise(rows: Sequence[Scored]) -> dict[str, Any]:
    answerable = [r for r in rows if r.query.answerable]
    unanswerable = [r for r in rows if not r.query.answerable]
    retrieved = [r for r in answerable if r.evidence_retrieved]
    cited = [p for r in answerable for p in r.cited_pages]
    good = sum(p in r.query.pages for r in answerable for p in r.cited_pages)

    def share(part: int, whole: int) -> float | None:
        return round(part / whole, 4) if whole else None

    return {
        "answer_hit": share(sum(r.hit for r in answerable), len(answerable)),
        "refusal_rate_unanswerable": share(
            sum(not r.answered for r in unanswerable), len(unanswerable)
        ),
        "false_refusal_rate": share(sum(not r.answered for r in answerable), len(answerable)),
        "false_refusal_rate_evidence_retrieved": share(
            sum(not r.answered for r in retrieved), len(retrieved)
        ),
        "citation_precision": share(good, len(cited)),
        "counts": {
            "answerable": len(answerable),
            "unanswerable": len(unanswerable),
            "evidence_retrieved": len(retrieved),
            "citations": len(cited),
        },
        "seconds_per_answer": round(statistics.median(r.seconds for r in rows), 3)
        if rows
        else None,
    }


async def run_answer_eval(
    settings: Settings,
    folder: Path,
    *,
    questions: Path | None = None,
    limit_docs: int | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Ingest the folder's documents into a fresh owner, answer every question, and score."""
    dataset = load(folder, limit_docs, questions)
    if dataset.kind != "pageqa":
        raise DatasetError(f"{folder}: answers are measured on a page-QA folder")
    report_progress = progress or no_progress
    async with ingested_run(settings, dataset, report_progress) as run:
        async with run.db.session() as session:
            result = await session.execute(
                select(Document.pk, Document.document_id).where(Document.owner_id == run.owner_id)
            )
            ids = {pk: document_id for pk, document_id in result.all()}
        # Answers are reranked as the server reranks them, when a rerank server is configured.
        reranker = make_reranker(run.settings)
        answerer = Answerer.from_settings(run.settings, run.db, run.embedder, reranker)
        try:
            rows: list[Scored] = []
            for number, query in enumerate(dataset.queries, start=1):
                report_progress("answering", number, len(dataset.queries))
                pk = run.ingested.pks.get(query.document or "")
                if pk is None:
                    continue  # its document failed to ingest: reported under documents
                rows.append(await answer_one(answerer, run.owner_id, ids[pk], query))
        finally:
            await answerer.aclose()
            if reranker is not None:
                await reranker.aclose()
        return {
            "dataset": dataset.name,
            "kind": "answers",
            "mode": answerer.mode,
            "reranked": reranker is not None,
            "answers": summarise(rows),
            "documents": {
                "total": len(dataset.documents),
                "ready": len(run.ingested.pks),
                "failed": run.ingested.failed,
            },
        }


def report_table(report: dict[str, Any]) -> Table:
    answers = report["answers"]
    counts = answers["counts"]
    table = Table(
        title=f"{report['dataset']}: answers ({report['mode']}), {counts['answerable']} answerable "
        f"and {counts['unanswerable']} unanswerable questions"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, label in (
        ("answer_hit", "answer hit"),
        ("refusal_rate_unanswerable", "refused, unanswerable"),
        ("false_refusal_rate", "refused, answerable (false refusals)"),
        ("false_refusal_rate_evidence_retrieved", "false refusals, evidence retrieved"),
        ("citation_precision", "citation precision"),
        ("seconds_per_answer", "seconds per answer (median)"),
    ):
        value = answers[key]
        table.add_row(label, "n/a" if value is None else f"{value:.3f}")
    return table
