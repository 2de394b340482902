"""Prometheus metrics of one process, on its own registry (exported on /metrics)."""
from __future__ import annotations

import logging
import threading
from collections import Counter as Tally
from dataclasses import replace

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from engine import lifecycle
from engine.llm.base import Usage
from storage import incidents as incident_store

log = logging.getLogger(__name__)

# Seconds: acknowledging is expected within minutes, resolving within hours.
MTTA_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)
MTTR_BUCKETS = (300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800)

BREAKER_STATES = ("closed", "half_open", "open")

# USD per million tokens: Anthropic's published list prices for the Claude models warroom is used with
# (claude-sonnet-4-5 is the default). Cache writes are the 5-minute cache's price (1.25 x input), reads 0.1 x.
# WARROOM_LLM_PRICES overrides or extends this; a model found in neither costs 0 (self-hosted, offline).
LLM_PRICES: dict[str, dict[str, float]] = {
    "claude-opus-4-5": {"input": 5.0, "output": 25.0, "cache_read": 0.50, "cache_write": 6.25},
    "claude-opus-4-1": {"input": 15.0, "output": 75.0, "cache_read": 1.50, "cache_write": 18.75},
    "claude-opus-4": {"input": 15.0, "output": 75.0, "cache_read": 1.50, "cache_write": 18.75},
    "claude-sonnet-4-5": {"input": 3.0, "output": 15.0, "cache_read": 0.30, "cache_write": 3.75},
    "claude-sonnet-4": {"input": 3.0, "output": 15.0, "cache_read": 0.30, "cache_write": 3.75},
    "claude-3-7-sonnet": {"input": 3.0, "output": 15.0, "cache_read": 0.30, "cache_write": 3.75},
    "claude-haiku-4-5": {"input": 1.0, "output": 5.0, "cache_read": 0.10, "cache_write": 1.25},
    "claude-3-5-haiku": {"input": 0.80, "output": 4.0, "cache_read": 0.08, "cache_write": 1.0},
}

STEP_STATUSES = ("proposed", "approved", "queued", "running", "succeeded", "failed", "rejected", "refused",
                 "interrupted")


def price_of(model: str, prices: dict[str, dict[str, float]]) -> dict[str, float] | None:
    """A model's prices: its exact name, else the longest listed name it starts with (dated snapshots such as
    claude-sonnet-4-5-20250929 and the -latest aliases cost what their family does)."""
    if model in prices:
        return prices[model]
    family = max((name for name in prices if model.startswith(name + "-")), key=len, default=None)
    return prices[family] if family else None


def cost_usd(usage: Usage, price: dict[str, float]) -> float:
    """USD of one call; `input_tokens` are the uncached ones, as Anthropic counts them."""
    return (usage.input_tokens * price.get("input", 0) + usage.output_tokens * price.get("output", 0)
            + usage.cache_read_tokens * price.get("cache_read", 0)
            + usage.cache_write_tokens * price.get("cache_write", 0)) / 1_000_000


