"""Prometheus metrics of the order service, one registry per app; the relay it runs adds its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from trackrelay.relay.metrics import RelayMetrics


class OrderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.request_latency = Histogram(
            "trackrelay_http_request_duration_seconds",
            "Order API request latency.",
            ["method", "route", "status"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.orders_accepted = Counter(
            "trackrelay_orders_accepted",
            "Orders stored (not counting idempotent repeats).",
            registry=r,
        )
        self.orders_rejected = Counter(
            "trackrelay_orders_rejected",
            "Order requests refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.relay = RelayMetrics(r)
        """The in-process relay's metrics, on the same registry."""
