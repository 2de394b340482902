"""Prometheus metrics of one process, on its own registry (exported on /metrics)."""
from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from engine import lifecycle
from engine.llm.base import Usage
from storage import incidents as incident_store

log = logging.getLogger(__name__)

# Seconds: acknowledging is expected within minutes, resolving within hours.
MTTA_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)
MTTR_BUCKETS = (300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800)

BREAKER_STATES = ("closed", "half_open", "open")


class Metrics:
    def __init__(self) -> None:
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

    def watch_incidents(self, pool, workspace: str = "default") -> None:
        """Export MTTA, MTTR and open incidents, read from the database at each scrape (once per registry)."""
        if getattr(self, "incidents", None) is None:
            self.incidents = IncidentCollector(pool, workspace)
            self.registry.register(self.incidents)

    # The engine's LLMRecorder protocol: providers report here without knowing prometheus exists.

    def llm_call(self, provider: str, outcome: str, latency_s: float, usage: Usage | None) -> None:
        self.llm_calls.labels(provider, outcome).inc()
        self.llm_latency.labels(provider).observe(latency_s)
        if usage is not None:
            for kind, value in (("input", usage.input_tokens), ("output", usage.output_tokens),
                                ("cache_read", usage.cache_read_tokens), ("cache_write", usage.cache_write_tokens)):
                self.llm_tokens.labels(provider, kind).inc(value)

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


def _histograms(rows):
    """storage rows (severity, le, le_count, n, total) -> (severity, [(le, cumulative count)], n, sum)."""
    out: dict[str, tuple[list, int, float]] = {}
    for r in rows:
        buckets, _, _ = out.setdefault(r["severity"], ([], r["n"], float(r["total"] or 0)))
        buckets.append((_le(r["le"]), r["le_count"]))
    return [(severity, buckets, n, total) for severity, (buckets, n, total) in out.items()]


def _le(bound: float) -> str:
    return str(int(bound)) + ".0" if float(bound).is_integer() else str(bound)
