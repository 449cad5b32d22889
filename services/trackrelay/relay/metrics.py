"""Prometheus metrics of the outbox relay and the shedding at our ingress."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)
"""Seconds: fine up to the 50 ms a relay at pace takes, coarse through an outage."""


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
        self.relay_delay = Histogram(
            "trackrelay_relay_delay_seconds",
            "Seconds from an order's moment to the relay moving its events out of the outbox"
            " (into the stream, or shed at our ingress), per event.",
            buckets=DELAY_BUCKETS,
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