class Metrics:
    def __init__(self, *, models: dict[str, str] | None = None,
                 prices: dict[str, dict[str, float]] | None = None) -> None:
        self.models = dict(models or {})            # provider name -> the model it calls, for the cost
        self.prices = {**LLM_PRICES, **(prices or {})}
        self.registry = CollectorRegistry()
        self.requests = Histogram("warroom_http_request_seconds", "HTTP request latency", ["route", "status"],
                                  registry=self.registry)
        self.webhooks = Counter("warroom_webhooks_total", "Webhook deliveries", ["source", "outcome"],
                                registry=self.registry)
        self.alerts = Counter("warroom_alerts_stored_total", "Alerts durably stored", ["source"],
                              registry=self.registry)
        self.annotations = Counter("warroom_annotations_total", "Alerts annotated", registry=self.registry)
        self.outbox_pending = Gauge("warroom_outbox_pending", "Messages waiting in the outbox",
                                    registry=self.registry)
        self.llm_calls = Counter("warroom_llm_calls_total", "Model call attempts, by outcome (ok, overloaded, "
                                 "rate_limited, server_error, timeout, connection_error, client_error, "
                                 "invalid_output)", ["provider", "outcome"], registry=self.registry)
        self.llm_tokens = Counter("warroom_llm_tokens_total", "Model tokens, by kind (input, output, cache_read, "
                                  "cache_write)", ["provider", "kind"], registry=self.registry)
        self.llm_latency = Histogram("warroom_llm_latency_seconds", "Model call attempt latency", ["provider"],
                                     buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60), registry=self.registry)
        self.llm_breaker_state = Gauge("warroom_llm_breaker_state", "Circuit breaker state (1 for the current one)",
                                       ["provider", "state"], registry=self.registry)
        self.llm_fallbacks = Counter("warroom_llm_fallbacks_total", "Answers given by the offline provider "
                                     "because the model failed, by reason", ["provider", "reason"],
                                     registry=self.registry)
        self.llm_cost = Counter("warroom_llm_cost_usd", "Model spend in USD from token counts and a price table "
                                "per model (list prices, WARROOM_LLM_PRICES); a model without a price (self-hosted, "
                                "unknown) and the offline provider count 0", ["provider", "model"],
                                registry=self.registry)
        self.cache_requests = Counter("warroom_cache_requests", "Cache lookups by outcome. llm_prompt: a model "
                                      "call that read its prompt prefix from the provider's cache (hit) or not "
                                      "(miss)", ["cache", "outcome"], registry=self.registry)
        self.outbox_lag = Gauge("warroom_outbox_lag_seconds", "Seconds since the oldest due, unsent outbox "
                                "message became due (0 when nothing is waiting)", registry=self.registry)
        self.outbox_dead = Gauge("warroom_outbox_dead", "Outbox messages parked as undeliverable",
                                 registry=self.registry)
        self._dedup = Tally()                       # (kind, outcome) -> count, for chat deliveries in this process
        self._dedup_lock = threading.Lock()

    def watch_incidents(self, pool, workspace: str = "default") -> None:
        """Export MTTA, MTTR and open incidents, read from the database at each scrape (once per registry)."""
        if getattr(self, "incidents", None) is None:
            self.incidents = IncidentCollector(pool, workspace)
            self.registry.register(self.incidents)

    def watch_work(self, pool, redis, workspace: str = "default") -> None:
        """Export queue depth, steps by status and the dedup ratio, read at each scrape (once per registry)."""
        if getattr(self, "work", None) is None:
            self.work = WorkCollector(self, pool, redis, workspace)
            self.registry.register(self.work)

    def refresh_outbox(self, pool) -> None:
        """The outbox gauges, from the database (called by /metrics before it renders)."""
        from bot.outbox import backlog

        with pool.connection() as conn:
            state = backlog(conn)
        self.outbox_pending.set(state["pending"])
        self.outbox_lag.set(state["lag_s"])
        self.outbox_dead.set(state["dead"])

    def dedup(self, kind: str, first: bool) -> None:
        """A chat delivery or click seen for the first time, or again (a retry, a double click)."""
        with self._dedup_lock:
            self._dedup[(kind, "first" if first else "duplicate")] += 1

    def dedup_counts(self) -> dict[tuple[str, str], int]:
        with self._dedup_lock:
            return dict(self._dedup)

    # The engine's LLMRecorder protocol: providers report here without knowing prometheus exists.

    def llm_call(self, provider: str, outcome: str, latency_s: float, usage: Usage | None) -> None:
        self.llm_calls.labels(provider, outcome).inc()
        self.llm_latency.labels(provider).observe(latency_s)
        if usage is not None:
            for kind, value in (("input", usage.input_tokens), ("output", usage.output_tokens),
                                ("cache_read", usage.cache_read_tokens), ("cache_write", usage.cache_write_tokens)):
                self.llm_tokens.labels(provider, kind).inc(value)
            model = self.models.get(provider, "unknown")
            price = price_of(model, self.prices)
            if provider == "openai":  # its prompt_tokens include the cached ones; bill those once, as cache reads
                usage = replace(usage, input_tokens=max(0, usage.input_tokens - usage.cache_read_tokens))
            self.llm_cost.labels(provider, model).inc(cost_usd(usage, price) if price else 0.0)
            if usage.input_tokens or usage.cache_read_tokens or usage.cache_write_tokens:
                self.cache_requests.labels("llm_prompt", "hit" if usage.cache_read_tokens else "miss").inc()

    def llm_breaker(self, provider: str, state: str) -> None:
        for name in BREAKER_STATES:
            self.llm_breaker_state.labels(provider, name).set(1 if name == state else 0)

    def llm_fallback(self, provider: str, reason: str) -> None:
        self.llm_fallbacks.labels(provider, reason).inc()


