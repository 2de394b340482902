"""Prometheus metrics of one process, on its own registry (exported on /metrics)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from engine.llm.base import Usage

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
