"""Names shared by every process: Redis keys, stream fields, consumer groups.

One place per fact: any code that touches Redis takes its names from here, so
producers and consumers can never disagree.

Every key that one script touches together carries the same hash tag (the part in
braces), so that on a Redis Cluster the keys of a script share a slot and a node:
the queue's keys ``{events:0}``, the rate budget's ``{budget}``. Keys that are only
ever touched alone (the live policy, each process's view) need none.
"""

from typing import Final

QUEUE_TAG: Final = "trackrelay:{events:0}"
"""What every key of the queue starts with: its hash tag (a shard's number inside)."""

STREAM: Final = QUEUE_TAG
"""The Redis Stream that carries analytics events from the relay to forwarders."""

DLQ_STREAM: Final = QUEUE_TAG + ":dlq"
"""Events that analytics rejected, or that failed too often, with the reason."""

CONSUMER_GROUP: Final = "forwarders"
"""The consumer group every forwarder reads ``STREAM`` through."""

EVENT_FIELD: Final = "e"
"""The single stream-entry field that holds an event's JSON encoding."""

DLQ_REASON_FIELD: Final = "reason"
DLQ_DELIVERIES_FIELD: Final = "deliveries"
DLQ_SOURCE_ID_FIELD: Final = "source_id"

BUDGET_KEY: Final = "trackrelay:{budget}"
"""Live configuration: the rate budget in events/s shared by all forwarders (absent: none)."""

BUDGET_CLOCK_KEY: Final = BUDGET_KEY + ":tat"
"""The shared rate limiter's state: when the budget is next free (Redis' clock, seconds)."""

FORWARDER_STATS_PREFIX: Final = "trackrelay:forwarder:"
"""Each forwarder publishes what it sees under this prefix plus its consumer name, with a TTL."""

AGG_WINDOWS_KEY: Final = QUEUE_TAG + ":agg:windows"
"""Aggregation windows not yet flushed: a sorted set of their hash keys, scored by start (ms)."""

AGG_WINDOW_PREFIX: Final = QUEUE_TAG + ":agg:w:"
"""One hash per aggregation window (prefix + an id; its start is its score in
``AGG_WINDOWS_KEY``): SKU -> "qty*weight sum, lines"."""

AGG_FOLDS_KEY: Final = QUEUE_TAG + ":agg:folds"
"""Outbox batches already folded (token -> expiry ms), so a retried fold never counts twice."""

QUOTA_GAUGE_KEY: Final = QUEUE_TAG + ":quota:gauge"
"""The queue-memory gauge: the last sampled bytes, when, and bytes added since."""

RELAY_STATS_PREFIX: Final = "trackrelay:relay:"
"""Each relay publishes its shedding view under this prefix plus its name, with a TTL."""

QUOTA_KEYS: Final = (STREAM, DLQ_STREAM, AGG_WINDOWS_KEY, QUOTA_GAUGE_KEY, AGG_FOLDS_KEY)
"""The fixed keys the queue quota covers (plus every window hash in ``AGG_WINDOWS_KEY``)."""

SHEDDING_KEY: Final = "trackrelay:shedding"
"""Live configuration: the shedding policy the controller decided, JSON ``{"policy", "p"}``.

Relays follow it when present; without it each relay decides from its own settings."""

LEGACY_KEYS: Final = {
    "trackrelay:events": STREAM,
    "trackrelay:events:dlq": DLQ_STREAM,
    "trackrelay:agg:windows": AGG_WINDOWS_KEY,
    "trackrelay:agg:folds": AGG_FOLDS_KEY,
    "trackrelay:quota:gauge": QUOTA_GAUGE_KEY,
    "trackrelay:budget": BUDGET_KEY,
    "trackrelay:budget:tat": BUDGET_CLOCK_KEY,
}
"""Names before the hash tags (trackrelay 0.x, one Redis): each and its name now.
``queue.legacy`` moves what a Redis still holds under them."""

LEGACY_WINDOW_PREFIX: Final = "trackrelay:agg:w:"
"""The aggregation windows' prefix before the hash tags."""
