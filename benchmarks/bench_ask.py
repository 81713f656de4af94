"""Time to first answer token of `POST /api/v1/ask`, with 10k and 100k chunks indexed.

What is timed: the API server's own time from receiving the request to the first text delta
(`done.timings_ms.first_token`): resolving the documents, embedding the question with the bundled
model, hybrid retrieval over every ready document of the owner, building the prompt and opening
the stream to the model server. The model server is the tests' mock (`tests/mock_llm.py`) with no
delay, so the model's own thinking time is not in the number. Targets at 10k chunks: p50 <= 40 ms,
p99 <= 120 ms.

Baselines, measured in the same run against the same database: `retrieve()` called in-process
(query embedding plus SQL), hybrid and vector-only. The difference between first token and hybrid
retrieval is what the ask path adds on top of retrieval.

The OpenAI-compatible endpoint: every question is also asked through `/v1/chat/completions`
(streamed, model `docqa`), back to back with `/api/v1/ask` and the order alternating; its server
first token (from the `docqa` member of the stream) must stay within 2 ms of `/api/v1/ask`'s at
10k chunks.

Data: chunk texts are real, cut by docqa's own chunker from the mmlongbench PDFs (10-Ks, papers,
reports) and repeated to reach the size. Embeddings are random unit vectors by default: embedding
100k passages would take hours on this CPU. Random vectors have no neighbourhood structure, which
makes HNSW walk far more of its graph than on real text (docs/database.md). `--vectors real`
gives each chunk the bundled model's embedding of its text instead (each distinct text embedded
once), with noise for a repeat (`COPY_NOISE`, as close as the model puts a passage with a word
in 13 left out); an existing `--pgdata` is converted in place. Its recall@10 is against exact
search among near copies: the exact top 10 are 10 of the hundreds of copies of the best text,
told apart only by their noise. Chunks are written straight into the
database (COPY), 100 per document, all ready, for the local owner; then each document's postings
are written by the same function ingestion uses.

For every size it also reports, for the whole library and for a one-document scope: the first
token over HTTP, BM25 alone and the vector side alone (SQL only, the question already embedded),
the vector side's recall@10 against an exact scan of the same scope, the index sizes and the
database's memory (summed PSS of its processes). The 1M-chunk case is `--sizes 1000000`; with
`--pgdata DIR` the database is kept there and reused, so it loads once (about 40 minutes here).

Reranking, reported apart: a second API on the same database reranks with the tests' mock rerank
server, and each question is asked of both back to back; the paired difference in first token is
the time reranking adds (docs/reranking.md).

The first `--warmup` asks (10 by default; their questions are not measured) warm the new
server up; their own first-token figures are printed apart, as the server right after it
starts. At 1M chunks the first hundred or so questions after a start read the upper layers of
the HNSW graph into PostgreSQL's buffers (about 45 ms a question on the vector side, against 7
once warm), so `--warmup 100` measures a server that has been running a while.

`--figure-questions` asks for figures instead ("How much was ...?"), which makes retrieval
reorder its best 40 candidates by their share of rows of figures (docs/quality.md).

Run: .venv/bin/python benchmarks/bench_ask.py [--asks 100] [--sizes 10000,100000,1000000]
                                               [--pgdata DIR] [--warmup 10] [--figure-questions]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.stack import ROOT, Proc, free_port, start_api, wait_http

from benchmarks.common import BenchStack, bench_stack, cpu_note, pct, shared_file

if TYPE_CHECKING:
    from docqa.search.retrieve import Mode

CHUNKS_PER_DOCUMENT = 100
WARMUP = 10  # asks left out of every pass (the first pass: `--warmup`)
COPY_TYPES = ["uuid", "varchar", "int4", "int4", "int4", "int4", "int4", "int4", "text", "vector"]
OWNER = "local"


# About the length of docqa's chunks (200 word pieces of English prose).
CHUNK_WORDS = 150


def corpus() -> list[str]:
    """Chunk-sized pieces of the mmlongbench PDFs' pages (10-Ks, papers, reports): each page's
    text read with pypdfium2 and cut every `CHUNK_WORDS` words, as docqa's chunks never cross a
    page. Read directly, so the corpus does not move when ingestion changes."""
    import pypdfium2

    texts: list[str] = []
    for path in sorted(shared_file("mmlongbench", "documents").glob("*.pdf")):
        try:
            pdf = pypdfium2.PdfDocument(path)
        except Exception:  # an unreadable file just adds nothing to the corpus
            continue
        for n in range(min(len(pdf), 120)):
            textpage = pdf[n].get_textpage()
            words = textpage.get_text_range().split()
            for at in range(0, len(words), CHUNK_WORDS):
                piece = words[at : at + CHUNK_WORDS]
                if len(piece) >= 30:
                    texts.append(" ".join(piece))
        pdf.close()
    return texts


def variant(text: str, round_: int) -> str:
    """The text as repeated for the `round_`-th time: every 13th word (a different one each
    round) left out, so that repeats are near-duplicates with their own term counts, as real
    boilerplate is, rather than identical rows."""
    if round_ == 0:
        return text
    words = text.split()
    return " ".join(w for i, w in enumerate(words) if (i + round_) % 13)


def questions(texts: list[str], count: int, rng: random.Random, figures: bool = False) -> list[str]:
    """Questions in the words of the corpus: a few content words of a random sentence.
    `figures`: asked for a figure ("How much was ...?"), which retrieval answers by reordering
    its best candidates, passages of figures first (`retrieve.FIGURE_BONUS`)."""
    from docqa.answer.prompt import content_words

    out: list[str] = []
    while len(out) < count:
        sentences = re.split(r"(?<=[.!?])\s+", rng.choice(texts))
        words = [w for w in content_words(rng.choice(sentences)) if w.isalpha() and len(w) > 3]
        if len(words) >= 4:
            topic = " ".join(words[:6])
            out.append(
                f"How much was the {topic}?"
                if figures
                else f"What does the report say about {topic}?"
            )
    return out


# Near copies of one text (the repeats of `variant`) get its embedding plus Gaussian noise of this
# standard deviation per dimension: cosine about 0.98 to the original, as the model gives a
# passage with one word in 13 left out (measured on 600 variants of 200 corpus texts: median
# 0.981, 10th percentile 0.957).
COPY_NOISE = 0.010


def real_bases(texts: list[str]) -> np.ndarray:
    """The bundled model's embedding of each distinct chunk text (a minute or two here)."""
    from docqa.ingest.embed import LocalEmbedder

    started = time.perf_counter()
    bases = np.asarray(LocalEmbedder().embed_documents(texts), dtype=np.float32)
    print(f"  embedded {len(texts)} distinct texts in {time.perf_counter() - started:.0f} s")
    return bases


