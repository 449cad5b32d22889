"""Prometheus metrics of a forwarder process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ForwarderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.forwarded = Counter(
            "trackrelay_events_forwarded", "Events analytics accepted.", registry=r
        )
        self.push_latency = Histogram(
            "trackrelay_push_duration_seconds",
            "Latency of pushes to analytics.",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.failures = Counter(
            "trackrelay_push_failures", "Failed pushes by class.", ["class"], registry=r
        )
        self.pending = Gauge(
            "trackrelay_stream_pending", "Entries delivered but not acked.", registry=r
        )
        self.stream_length = Gauge("trackrelay_stream_length", "Entries in the stream.", registry=r)
        self.dlq_size = Gauge(
            "trackrelay_dlq_size", "Entries in the dead-letter stream.", registry=r
        )
        self.redis_full = Gauge(
            "trackrelay_queue_redis_full",
            "1 while the queue's Redis is at its maxmemory and refuses new writes "
            "(the forwarders still drain it).",
            registry=r,
        )
        self.batch_size = Histogram(
            "trackrelay_batch_size",
            "Events per push.",
            registry=r,
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000),
        )
        self.lost_ownership = Counter(
            "trackrelay_events_lost_ownership",
            "Held events dropped unpushed: another forwarder took them over during a stall.",
            registry=r,
        )
        self.dead_lettered = Counter(
            "trackrelay_events_dead_lettered", "Events moved to the DLQ.", registry=r
        )
        self.limit = Gauge(
            "trackrelay_window_limit_events",
            "The adaptive window: events this forwarder may have in flight at analytics.",
            registry=r,
        )
        self.in_flight = Gauge(
            "trackrelay_window_in_flight_events", "Events lanes hold now.", registry=r
        )
        self.breaker = Gauge(
            "trackrelay_breaker_state",
            "Circuit breaker on analytics: 0 closed, 1 half-open (probing), 2 open.",
            registry=r,
        )
        self.budget = Gauge(
            "trackrelay_budget_events_per_second",
            "The shared rate budget last seen (0: none set).",
            registry=r,
        )
        self.budget_wait = Counter(
            "trackrelay_budget_wait_seconds",
            "Seconds pushes waited for their slot in the shared budget.",
            registry=r,
        )
        self.retries_denied = Counter(
            "trackrelay_retries_denied",
            "Retries the retry allowance held back (analytics failing more than it accepts).",
            registry=r,
        )
