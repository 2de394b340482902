"""Prometheus metrics of one process, on its own registry (exported on /metrics)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