class IncidentCollector(Collector):
    """MTTA and MTTR histograms and open incidents by state, computed from `incidents` and
    `incident_transitions` at scrape time rather than observed in-process: transitions happen in every
    replica and in workers (a step that mitigates), and a restart would lose in-process observations. Any
    replica's /metrics gives the same whole picture, so scrape one replica or use max() over them, not sum().
    Labelled by severity only, to keep cardinality low; a scrape costs two small aggregate queries."""

    def __init__(self, pool, workspace: str = "default") -> None:
        self.pool = pool
        self.workspace = workspace

    def describe(self):
        return []  # collected at scrape time; registering must not query the database

    def collect(self):
        mtta = HistogramMetricFamily("warroom_incident_mtta_seconds", "Seconds from detection to the first "
                                     "acknowledgement, per acknowledged incident (MTTA = _sum / _count)",
                                     labels=["severity"])
        mttr = HistogramMetricFamily("warroom_incident_mttr_seconds", "Seconds from detection to resolution, "
                                     "per resolved incident (MTTR = _sum / _count)", labels=["severity"])
        open_ = GaugeMetricFamily("warroom_incidents_open", "Incidents not yet resolved, by state",
                                  labels=["state"])
        try:
            with self.pool.connection() as conn:
                acked = incident_store.durations(conn, to_state=lifecycle.ACKNOWLEDGED, buckets=list(MTTA_BUCKETS),
                                                 workspace=self.workspace)
                resolved = incident_store.durations(conn, to_state=lifecycle.RESOLVED, buckets=list(MTTR_BUCKETS),
                                                    workspace=self.workspace)
                counts = incident_store.count_by_state(conn, workspace=self.workspace)
        except Exception:  # noqa: BLE001 (a database hiccup must not fail the whole scrape; the gap shows)
            log.exception("reading incident metrics failed")
            return
        for family, rows in ((mtta, acked), (mttr, resolved)):
            for severity, buckets, count, total in _histograms(rows):
                family.add_metric([severity], buckets + [("+Inf", count)], total)
        for state in lifecycle.OPEN:  # every open state, zeros included, so series do not vanish
            open_.add_metric([state], counts.get(state, 0))
        yield mtta
        yield mttr
        yield open_


class WorkCollector(Collector):
    """Read at scrape time: the RQ queue (waiting and started jobs, from Redis), plan steps by status and the
    dedup ratio. Steps and alert re-deliveries come from the database, so every replica reports the same
    whole-system numbers (use max(), not sum()); chat retries and double clicks are counted by the replica
    that received them (sum() them)."""

    def __init__(self, metrics: Metrics, pool, redis, workspace: str = "default") -> None:
        self.metrics = metrics
        self.pool = pool
        self.redis = redis
        self.workspace = workspace

    def describe(self):
        return []  # collected at scrape time; registering must not query anything

    def collect(self):
        yield from self._queue()
        steps = GaugeMetricFamily("warroom_steps", "Plan steps by status (all plans, from the database)",
                                  labels=["status"])
        dedup = CounterMetricFamily("warroom_dedup", "Deliveries by whether they were new (first) or a repeat "
                                    "that was recognised and not acted on again (duplicate). kind=alert: "
                                    "alert notifications of a state already stored (database-wide); "
                                    "slack_*/teams_*: platform retries and double clicks (this replica)",
                                    labels=["kind", "outcome"])
        counts = dict(self.metrics.dedup_counts())
        try:
            with self.pool.connection() as conn:
                by_status = {r["status"]: r["n"] for r in conn.execute(
                    "SELECT status, count(*) AS n FROM plan_steps GROUP BY status").fetchall()}
                alerts = conn.execute(
                    "SELECT count(*) AS first, coalesce(sum(notifications - 1), 0) AS duplicate FROM alerts "
                    "WHERE workspace = %s", (self.workspace,)).fetchone()
        except Exception:  # noqa: BLE001 (a database hiccup must not fail the whole scrape; the gap shows)
            log.exception("reading step and alert metrics failed")
        else:
            for status in sorted(set(STEP_STATUSES) | set(by_status)):
                steps.add_metric([status], by_status.get(status, 0))
            counts[("alert", "first")] = alerts["first"]
            counts[("alert", "duplicate")] = alerts["duplicate"]
            yield steps
        for (kind, outcome), n in sorted(counts.items()):
            dedup.add_metric([kind, outcome], n)
        yield dedup

    def _queue(self):
        if self.redis is None:
            return
        from rq import Queue
        from rq.registry import StartedJobRegistry

        from connectors.queue import QUEUE

        depth = GaugeMetricFamily("warroom_queue_depth", "Step jobs in the RQ queue: queued (waiting for a "
                                  "worker) and started (a worker is running them)", labels=["queue", "state"])
        try:
            queue = Queue(QUEUE, connection=self.redis)
            queued, started = queue.count, StartedJobRegistry(queue=queue).count
        except Exception:  # noqa: BLE001
            log.exception("reading the step queue failed")
            return
        depth.add_metric([QUEUE, "queued"], queued)
        depth.add_metric([QUEUE, "started"], started)
        yield depth


def _histograms(rows):
    """storage rows (severity, le, le_count, n, total) -> (severity, [(le, cumulative count)], n, sum)."""
    out: dict[str, tuple[list, int, float]] = {}
    for r in rows:
        buckets, _, _ = out.setdefault(r["severity"], ([], r["n"], float(r["total"] or 0)))
        buckets.append((_le(r["le"]), r["le_count"]))
    return [(severity, buckets, n, total) for severity, (buckets, n, total) in out.items()]


def _le(bound: float) -> str:
    return str(int(bound)) + ".0" if float(bound).is_integer() else str(bound)
