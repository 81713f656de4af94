"""`docqa eval`: retrieval quality, measured through the real pipeline.

Every document goes the way an upload goes (blob store, document row, extract → chunk → embed →
index into PostgreSQL), and every query goes through `retrieve`, once per mode. The hybrid mode is
the one `/api/v1/ask` uses, with the same parameters. Nothing is cached between runs, so a run
measures the system as it is, ingestion included.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table
from sqlalchemy import delete, func, select

from docqa.blobs import make_blob_store
from docqa.db import migrate
from docqa.db.engine import Database, open_database
from docqa.db.models import Document
from docqa.documents import create_document
from docqa.evalsets import (
    SOURCE_NAMES,
    Dataset,
    EvalDocument,
    EvalQuery,
    load,
    mean,
    ndcg_at,
    page_hits,
    recall_at,
)
from docqa.ingest.embed import Embedder, Tokenizer, make_embedder
from docqa.ingest.pipeline import Runtime, process_document
from docqa.search.rerank import RERANK_CANDIDATES, Reranker, make_reranker
from docqa.search.retrieve import Hit, Mode, retrieve
from docqa.settings import Settings
from docqa.upload import ReceivedFile, ReceivedUpload

MODES: tuple[Mode, ...] = ("lexical", "vector", "hybrid")
# Reported too when a rerank server is configured: hybrid, its best candidates reranked.
RERANKED = "hybrid+rerank"
PAGE_TOP_K = 10
BEIR_DEPTH = 100
# A BEIR document may have several chunks: retrieve more chunks than documents are scored.
BEIR_CHUNKS = 200
# Documents in flight at once: one is extracted while another is embedded.
INGEST_CONCURRENCY = 3
WRITE_PIECE = 1024 * 1024

# (stage, done, total)
ProgressFn = Callable[[str, int, int], None]


@dataclass
class Ingested:
    pks: dict[str, uuid.UUID] = field(default_factory=dict)  # ready documents, by dataset key
    failed: dict[str, str] = field(default_factory=dict)  # dataset key -> error code
    chunks: int = 0
    pages: int = 0
    seconds: float = 0.0


async def _upload(rt: Runtime, owner_id: str, doc: EvalDocument) -> uuid.UUID:
    """Store the file and its row exactly as `POST /upload` does, and return the row's pk."""
    data = await asyncio.to_thread(doc.read)
    writer = rt.store.writer()
    for start in range(0, len(data), WRITE_PIECE):
        await writer.write(data[start : start + WRITE_PIECE])
    received = ReceivedFile(
        filename=doc.filename,
        content_type=doc.content_type,
        kind=doc.kind,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        writer=writer,
    )
    upload = ReceivedUpload(file=received, document_id=None, metadata={"eval_key": doc.key})
    created = await create_document(rt.db, rt.store, owner_id, upload)
    return created.document.pk


async def ingest(
    rt: Runtime, owner_id: str, documents: Sequence[EvalDocument], progress: ProgressFn
) -> Ingested:
    """Upload and process every document, a few at a time, as a worker would."""
    started = time.perf_counter()
    keys_by_pk: dict[uuid.UUID, list[str]] = {}
    gate = asyncio.Semaphore(INGEST_CONCURRENCY)
    done = 0

    async def one(doc: EvalDocument) -> None:
        nonlocal done
        async with gate:
            pk = await _upload(rt, owner_id, doc)
            duplicate = pk in keys_by_pk
            keys_by_pk.setdefault(pk, []).append(doc.key)
            if not duplicate:  # same bytes: one document, as the service would keep it
                await process_document(rt, pk)
        done += 1
        progress("ingesting", done, len(documents))

    await asyncio.gather(*(one(doc) for doc in documents))
    result = Ingested(seconds=time.perf_counter() - started)
    async with rt.db.session() as session:
        rows = await session.execute(
            select(Document.pk, Document.status, Document.error_code, Document.chunk_count)
            .add_columns(func.coalesce(Document.page_count, 0).label("pages"))
            .where(Document.owner_id == owner_id)
        )
        for row in rows:
            for key in keys_by_pk.get(row.pk, []):
                if row.status == "ready":
                    result.pks[key] = row.pk
                else:
                    result.failed[key] = row.error_code or row.status
            result.chunks += row.chunk_count
            result.pages += row.pages
    return result


