"""Prometheus metrics of the outbox relay and the shedding at our ingress."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
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
            "Queue memory as admission counts it: what the queue's keys use in Redis (as the"
            " quota gauge estimates it) plus the room kept for the next stream node and the"
            " entries forwarders will hold.",
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
