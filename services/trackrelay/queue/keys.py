"""Names shared by every process: Redis keys, stream fields, consumer groups.

One place per fact: any code that touches Redis takes its names from here, so
producers and consumers can never disagree.
"""

from typing import Final

STREAM: Final = "trackrelay:events"
"""The Redis Stream that carries analytics events from the relay to forwarders."""

DLQ_STREAM: Final = "trackrelay:events:dlq"
"""Events that analytics rejected, or that failed too often, with the reason."""

CONSUMER_GROUP: Final = "forwarders"
"""The consumer group every forwarder reads ``STREAM`` through."""

EVENT_FIELD: Final = "e"
"""The single stream-entry field that holds an event's JSON encoding."""

DLQ_REASON_FIELD: Final = "reason"
DLQ_DELIVERIES_FIELD: Final = "deliveries"
DLQ_SOURCE_ID_FIELD: Final = "source_id"

BUDGET_KEY: Final = "trackrelay:budget"
"""Live configuration: the rate budget in events/s shared by all forwarders (absent: none)."""

BUDGET_CLOCK_KEY: Final = "trackrelay:budget:tat"
"""The shared rate limiter's state: when the budget is next free (Redis' clock, seconds)."""

FORWARDER_STATS_PREFIX: Final = "trackrelay:forwarder:"
"""Each forwarder publishes what it sees under this prefix plus its consumer name, with a TTL."""

AGG_WINDOWS_KEY: Final = "trackrelay:agg:windows"
"""Aggregation windows not yet flushed: a sorted set of their hash keys, scored by start (ms)."""

AGG_WINDOW_PREFIX: Final = "trackrelay:agg:w:"
"""One hash per aggregation window (prefix + start ms): SKU -> "qty*weight sum, lines"."""

AGG_FOLDS_KEY: Final = "trackrelay:agg:folds"
"""Outbox batches already folded (token -> expiry ms), so a retried fold never counts twice."""

QUOTA_GAUGE_KEY: Final = "trackrelay:quota:gauge"
"""The queue-memory gauge: the last sampled bytes, when, and bytes added since."""

RELAY_STATS_PREFIX: Final = "trackrelay:relay:"
"""Each relay publishes its shedding view under this prefix plus its name, with a TTL."""

QUOTA_KEYS: Final = (STREAM, DLQ_STREAM, AGG_WINDOWS_KEY, QUOTA_GAUGE_KEY, AGG_FOLDS_KEY)
"""The fixed keys the queue quota covers (plus every window hash in ``AGG_WINDOWS_KEY``)."""

SHEDDING_KEY: Final = "trackrelay:shedding"
"""Live configuration: the shedding policy the controller decided, JSON ``{"policy", "p"}``.

Relays follow it when present; without it each relay decides from its own settings."""
