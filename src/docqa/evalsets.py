"""Evaluation sets for `docqa eval`: reading BEIR and page-QA folders, and the metrics.

A BEIR folder has `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`) and
`qrels/test.tsv` (`query-id`, `corpus-id`, `score`). A page-QA folder has `documents/` and
`questions.jsonl`, one `{"id", "document", "question", "answer", "evidence_pages"}` per line, with
1-indexed evidence pages and optionally `evidence_sources`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from docqa import formats

Kind = Literal["beir", "pageqa"]
PAGE_KS = (1, 3, 5, 10)
# evidence_sources as MMLongBench-Doc spells them, and the short names the report uses.
SOURCE_NAMES = {
    "pure-text (plain-text)": "text",
    "table": "table",
    "chart": "chart",
    "figure": "figure",
    "generalized-text (layout)": "layout",
}


class DatasetError(Exception):
    """The folder is not a BEIR or page-QA folder, or one of its files is malformed."""


@dataclass(frozen=True)
class EvalDocument:
    """One file to ingest: either a file on disk or text made from a corpus line."""

    key: str
    filename: str
    kind: str
    path: Path | None = None
    text: str | None = None

    @property
    def content_type(self) -> str:
        return formats.get(self.kind).media_type

    def read(self) -> bytes:
        if self.path is not None:
            return self.path.read_bytes()
        return (self.text or "").encode()


@dataclass(frozen=True)
class EvalQuery:
    id: str
    text: str
    # BEIR: graded relevance of corpus ids. Page-QA: empty.
    qrels: dict[str, int] = field(default_factory=dict)
    # Page-QA: the one document the question is about, its evidence pages and sources.
    document: str | None = None
    pages: frozenset[int] = frozenset()
    sources: tuple[str, ...] = ()
    # Page-QA: the gold answer, and whether the document holds one at all.
    answer: str = ""
    answerable: bool = True


@dataclass(frozen=True)
class Dataset:
    name: str
    kind: Kind
    documents: list[EvalDocument]
    queries: list[EvalQuery]


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{number}: not a JSON object")
            yield row


def load(folder: Path, limit_docs: int | None = None, questions: Path | None = None) -> Dataset:
    """Read a BEIR or page-QA folder; `limit_docs` keeps the first N documents (quick runs);
    `questions` replaces a page-QA folder's questions.jsonl."""
    try:
        if (folder / "corpus.jsonl").is_file():
            return load_beir(folder, limit_docs)
        if questions is not None or (folder / "questions.jsonl").is_file():
            return load_pageqa(folder, limit_docs, questions)
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{folder}: a line lacks a field or has a bad value ({exc!r})") from None
    raise DatasetError(
        f"{folder} is neither a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) "
        "nor a page-QA folder (documents/, questions.jsonl)."
    )


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) < 3 or row[0] == "query-id":
                continue
            try:
                qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
            except ValueError:
                raise DatasetError(f"{path}: bad relevance score {row[2]!r}") from None
    return qrels


def load_beir(folder: Path, limit_docs: int | None = None) -> Dataset:
    qrels_path = folder / "qrels" / "test.tsv"
    if not qrels_path.is_file():
        raise DatasetError(f"{qrels_path} is missing")
    documents = []
    for row in _jsonl(folder / "corpus.jsonl"):
        title, body = str(row.get("title") or "").strip(), str(row.get("text") or "").strip()
        text = f"{title}\n\n{body}" if title else body
        key = str(row["_id"])
        documents.append(EvalDocument(key, f"{key}.txt", "text", text=text))
    if limit_docs is not None:
        documents = documents[:limit_docs]
    keys = {d.key for d in documents}
    qrels = _read_qrels(qrels_path)
    queries = []
    for row in _jsonl(folder / "queries.jsonl"):
        judged = {
            doc: grade for doc, grade in qrels.get(str(row["_id"]), {}).items() if doc in keys
        }
        # Only queries with a relevant document in the corpus can be scored.
        if any(grade > 0 for grade in judged.values()):
            queries.append(EvalQuery(str(row["_id"]), str(row["text"]), qrels=judged))
    return Dataset(folder.name, "beir", documents, queries)


def source_name(raw: str) -> str:
    return SOURCE_NAMES.get(raw.strip().lower(), raw.strip().lower())


def load_pageqa(
    folder: Path, limit_docs: int | None = None, questions: Path | None = None
) -> Dataset:
    """A page-QA folder. A question with `"answerable": false` has no answer in its document
    (it needs no evidence pages); an answerable one without evidence pages is skipped."""
    doc_dir = folder / "documents" if (folder / "documents").is_dir() else folder
    queries = []
    for row in _jsonl(questions or folder / "questions.jsonl"):
        answerable = row.get("answerable", True) is not False
        pages = frozenset(int(p) for p in row.get("evidence_pages") or [])
        if answerable and not pages:
            continue
        sources = tuple(source_name(str(s)) for s in row.get("evidence_sources") or [])
        queries.append(
            EvalQuery(
                str(row["id"]),
                str(row["question"]),
                document=str(row["document"]),
                pages=pages,
                sources=sources,
                answer=str(row.get("answer") or ""),
                answerable=answerable,
            )
        )
    names = sorted({q.document for q in queries if q.document is not None})
    if limit_docs is not None:
        names = names[:limit_docs]
    documents = []
    for name in names:
        path = doc_dir / name
        fmt = formats.by_extension(path.name)
        if fmt is None:
            raise DatasetError(f"{path}: docqa does not read this kind of file")
        if not path.is_file():
            raise DatasetError(f"{path} is missing")
        documents.append(EvalDocument(name, name, fmt.kind, path=path))
    kept = set(names)
    queries = [q for q in queries if q.document in kept]
    return Dataset(folder.name, "pageqa", documents, queries)


def ndcg_at(ranked: Sequence[str], qrels: dict[str, int], k: int = 10) -> float:
    """nDCG@k with linear gains, as trec_eval and BEIR compute it."""
    dcg = sum(qrels.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: Sequence[str], qrels: dict[str, int], k: int = 100) -> float:
    relevant = {doc for doc, g in qrels.items() if g > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def page_hits(pages: Sequence[int], evidence: frozenset[int]) -> dict[str, float]:
    """hit@k for each k: 1 when any of the top-k chunks lies on an evidence page."""
    return {f"hit@{k}": float(any(p in evidence for p in pages[:k])) for k in PAGE_KS}


def mean(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    return {key: round(sum(r[key] for r in rows) / len(rows), 4) for key in rows[0]}