def vectors_at(
    positions: np.ndarray, bases: np.ndarray | None, rng: np.random.Generator
) -> np.ndarray:
    """Unit vectors for the chunks at `positions` (0, 1, ... in the order they were loaded):
    random ones without `bases`, else the real embedding of the chunk's text, with noise for a
    repeat (`COPY_NOISE`)."""
    if bases is None:
        vectors = rng.standard_normal((len(positions), 384)).astype(np.float32)
    else:
        rounds, at = np.divmod(positions, len(bases))
        noise = rng.standard_normal((len(positions), 384)).astype(np.float32) * COPY_NOISE
        vectors = bases[at] + noise * (rounds > 0)[:, None]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def revector(database_url: str, bases: np.ndarray | None, rng: np.random.Generator) -> None:
    """Give a loaded database the kind of vectors asked for (`bench_meta` records which it
    has; a database without it has random ones), in place: the chunks, and so their postings,
    stay as they are, and the HNSW index is built again."""
    import psycopg
    from pgvector.psycopg import register_vector

    kind = "random" if bases is None else "real"
    with psycopg.connect(database_url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("CREATE TABLE IF NOT EXISTS bench_meta (key text PRIMARY KEY, value text)")
        row = conn.execute("SELECT value FROM bench_meta WHERE key = 'vectors'").fetchone()
        have = row[0] if row else "random"
        total = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]  # type: ignore[index]
        if have != kind and total:
            started = time.perf_counter()
            definition = conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_chunks_embedding_hnsw'"
            ).fetchone()[0]  # type: ignore[index]
            conn.execute("DROP INDEX ix_chunks_embedding_hnsw")
            conn.execute("CREATE TEMP TABLE revectored (id bigint, embedding vector(384))")
            ids = np.array([r[0] for r in conn.execute("SELECT id FROM chunks ORDER BY id")])
            with conn.cursor().copy(
                "COPY revectored (id, embedding) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int8", "vector"])
                for at in range(0, len(ids), 10_000):
                    part = ids[at : at + 10_000]
                    vectors = vectors_at(np.arange(at, at + len(part)), bases, rng)
                    for cid, vector in zip(part, vectors, strict=True):
                        copy.write_row([int(cid), vector])
            conn.execute(
                "UPDATE chunks c SET embedding = r.embedding FROM revectored r WHERE c.id = r.id"
            )
            conn.execute("VACUUM ANALYZE chunks")
            index_build_settings(conn, total)
            conn.execute(definition)
            print(f"  {total} chunks given {kind} vectors in {time.perf_counter() - started:.0f} s")
        conn.execute(
            "INSERT INTO bench_meta VALUES ('vectors', %s) ON CONFLICT (key) DO UPDATE "
            "SET value = excluded.value",
            (kind,),
        )


