"""Prometheus metrics: a registry of agentgraph's own, and the figures read at scrape time.

Counters and histograms live in one process-wide `Metrics` (`metrics()`), on a registry of
their own rather than prometheus_client's global one, and are updated where runs end and
nodes finish. Gauges that describe the database (approvals waiting, queued jobs, pool use)
are read when `/metrics` is scraped and handed to `render` as `DatabaseFigures`.

Several server processes on one port (`serve --workers N`) share their counters and
histograms through prometheus_client's multiprocess mode: `server.serve` points
`PROMETHEUS_MULTIPROC_DIR` at a directory before it starts them, each process writes its
values to files there, and a scrape of any of them adds up every process's.
"""

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from app.accounting import UsageRecord
from app.errors import ConfigError

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The media type of `render`'s text."""
RUN_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
"""Seconds: a run takes from about a second (a direct answer) to many minutes."""
NODE_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 600)
"""Seconds: a node takes from a few milliseconds (dispatch) to minutes (a long generation)."""
RejectionReason = Literal["rate", "concurrency", "budget"]
SHARED_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Where the processes of one server keep their values (prometheus_client's variable, read
when it is first imported): set, a scrape adds up every process's counters and histograms."""


class Metrics:
    """agentgraph's counters and histograms, on their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs_started = Counter(
            "agentgraph_runs_started",
            "Runs started, by kind (request, resume, continue).",
            ["kind"],
            registry=r,
        )
        self.runs_finished = Counter(
            "agentgraph_runs_finished",
            "Runs ended, by status (done, rejected, failed, interrupted, cancelled, unknown).",
            ["status"],
            registry=r,
        )
        self.run_duration = Histogram(
            "agentgraph_run_duration_seconds",
            "Wall time of a run, from its start to its end or its next interrupt, by status.",
            ["status"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.node_duration = Histogram(
            "agentgraph_node_duration_seconds",
            "Wall time of one execution (one attempt) of a graph node, by node.",
            ["node"],
            buckets=NODE_BUCKETS,
            registry=r,
        )
        self.model_tokens = Counter(
            "agentgraph_model_tokens",
            "Tokens spent on chat models, by model and direction (input, output).",
            ["model", "direction"],
            registry=r,
        )
        self.model_cost = Counter(
            "agentgraph_model_cost_usd",
            "Cost of chat-model calls in the price table's currency (AGENTGRAPH_PRICES), by model.",
            ["model"],
            registry=r,
        )
        self.rate_limit_rejections = Counter(
            "agentgraph_rate_limit_rejections",
            "Requests refused with 429, by reason (rate, concurrency, budget).",
            ["reason"],
            registry=r,
        )
        self.approval_timeouts = Counter(
            "agentgraph_approval_timeouts",
            "Approval gates whose deadline this process enforced, by action (reject, "
            "approve, escalate).",
            ["action"],
            registry=r,
        )

    def count_usage(self, records: Iterable[UsageRecord]) -> None:
        """Add what accounting recorded for node executions to the model counters."""
        for record in records:
            model = record["model"]
            if model is None:
                continue
            self.model_tokens.labels(model, "input").inc(record["input_tokens"])
            self.model_tokens.labels(model, "output").inc(record["output_tokens"])
            self.model_cost.labels(model).inc(record["cost"])


@lru_cache(maxsize=1)
def metrics() -> Metrics:
    """The process's metrics, made on first use."""
    return Metrics()


def count_rejection(reason: RejectionReason) -> None:
    """Count a request refused with 429."""
    metrics().rate_limit_rejections.labels(reason).inc()


def count_approval_timeout(action: str) -> None:
    """Count an approval gate whose deadline this process enforced."""
    metrics().approval_timeouts.labels(action).inc()


@dataclass(frozen=True, kw_only=True)
class PoolFigures:
    """One connection pool's use (psycopg_pool's `get_stats()`)."""

    size: int
    """Connections open."""
    idle: int
    """Open connections nobody holds."""
    max: int
    waiting: int
    """Requests waiting for a connection."""


