"""Prometheus metrics of the order service and its relay, one registry per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
        self.outbox_depth = Gauge(
            "trackrelay_outbox_depth", "Outbox rows not yet relayed to Redis.", registry=r
        )
        self.relay_lag = Gauge(
            "trackrelay_relay_lag_seconds", "Age of the oldest outbox row.", registry=r
        )
        self.relay_published = Counter(
            "trackrelay_relay_published_events",
            "Events the relay moved into the stream.",
            registry=r,
        )
        self.relay_errors = Counter(
            "trackrelay_relay_errors",
            "Relay rounds that failed, by component.",
            ["component"],
            registry=r,
        )
        self.shed = Counter(
            "trackrelay_shed_lines",
            "Order lines whose analytics events were shed at our ingress (never the orders), by"
            " where (stream or outbox), policy and reason (sampled, evicted, refused; folded:"
            " delivered inside an aggregate). An aggregate counts the lines it stands for.",
            ["where", "policy", "reason"],
            registry=r,
        )
        self.queue_bytes = Gauge(
            "trackrelay_queue_bytes",
            "Memory the queue's keys use in Redis, as the quota gauge estimates it.",
            registry=r,
        )
        self.queue_quota = Gauge(
            "trackrelay_queue_quota_bytes", "The queue's storage quota.", registry=r
        )
        self.keep_probability = Gauge(
            "trackrelay_shedding_keep_probability",
            "Sampling's keep probability at the stream (1: nothing sampled).",
            registry=r,
        )