def index_build_settings(conn: Any, chunks: int) -> None:
    """For building indexes over `chunks` chunks on this connection: HNSW builds in memory when
    its graph fits (about 2 KB a chunk at 384 dimensions), with one parallel worker."""
    conn.execute(f"SET maintenance_work_mem = '{max(1, chunks * 2 // 1_000_000 + 1)}GB'")
    conn.execute("SET max_parallel_maintenance_workers = 1")


def fill(
    database_url: str,
    target: int,
    texts: list[str],
    rng: np.random.Generator,
    bases: np.ndarray | None = None,
) -> int:
    """Add ready documents of chunks until the owner has `target` chunks: random vectors, or
    with `bases` the real embeddings of their texts (`vectors_at`)."""
    import psycopg
    from pgvector.psycopg import register_vector

    with psycopg.connect(database_url, autocommit=True) as conn:
        register_vector(conn)
        have = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]  # type: ignore[index]
        if have >= target:
            return int(have)
        # Bulk load without the indexes, then build them once: much faster than row by row.
        indexes = conn.execute(
            """SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'chunks'
               AND indexname NOT IN (SELECT conname FROM pg_constraint)"""
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        started = time.perf_counter()
        position = have
        added: list[uuid.UUID] = []
        while position < target:
            pk = uuid.uuid4()
            n = min(CHUNKS_PER_DOCUMENT, target - position)
            conn.execute(
                """INSERT INTO documents (pk, owner_id, document_id, filename, content_type, kind,
                       size_bytes, sha256, blob_key, status, page_count, chunk_count)
                   VALUES (%s, %s, %s, 'bench.pdf', 'application/pdf', 'pdf', 1, %s, 'none',
                       'ready', %s, %s)""",
                (pk, OWNER, f"bench-{pk.hex[:12]}", pk.hex * 2, n, n),
            )
            added.append(pk)
            vectors = vectors_at(np.arange(position, position + n), bases, rng)
            columns = "document_pk, owner_id, seq, page_start, page_end, char_start, char_end, "
            columns += "token_count, text, embedding"
            with conn.cursor().copy(f"COPY chunks ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(COPY_TYPES)
                for seq in range(n):
                    round_, at = divmod(position + seq, len(texts))
                    text = variant(texts[at], round_)
                    tokens = len(text.split()) * 4 // 3
                    page = seq // 3 + 1
                    copy.write_row(
                        [pk, OWNER, seq, page, page, 0, len(text), tokens, text, vectors[seq]]
                    )
            position += n
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        index_build_settings(conn, target)
        for _, definition in indexes:
            conn.execute(definition)
        rebuilt = time.perf_counter() - started
        started = time.perf_counter()
        asyncio.run(index_documents(database_url, added))
        # What autovacuum does shortly after a load: statistics, and the visibility map that lets
        # index-only scans skip the table.
        for table in ("chunks", "documents", "postings"):
            conn.execute(f"VACUUM ANALYZE {table}")
        print(
            f"  loaded {position - have} chunks in {loaded:.0f} s, indexes rebuilt in "
            f"{rebuilt:.0f} s, postings written in {time.perf_counter() - started:.0f} s"
        )
        return position


async def index_documents(database_url: str, pks: list[uuid.UUID]) -> None:
    """Postings and totals for each document, written as ingestion writes them on ready."""
    from docqa.db.engine import open_database
    from docqa.search.index import index_terms
    from docqa.settings import Settings

    db = await open_database(Settings(database_url=database_url), pool_size=1)
    try:
        for pk in pks:
            async with db.session() as session, session.begin():
                await index_terms(session, [pk])
    finally:
        await db.close()


async def ask_once(
    client: httpx.AsyncClient, question: str, document_id: str | None = None
) -> dict[str, Any]:
    started = time.perf_counter()
    client_first: float | None = None
    last_delta = done_at = started
    done: dict[str, Any] = {}
    event = ""
    body: dict[str, Any] = {"question": question}
    if document_id is not None:
        body["document_id"] = document_id
    async with client.stream("POST", "/api/v1/ask", json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                if event == "done":
                    done_at = time.perf_counter()
                    done = json.loads(line[6:])
                elif event == "":
                    last_delta = time.perf_counter()
                    if client_first is None:
                        client_first = (last_delta - started) * 1000
            elif line == "":
                event = ""
    assert done.get("finish_reason") == "stop", done
    return {
        "first_token": done["timings_ms"]["first_token"],
        "retrieval": done["timings_ms"]["retrieval"],
        "client_first_token": client_first,
        # The end-of-answer checks (citation support, quotes and their rectangles) run here,
        # after the last word and before `done`.
        "after_last_token": (done_at - last_delta) * 1000,
    }


async def measure(
    url: str, database_url: str, qs: list[str], warmup: int
) -> dict[str, list[float]]:
    """Each question asked over HTTP, then the baselines run in this process on the same
    database, one after the other: so both see the same load on the machine."""
    from sqlalchemy import func, select

    from docqa.db.engine import open_database
    from docqa.db.models import Document
    from docqa.ingest.embed import LocalEmbedder
    from docqa.search.lexical import Library
    from docqa.search.retrieve import retrieve
    from docqa.settings import Settings

    db = await open_database(Settings(database_url=database_url))
    embedder = LocalEmbedder()

    async def baseline(q: str, mode: Mode) -> float:
        started = time.perf_counter()
        # Resolving the owner's documents is part of each ask, so it is part of this too.
        async with db.session() as session:
            query = select(func.count()).where(
                Document.owner_id == OWNER, Document.status == "ready"
            )
            pks = Library(await session.scalar(query) or 0)
        await retrieve(
            db, embedder, owner_id=OWNER, document_pks=pks, question=q, top_k=6, mode=mode
        )
        return (time.perf_counter() - started) * 1000

    out: dict[str, list[float]] = {
        k: []
        for k in (
            "first_token",
            "retrieval",
            "client",
            "hybrid",
            "vector",
            "embed",
            "after_last",
            "warmup_first_token",
        )
    }
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            for i, q in enumerate(qs):
                asked = await ask_once(client, q)
                hybrid = await baseline(q, "hybrid")
                vector = await baseline(q, "vector")
                started = time.perf_counter()
                await asyncio.to_thread(embedder.embed_query, q)
                embed = (time.perf_counter() - started) * 1000
                if i < warmup:
                    out["warmup_first_token"].append(asked["first_token"])
                    continue
                out["first_token"].append(asked["first_token"])
                out["retrieval"].append(asked["retrieval"])
                out["client"].append(asked["client_first_token"])
                out["after_last"].append(asked["after_last_token"])
                out["hybrid"].append(hybrid)
                out["vector"].append(vector)
                out["embed"].append(embed)
    finally:
        await db.close()
    return out


async def _given(vector: list[float]) -> list[float]:
    return vector


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def scale_report(
    url: str, database_url: str, qs: list[str], warmup: int = WARMUP
) -> dict[str, Any]:
    """For the whole library and one document: the first token over HTTP, then BM25 alone, the
    vector side alone and its recall@10 against the exact scan of the same scope."""
    from sqlalchemy import select

    from docqa.db.engine import open_database
    from docqa.db.models import Document
    from docqa.ingest.embed import LocalEmbedder
    from docqa.search.lexical import Library, lexical_ranking
    from docqa.search.retrieve import CANDIDATES
    from docqa.search.vector import vector_ranking
    from docqa.settings import Settings

    db = await open_database(Settings(database_url=database_url))
    embedder = LocalEmbedder()
    vectors = [embedder.embed_query(q).tolist() for q in qs]
    async with db.session() as session:
        query = select(Document.pk, Document.document_id).where(
            Document.owner_id == OWNER, Document.status == "ready"
        )
        docs = (await session.execute(query.order_by(Document.created_at))).all()
    one = docs[len(docs) // 2]
    scopes = {
        # As the API looks the whole library up (`answer.service.document_scope`).
        "library": (Library(len(docs)), None),
        "one document": ([one.pk], one.document_id),
    }
    out: dict[str, Any] = {}
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            for name, (pks, document_id) in scopes.items():
                m: dict[str, list[float]] = {k: [] for k in ("first", "bm25", "vector", "recall")}
                for i, (q, vector) in enumerate(zip(qs, vectors, strict=True)):
                    first = (await ask_once(client, q, document_id))["first_token"]
                    started = time.perf_counter()
                    async with db.session() as session:
                        await lexical_ranking(
                            session, owner_id=OWNER, document_pks=pks, question=q, limit=CANDIDATES
                        )
                    bm25 = _ms(started)
                    ranked: list[list[int]] = []
                    for exact in (False, True):
                        started = time.perf_counter()
                        async with db.session() as session:
                            ranking = await vector_ranking(
                                session,
                                owner_id=OWNER,
                                document_pks=pks,
                                qvec=_given(vector),
                                limit=CANDIDATES,
                                exact=exact,
                            )
                        ranked.append([cid for cid, _ in ranking[:10]])
                        if not exact:
                            vector_ms = _ms(started)
                    if i < warmup:
                        continue
                    m["first"].append(first)
                    m["bm25"].append(bm25)
                    m["vector"].append(vector_ms)
                    truth = set(ranked[1])
                    m["recall"].append(len(truth & set(ranked[0])) / max(1, len(truth)))
                count = pks.documents if isinstance(pks, Library) else len(pks)
                print(f"  {name} ({count} documents):")
                print(line("  server first token", m["first"]))
                print(line("  BM25 alone (SQL)", m["bm25"]))
                print(line("  vector side alone (SQL)", m["vector"]))
                recall = statistics.mean(m["recall"])
                print(f"    vector recall@10 against exact: {recall:.3f}")
                out[name] = {
                    "first_token_p50_ms": statistics.median(m["first"]),
                    "first_token_p99_ms": pct(m["first"], 99),
                    "bm25_p50_ms": statistics.median(m["bm25"]),
                    "bm25_p99_ms": pct(m["bm25"], 99),
                    "vector_p50_ms": statistics.median(m["vector"]),
                    "vector_p99_ms": pct(m["vector"], 99),
                    "vector_recall_at_10": recall,
                }
    finally:
        await db.close()
    out["footprint"] = footprint(database_url)
    print(f"  footprint: {json.dumps(out['footprint'])}")
    return out


def footprint(database_url: str) -> dict[str, Any]:
    """Sizes of the search tables and their indexes (MB), and the database's memory: the summed
    proportional set size (PSS) of the server's processes, so shared buffers count once."""
    import psutil
    import psycopg

    mb = 1024 * 1024
    with psycopg.connect(database_url, autocommit=True) as conn:
        sizes = conn.execute(
            """SELECT i.indexname, pg_relation_size(format('%I', i.indexname)::regclass)
               FROM pg_indexes i WHERE i.tablename IN ('chunks', 'postings')"""
        ).fetchall()
        tables = conn.execute(
            """SELECT pg_total_relation_size('chunks'), pg_total_relation_size('postings')"""
        ).fetchone()
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert backend is not None
        postmaster = psutil.Process(backend[0]).parent()  # while this backend still runs
    assert tables is not None
    assert postmaster is not None
    pss = rss = 0
    for proc in [postmaster, *postmaster.children()]:
        try:  # a backend may end between the listing and the reading (autovacuum, a client)
            pss += proc.memory_full_info().pss
            rss += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return {
        "indexes_mb": {name: round(size / mb, 1) for name, size in sizes},
        "chunks_total_mb": round(tables[0] / mb, 1),
        "postings_total_mb": round(tables[1] / mb, 1),
        "db_pss_mb": round(pss / mb, 1),
        "db_rss_sum_mb": round(rss / mb, 1),
    }


@contextmanager
def mock_model(workdir: Path) -> Iterator[str]:
    port = free_port()
    proc = Proc(
        ["--port", str(port)],
        os.environ | {"PYTHONPATH": str(ROOT)},
        workdir / "mock_llm.log",
        module="tests.mock_llm",
    ).start()
    try:
        wait_http(f"http://127.0.0.1:{port}/_health", proc)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.stop()


def line(name: str, values: list[float]) -> str:
    return (
        f"  {name:<34} p50 {statistics.median(values):7.1f} ms   p99 {pct(values, 99):7.1f} ms"
        f"   max {max(values):7.1f} ms"
    )


async def chat_once(client: httpx.AsyncClient, question: str) -> dict[str, Any]:
    """One `POST /v1/chat/completions`, streamed, as an OpenAI client sends it: the server's
    first token comes from the `docqa` member of the chunk before the finish chunk."""
    started = time.perf_counter()
    client_first: float | None = None
    done: dict[str, Any] = {}
    body = {"model": "docqa", "messages": [{"role": "user", "content": question}], "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            delta = chunk["choices"][0]["delta"] if chunk["choices"] else {}
            if delta.get("content") and client_first is None:
                client_first = (time.perf_counter() - started) * 1000
            if "annotations" in delta:
                done = chunk["docqa"]
    assert done.get("finish_reason") == "stop", done
    return {"first_token": done["timings_ms"]["first_token"], "client_first_token": client_first}


async def paired(
    qs: list[str],
    first: Callable[[str], Awaitable[dict[str, Any]]],
    second: Callable[[str], Awaitable[dict[str, Any]]],
    warmup: int = WARMUP,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each question asked both ways, back to back, the order alternating so that both see the
    same load and the same warm caches; the first `warmup` pairs are left out."""
    pairs = []
    for i, q in enumerate(qs):
        if i % 2:
            b, a = await second(q), await first(q)
        else:
            a, b = await first(q), await second(q)
        if i >= warmup:
            pairs.append((a, b))
    return pairs


async def openai_compare(url: str, qs: list[str], warmup: int = WARMUP) -> dict[str, Any]:
    """The first token through `/v1/chat/completions` against `/api/v1/ask`: each question
    asked both ways, back to back, the order alternating, so both see the same load and the
    same warm caches. Target: within 2 ms of `/api/v1/ask` at 10k chunks."""
    m: dict[str, list[float]] = {k: [] for k in ("ask", "chat", "ask_client", "chat_client")}
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        pairs = await paired(
            qs, lambda q: ask_once(client, q), lambda q: chat_once(client, q), warmup
        )
        for asked, chat in pairs:
            m["ask"].append(asked["first_token"])
            m["chat"].append(chat["first_token"])
            m["ask_client"].append(asked["client_first_token"])
            m["chat_client"].append(chat["client_first_token"])
    differences = [c - a for c, a in zip(m["chat"], m["ask"], strict=True)]
    print(line("server first token: /api/v1/ask", m["ask"]))
    print(line("server first token: /v1/chat/...", m["chat"]))
    print(line("  paired difference (chat - ask)", differences))
    print(line("client first token: /api/v1/ask", m["ask_client"]))
    print(line("client first token: /v1/chat/...", m["chat_client"]))
    return {
        "openai_first_token_p50_ms": statistics.median(m["chat"]),
        "openai_first_token_p99_ms": pct(m["chat"], 99),
        "openai_vs_ask_first_token_p50_ms": statistics.median(m["chat"])
        - statistics.median(m["ask"]),
        "openai_minus_ask_paired_median_ms": statistics.median(differences),
    }


@contextmanager
def rerank_api(st: BenchStack) -> Iterator[str]:
    """A second API on the same database that reranks with the tests' mock rerank server
    (`tests/mock_rerank.py`: word overlap, no model), so only docqa's own cost is measured."""
    port = free_port()
    mock = Proc(
        ["--port", str(port)],
        os.environ | {"PYTHONPATH": str(ROOT)},
        st.workdir / "mock_rerank.log",
        module="tests.mock_rerank",
    ).start()
    api: Proc | None = None
    try:
        wait_http(f"http://127.0.0.1:{port}/_health", mock)
        env = st.env | {"DOCQA_RERANK_BASE_URL": f"http://127.0.0.1:{port}"}
        api, url = start_api(env, st.workdir, "bench-api-rerank")
        yield url
    finally:
        if api is not None:
            api.stop()
        mock.stop()


async def rerank_compare(
    url: str, rerank_url: str, qs: list[str], warmup: int = WARMUP
) -> dict[str, Any]:
    """The time reranking adds to an ask (the best 30 fused chunks sent to the rerank server and
    reordered), reported apart from the first token without it: each question asked of both
    APIs back to back, the order alternating, so both see the same load."""
    m: dict[str, list[float]] = {k: [] for k in ("plain", "rerank", "plain_r", "rerank_r")}
    async with (
        httpx.AsyncClient(base_url=url, timeout=60) as plain,
        httpx.AsyncClient(base_url=rerank_url, timeout=60) as reranking,
    ):
        pairs = await paired(
            qs, lambda q: ask_once(plain, q), lambda q: ask_once(reranking, q), warmup
        )
        for a, b in pairs:
            m["plain"].append(a["first_token"])
            m["rerank"].append(b["first_token"])
            m["plain_r"].append(a["retrieval"])
            m["rerank_r"].append(b["retrieval"])
    added = [r - p for r, p in zip(m["rerank"], m["plain"], strict=True)]
    print(line("server first token, no reranking", m["plain"]))
    print(line("server first token, reranking", m["rerank"]))
    print(line("  paired difference (rerank-plain)", added))
    print(line("  retrieval with reranking", m["rerank_r"]))
    return {
        "rerank_first_token_p50_ms": statistics.median(m["rerank"]),
        "rerank_first_token_p99_ms": pct(m["rerank"], 99),
        "rerank_added_paired_median_ms": statistics.median(added),
        "rerank_added_paired_p99_ms": pct(added, 99),
    }


def main() -> None:
    from docqa.process import keep_freed_memory

    parser = argparse.ArgumentParser()
    parser.add_argument("--asks", type=int, default=100)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--pgdata", type=Path, help="keep the database here and reuse it")
    parser.add_argument("--load-only", action="store_true", help="fill --pgdata, measure nothing")
    parser.add_argument(
        "--warmup", type=int, default=WARMUP, help="asks first, left out of every measure"
    )
    parser.add_argument(
        "--figure-questions",
        action="store_true",
        help='ask for figures ("How much was ...?"): retrieval reorders its best candidates',
    )
    parser.add_argument(
        "--vectors",
        choices=["random", "real"],
        default="random",
        help="random unit vectors, or the model's embeddings of the chunk texts (near copies "
        "of a text get its embedding plus noise); an existing --pgdata is converted in place",
    )
    args = parser.parse_args()
    # As `docqa serve` does: this process's own BM25 and retrieval runs are timed too.
    keep_freed_memory()
    sizes = [int(s) for s in args.sizes.split(",")]
    texts = corpus()
    warmup = args.warmup
    qs = questions(texts, args.asks + warmup, random.Random(7), figures=args.figure_questions)
    print(f"bench_ask: {args.asks} asks per size, {len(texts)} distinct chunk texts, {cpu_note()}")
    workdir = Path(os.environ.get("TMPDIR", "/tmp"))
    with (
        mock_model(workdir) as model_url,
        bench_stack(
            worker=False,
            pgdata=args.pgdata,
            DOCQA_LLM_BASE_URL=model_url,
            DOCQA_LLM_MAX_RETRIES="0",
        ) as st,
    ):
        rng = np.random.default_rng(7)
        bases = real_bases(texts) if args.vectors == "real" else None
        results: dict[int, dict[str, Any]] = {}
        for size in sizes:
            # Existing chunks first: the ones `fill` adds already have the vectors asked for.
            revector(st.database_url, bases, rng)
            total = fill(st.database_url, size, texts, rng, bases)
            if args.load_only:
                continue
            print(
                f"{total} chunks in {total // CHUNKS_PER_DOCUMENT} documents "
                f"(load average {os.getloadavg()[0]:.1f}):"
            )
            m = asyncio.run(measure(st.url, st.database_url, qs, warmup))
            print(line(f"server first token, {warmup} warm-up asks", m["warmup_first_token"]))
            print(line("server first token (target)", m["first_token"]))
            print(line("  of which server retrieval", m["retrieval"]))
            print(line("client first token (loopback)", m["client"]))
            print(line("baseline: retrieve() hybrid", m["hybrid"]))
            print(line("baseline: retrieve() vector only", m["vector"]))
            print(line("baseline: query embedding alone", m["embed"]))
            overhead = [f - r for f, r in zip(m["first_token"], m["retrieval"], strict=True)]
            print(line("ask path on top of retrieval", overhead))
            print(line("last token to done (checks, quotes)", m["after_last"]))
            results[size] = {
                "first_token_p50_ms": statistics.median(m["first_token"]),
                "first_token_p99_ms": pct(m["first_token"], 99),
                "warmup_asks": warmup,
                "warmup_first_token_p50_ms": statistics.median(m["warmup_first_token"]),
                "ask_overhead_p50_ms": statistics.median(overhead),
                "retrieve_hybrid_p50_ms": statistics.median(m["hybrid"]),
                "retrieve_vector_p50_ms": statistics.median(m["vector"]),
                "embed_p50_ms": statistics.median(m["embed"]),
                "after_last_token_p50_ms": statistics.median(m["after_last"]),
            }
            # The server is warm now: the later passes leave out 10 asks of their own, the last
            # of the warm-up questions (the scale pass's exact scans take seconds each at 1M).
            again = min(warmup, WARMUP)
            later = qs[warmup - again :]
            with rerank_api(st) as rerank_url:
                results[size] |= asyncio.run(rerank_compare(st.url, rerank_url, later, again))
            results[size] |= asyncio.run(openai_compare(st.url, later, again))
            results[size] |= asyncio.run(scale_report(st.url, st.database_url, later, again))
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