@dataclass(frozen=True, kw_only=True)
class DatabaseFigures:
    """What the database says at scrape time."""

    approvals_waiting: int | None = None
    """None: not read (the database did not answer); its gauges are then left out."""
    oldest_approval_wait_s: float | None = None
    approvals_escalated: int | None = None
    """Threads waiting at a gate whose deadline escalated it."""
    queue_jobs: Mapping[str, int] = field(default_factory=dict)
    """Background-run jobs by procrastinate status (todo, doing)."""
    pools: Mapping[str, PoolFigures] = field(default_factory=dict)


def database_families(figures: DatabaseFigures) -> list[Metric]:
    """The gauges of `figures`."""
    approvals = GaugeMetricFamily(
        "agentgraph_approvals_waiting", "Threads waiting for a person's decision."
    )
    if figures.approvals_waiting is not None:
        approvals.add_metric([], figures.approvals_waiting)
    oldest = GaugeMetricFamily(
        "agentgraph_approval_oldest_wait_seconds",
        "How long the longest-waiting thread has waited for a decision (0: none waits).",
    )
    if figures.oldest_approval_wait_s is not None:
        oldest.add_metric([], figures.oldest_approval_wait_s)
    escalated = GaugeMetricFamily(
        "agentgraph_approvals_escalated",
        "Threads waiting for a decision whose deadline passed and escalated them.",
    )
    if figures.approvals_escalated is not None:
        escalated.add_metric([], figures.approvals_escalated)
    jobs = GaugeMetricFamily(
        "agentgraph_queue_jobs",
        "Background-run jobs in the queue, by status (todo: waiting, doing: executing).",
        labels=["status"],
    )
    for status, count in sorted(figures.queue_jobs.items()):
        jobs.add_metric([status], count)
    connections = GaugeMetricFamily(
        "agentgraph_db_pool_connections",
        "Connections of this process's database pools (main, locks), by state "
        "(open, idle, in_use, max).",
        labels=["pool", "state"],
    )
    waiting = GaugeMetricFamily(
        "agentgraph_db_pool_requests_waiting",
        "Requests waiting for a connection of this process's pools.",
        labels=["pool"],
    )
    for name, pool in sorted(figures.pools.items()):
        connections.add_metric([name, "open"], pool.size)
        connections.add_metric([name, "idle"], pool.idle)
        connections.add_metric([name, "in_use"], pool.size - pool.idle)
        connections.add_metric([name, "max"], pool.max)
        waiting.add_metric([name], pool.waiting)
    return [approvals, oldest, escalated, jobs, connections, waiting]


class _Scrape(Collector):
    """The process's metrics and one scrape's database figures, as one collector."""

    def __init__(self, registry: CollectorRegistry, figures: DatabaseFigures) -> None:
        self.registry = registry
        self.figures = figures

    def collect(self) -> Iterable[Metric]:
        yield from self.registry.collect()
        yield from database_families(self.figures)


def _counted() -> CollectorRegistry:
    """This process's counters and histograms, or, when processes share a directory
    (`SHARED_DIR_ENV`), every process's, added up from their files."""
    if not os.environ.get(SHARED_DIR_ENV):
        return metrics().registry
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]  # untyped upstream
    return merged


def serve_metrics(host: str, port: int) -> Callable[[], None]:
    """Serve the counted metrics (`_counted`) at `http://host:port/metrics` from a thread, for
    a process with no API of its own (a queue worker); return what stops it. The database's
    gauges are any server's to serve.

    Raises:
        ConfigError: the address cannot be listened on.
    """
    try:
        server, thread = start_http_server(port, addr=host, registry=_counted())
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


def render(figures: DatabaseFigures = DatabaseFigures()) -> bytes:
    """The counted metrics (`_counted`) and `figures` in Prometheus's text format."""
    return generate_latest(_Scrape(_counted(), figures))
