"""Prometheus metrics: what this process counts, and cluster state read from PostgreSQL.

Two kinds, on purpose:

* Per process (`REGISTRY`): request latency by route template, upload sizes, errors by code,
  rate-limit refusals, and the answer hooks (`ASK_FIRST_TOKEN_SECONDS`, `ASK_TOKENS_STREAMED`,
  `ASK_STREAMS_ACTIVE`). They happen in the process serving the request, so each API replica
  counts its own and Prometheus scrapes every replica (add them up with `sum()`). Each replica
  is one uvicorn process, so prometheus-client's multiprocess mode (for several processes
  behind one port) is not needed.
* Cluster state (`read_cluster`): queue depth, documents by status and ingestion time by stage.
  They live in the database every process shares, so `/metrics` reads them at scrape time: any
  replica reports the whole cluster, workers need no HTTP port of their own, and a restarted
  worker loses nothing. Every replica reports the same values; aggregate them with `max()`.

The answer code imports the hooks from here, e.g. `ASK_FIRST_TOKEN_SECONDS.observe(seconds)`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, DOUBLE_PRECISION

from docqa.db.engine import Database
from docqa.jobs import QUEUES

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

REQUEST_SECONDS = Histogram(
    "docqa_http_request_duration_seconds",
    "Time from request to the end of the response (whole stream for SSE), by route template.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
UPLOAD_BYTES = Histogram(
    "docqa_upload_bytes",
    "Sizes of accepted uploads (the _sum is the bytes received).",
    buckets=(1e4, 1e5, 1e6, 5e6, 1e7, 2.5e7, 5e7, 1e8),
    registry=REGISTRY,
)
ERRORS = Counter(
    "docqa_errors",
    "Error responses and stream errors, by their stable `code`.",
    ["code"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "docqa_rate_limited",
    "Requests refused with 429, by limit (asks, uploads, streams).",
    ["limit"],
    registry=REGISTRY,
)
ASK_FIRST_TOKEN_SECONDS = Histogram(
    "docqa_ask_time_to_first_token_seconds",
    "From receiving a question to sending the first answer delta.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
    registry=REGISTRY,
)
ASK_TOKENS_STREAMED = Counter(
    "docqa_ask_tokens_streamed",
    "Answer tokens streamed to clients (the model's usage count, else one per delta).",
    registry=REGISTRY,
)
ASK_STREAMS_ACTIVE = Gauge(
    "docqa_ask_streams_active",
    "Answer streams this process holds open now.",
    registry=REGISTRY,
)

# Ingestion stage durations, seconds (documents.timings holds `<stage>_s` keys).
STAGE_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
SCRAPE_TIMEOUT_S = 3.0

_JOBS_SQL = text(
    "SELECT queue_name, status::text, count(*) FROM procrastinate_jobs "
    "WHERE status IN ('todo', 'doing') GROUP BY 1, 2"
)
_DOCUMENTS_SQL = text("SELECT status, count(*) FROM documents GROUP BY status")
# width_bucket(v, bounds) counts the bounds <= v. Prometheus buckets are "le" (v <= bound), so each
# bound is moved up by one ulp: then the result counts the bounds strictly below v, and v belongs
# to every bucket from that index on.
_STAGES_SQL = text(
    """
    SELECT t.key AS stage, width_bucket(t.value::float8, :bounds) AS idx,
           count(*) AS n, sum(t.value::float8) AS total
    FROM documents d
    CROSS JOIN LATERAL jsonb_each_text(d.timings) AS t(key, value)
    WHERE d.status = 'ready' AND jsonb_typeof(d.timings -> t.key) = 'number'
    GROUP BY 1, 2
    """
).bindparams(bindparam("bounds", type_=ARRAY(DOUBLE_PRECISION)))


@dataclass
class StageHistogram:
    counts: list[int]  # per bucket index 0..len(STAGE_BUCKETS), not cumulative
    total: float = 0.0

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip([*STAGE_BUCKETS, math.inf], self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == math.inf else repr(float(bound)), running))
        return out


@dataclass
class ClusterState:
    """What `/metrics` read from the database for this scrape."""

    up: bool
    jobs: list[tuple[str, str, int]] = field(default_factory=list)
    documents: list[tuple[str, int]] = field(default_factory=list)
    stages: dict[str, StageHistogram] = field(default_factory=dict)


async def read_cluster(db: Database) -> ClusterState:
    """Queue depth, documents by status and stage timings, or `up=False` if the DB is away."""
    bounds = [math.nextafter(b, math.inf) for b in STAGE_BUCKETS]
    try:
        async with asyncio.timeout(SCRAPE_TIMEOUT_S), db.session() as session:
            jobs = [(str(q), str(s), int(n)) for q, s, n in await session.execute(_JOBS_SQL)]
            docs = [(str(s), int(n)) for s, n in await session.execute(_DOCUMENTS_SQL)]
            rows = list(await session.execute(_STAGES_SQL, {"bounds": bounds}))
    except Exception:
        log.warning("could not read cluster metrics from the database", exc_info=True)
        return ClusterState(up=False)
    stages: dict[str, StageHistogram] = {}
    for key, idx, n, total in rows:
        name = str(key).removesuffix("_s")
        hist = stages.setdefault(name, StageHistogram([0] * (len(STAGE_BUCKETS) + 1)))
        hist.counts[int(idx)] += int(n)
        hist.total += float(total)
    return ClusterState(up=True, jobs=jobs, documents=docs, stages=stages)


class _ClusterCollector(Collector):
    def __init__(self, state: ClusterState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("docqa_database_up", "1 if /metrics could read the database.")
        up.add_metric([], 1.0 if self.state.up else 0.0)
        yield up
        if not self.state.up:
            return
        jobs = GaugeMetricFamily(
            "docqa_queue_jobs",
            "Jobs waiting (todo) or running (doing).",
            labels=["queue", "status"],
        )
        seen = {(q, s) for q, s, _ in self.state.jobs}
        for queue, status, n in self.state.jobs:
            jobs.add_metric([queue, status], n)
        for queue in QUEUES:  # report the ingest queues' zeros too
            for status in ("todo", "doing"):
                if (queue, status) not in seen:
                    jobs.add_metric([queue, status], 0)
        yield jobs
        docs = GaugeMetricFamily("docqa_documents", "Documents by status.", labels=["status"])
        for status, n in self.state.documents:
            docs.add_metric([status], n)
        yield docs
        stages = HistogramMetricFamily(
            "docqa_ingest_stage_seconds",
            "Processing time of ready documents, by stage (extract, chunk, embed, write, total).",
            labels=["stage"],
        )
        for name, hist in sorted(self.state.stages.items()):
            stages.add_metric([name], hist.buckets(), hist.total)
        yield stages


def render(cluster: ClusterState, registries: Sequence[CollectorRegistry] = (REGISTRY,)) -> bytes:
    """The text exposition format: this process's metrics, then the cluster's."""
    cluster_registry = CollectorRegistry(auto_describe=False)
    cluster_registry.register(_ClusterCollector(cluster))
    return b"".join(generate_latest(r) for r in (*registries, cluster_registry))