async def score_mode(
    db: Database,
    embedder: Embedder,
    owner_id: str,
    dataset: Dataset,
    ingested: Ingested,
    mode: Mode,
    progress: ProgressFn | None = None,
    reranker: Reranker | None = None,
    rerank_candidates: int = RERANK_CANDIDATES,
) -> tuple[list[dict[str, float]], list[float]]:
    """Per-query metrics and latencies (ms) of one retrieval mode, reranked with `reranker`."""
    rows: list[dict[str, float]] = []
    latencies: list[float] = []
    all_pks = sorted(set(ingested.pks.values()))
    keys_by_pk: dict[uuid.UUID, list[str]] = {}
    for key, pk in ingested.pks.items():
        keys_by_pk.setdefault(pk, []).append(key)

    async def ask(question: str, pks: list[uuid.UUID], top_k: int) -> list[Hit]:
        t0 = time.perf_counter()
        hits = await retrieve(
            db,
            embedder,
            owner_id=owner_id,
            document_pks=pks,
            question=question,
            top_k=top_k,
            mode=mode,
            reranker=reranker,
            rerank_candidates=rerank_candidates,
        )
        latencies.append((time.perf_counter() - t0) * 1000)
        return hits

    for number, query in enumerate(dataset.queries, start=1):
        if progress is not None:
            label = RERANKED if reranker is not None else mode
            progress(f"querying ({label})", number, len(dataset.queries))
        if dataset.kind == "pageqa":
            if not query.answerable:
                continue  # no evidence page to find: only `--answers` scores these
            doc_pk = ingested.pks.get(query.document or "")
            # A question whose document failed to ingest counts as a miss: nothing can be found.
            hits = await ask(query.text, [doc_pk], PAGE_TOP_K) if doc_pk else []
            rows.append(page_hits([h.page for h in hits], query.pages))
        else:
            ranked = _documents_in_order(await ask(query.text, all_pks, BEIR_CHUNKS), keys_by_pk)
            rows.append(
                {
                    "ndcg@10": ndcg_at(ranked, query.qrels),
                    "recall@100": recall_at(ranked, query.qrels, BEIR_DEPTH),
                }
            )
    return rows, latencies


def _documents_in_order(hits: list[Hit], keys_by_pk: dict[uuid.UUID, list[str]]) -> list[str]:
    """Corpus ids ranked by their best chunk."""
    ranked: list[str] = []
    seen: set[uuid.UUID] = set()
    for hit in hits:
        if hit.document_pk not in seen:
            seen.add(hit.document_pk)
            ranked.extend(keys_by_pk.get(hit.document_pk, []))
    return ranked


def _latency(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {}
    ordered = sorted(ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"mean": round(statistics.fmean(ms), 1), "p95": round(p95, 1)}


def _splits(
    queries: list[EvalQuery], per_mode: dict[str, list[dict[str, float]]]
) -> dict[str, Any]:
    """Page-QA metrics for the questions whose evidence includes each source kind."""
    order = list(SOURCE_NAMES.values())
    names = sorted(
        {s for q in queries for s in q.sources},
        key=lambda n: (order.index(n) if n in order else len(order), n),
    )
    splits: dict[str, Any] = {}
    for name in names:
        picked = [i for i, q in enumerate(queries) if name in q.sources]
        splits[name] = {
            "queries": len(picked),
            "modes": {m: mean([rows[i] for i in picked]) for m, rows in per_mode.items()},
        }
    return splits


def build_report(
    dataset: Dataset,
    ingested: Ingested,
    per_mode: dict[str, list[dict[str, float]]],
    latencies: dict[str, list[float]],
    settings: Settings,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "dataset": dataset.name,
        "kind": dataset.kind,
        "modes": {mode: mean(rows) for mode, rows in per_mode.items()},
        "queries": len(dataset.queries),
    }
    if dataset.kind == "pageqa":
        report["splits"] = _splits([q for q in dataset.queries if q.answerable], per_mode)
    report["documents"] = {
        "total": len(dataset.documents),
        "ready": len(ingested.pks),
        "failed": ingested.failed,
        "pages": ingested.pages,
        "chunks": ingested.chunks,
    }
    report["timings"] = {
        "ingest_s": round(ingested.seconds, 1),
        "query_ms": {mode: _latency(ms) for mode, ms in latencies.items()},
    }
    report["settings"] = {
        "chunk_tokens": settings.chunk_tokens,
        "chunk_overlap_tokens": settings.chunk_overlap_tokens,
        "embedding": settings.embedding_model if settings.embedding_base_url else "local",
    }
    return report


@dataclass
class EvalRun:
    """A dataset's documents ingested under an owner of their own, ready to be searched."""

    settings: Settings
    db: Database
    owner_id: str
    embedder: Embedder
    ingested: Ingested


@contextlib.asynccontextmanager
async def ingested_run(
    settings: Settings, dataset: Dataset, progress: ProgressFn
) -> AsyncIterator[EvalRun]:
    """Ingest `dataset`'s documents into a fresh owner, as uploads are processed, and clean up
    afterwards. With no `database_url`, an embedded PostgreSQL runs under a temporary directory
    that is removed at the end; with one, the run's documents are deleted from it."""
    with tempfile.TemporaryDirectory(prefix="docqa-eval-") as tmp:
        settings = settings.model_copy(update={"data_dir": Path(tmp)})
        db = await open_database(settings, pool_size=INGEST_CONCURRENCY + 1)
        owner_id = f"eval-{uuid.uuid4().hex[:12]}"
        store = make_blob_store(settings, scope=owner_id)  # a folder of the run's own
        try:
            await asyncio.to_thread(migrate.upgrade, db.url)
            embedder = make_embedder(settings)
            await asyncio.to_thread(embedder.embed_query, "warm up")
            rt = Runtime(settings, db, store, embedder, Tokenizer())
            try:
                ingested = await ingest(rt, owner_id, dataset.documents, progress)
            finally:
                await rt.aclose()  # the extraction sandboxes and the embedding queue
            yield EvalRun(settings, db, owner_id, embedder, ingested)
        finally:
            if settings.database_url:
                async with db.session() as session, session.begin():
                    await session.execute(delete(Document).where(Document.owner_id == owner_id))
            try:
                await store.delete_prefix("")
            finally:
                await store.aclose()
                await db.close()


async def run_eval(
    settings: Settings,
    folder: Path,
    *,
    limit_docs: int | None = None,
    progress: ProgressFn | None = None,
    questions: Path | None = None,
) -> dict[str, Any]:
    """Ingest the folder's documents into a fresh owner (`ingested_run`) and score every mode
    on its queries."""
    dataset = load(folder, limit_docs, questions)
    async with ingested_run(settings, dataset, progress or no_progress) as run:
        db, embedder, owner_id, ingested = run.db, run.embedder, run.owner_id, run.ingested
        per_mode: dict[str, list[dict[str, float]]] = {}
        latencies: dict[str, list[float]] = {}
        for mode in MODES:
            per_mode[mode], latencies[mode] = await score_mode(
                db, embedder, owner_id, dataset, ingested, mode, progress=progress
            )
        reranker = make_reranker(run.settings)
        if reranker is None:
            return build_report(dataset, ingested, per_mode, latencies, run.settings)
        try:
            per_mode[RERANKED], latencies[RERANKED] = await score_mode(
                db,
                embedder,
                owner_id,
                dataset,
                ingested,
                "hybrid",
                progress=progress,
                reranker=reranker,
                rerank_candidates=run.settings.rerank_candidates,
            )
        finally:
            await reranker.aclose()
        report = build_report(dataset, ingested, per_mode, latencies, run.settings)
        # A failed rerank keeps the fused order, so its score is hybrid's: say how often.
        report["rerank"] = {
            "url": reranker.safe_url,
            "model": run.settings.rerank_model,
            "candidates": run.settings.rerank_candidates,
            "failures": reranker.failures,
        }
        return report


def no_progress(stage: str, done: int, total: int) -> None:
    """A `ProgressFn` that reports nothing."""
    return None


def report_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2) + "\n"


def report_table(report: dict[str, Any]) -> Table:
    """The report as one table: a row per mode, overall and then per evidence source."""
    metrics = list(next(iter(report["modes"].values()), {}))
    docs = report["documents"]
    title = (
        f"{report['dataset']} ({report['kind']}): {report['queries']} queries, "
        f"{docs['ready']}/{docs['total']} documents ready, {docs['chunks']} chunks"
    )
    caption = f"ingestion {report['timings']['ingest_s']:.0f} s"
    if docs["failed"]:
        failed = ", ".join(f"{key} ({code})" for key, code in docs["failed"].items())
        caption += f"; failed to ingest, so their queries count as misses: {failed}"
    table = Table("questions", "mode", *metrics, "ms/query", title=title, caption=caption)
    groups = [("all", report["queries"], report["modes"])]
    groups += [
        (name, split["queries"], split["modes"]) for name, split in report.get("splits", {}).items()
    ]
    for name, count, modes in groups:
        for mode, values in modes.items():
            latency = report["timings"]["query_ms"].get(mode, {}) if name == "all" else {}
            table.add_row(
                f"{name} ({count})" if mode == MODES[0] else "",
                mode,
                *(f"{values.get(m, 0.0):.3f}" for m in metrics),
                f"{latency['mean']:.0f}" if latency else "",
            )
        table.add_section()
    return table
