"""Names shared by every process: Redis keys, stream fields, consumer groups.

One place per fact: any code that touches Redis takes its names from here, so
producers and consumers can never disagree.

Every key that one script touches together carries the same hash tag (the part in
braces), so that on a Redis Cluster the keys of a script share a slot and a node:
a shard's keys ``{events:<n>}`` (``Shard``), the rate budget's ``{budget}``. Keys that are only
ever touched alone (the live policy, each process's view) need none.
"""

from dataclasses import dataclass
from typing import Final

from trackrelay.events import MAX_SHARDS


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard of the queue: its stream, DLQ, aggregation windows and bookkeeping.

    Every key of a shard carries the shard's hash tag ``{events:<n>}``, so a shard's
    scripts run on one node of a Redis Cluster, and different shards hash to different
    slots (spread over the nodes). Shard 0's names are the single-stream queue's."""

    number: int

    @property
    def tag(self) -> str:
        """What every key of the shard starts with: its hash tag."""
        return f"trackrelay:{{events:{self.number}}}"

    @property
    def stream(self) -> str:
        """The Redis Stream that carries analytics events from the relay to forwarders."""
        return self.tag

    @property
    def dlq(self) -> str:
        """Events that analytics rejected, or that failed too often, with the reason."""
        return self.tag + ":dlq"

    @property
    def windows(self) -> str:
        """Aggregation windows not yet flushed: a sorted set of their hash keys, scored by
        start (ms)."""
        return self.tag + ":agg:windows"

    @property
    def window_prefix(self) -> str:
        """One hash per aggregation window (prefix + an id): SKU -> "qty*weight sum, lines"."""
        return self.tag + ":agg:w:"

    @property
    def folds(self) -> str:
        """Outbox batches already folded (token -> expiry ms), so a retried fold never
        counts twice."""
        return self.tag + ":agg:folds"

    @property
    def gauge(self) -> str:
        """The queue-memory gauge: the last sampled bytes, when, and bytes added since."""
        return self.tag + ":quota:gauge"

    @property
    def replicated(self) -> str:
        """Written before each ``WAIT`` (``queue/replicas.py``): the last moment (ms) a
        batch of the shard was replicated; on the shard's node, as its tag puts it."""
        return self.tag + ":replicated"

    @property
    def quota_keys(self) -> tuple[str, str, str, str, str]:
        """The fixed keys the quota covers (plus every window hash listed in ``windows``),
        in the order the quota's scripts read them."""
        return (self.stream, self.dlq, self.windows, self.gauge, self.folds)


def first_shards(count: int) -> list[Shard]:
    """The first ``count`` shards."""
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"a queue has 1 to {MAX_SHARDS} shards, not {count}")
    return [Shard(n) for n in range(count)]


SHARD0: Final = Shard(0)
"""The first shard: the whole queue when it has one."""

SHARDS_KEY: Final = "trackrelay:shards"
"""How many shards the queue has: raised by the first process started with more, never
lowered (a shard once written to is read until it is empty). Absent: one."""

QUEUE_TAG: Final = SHARD0.tag
STREAM: Final = SHARD0.stream
DLQ_STREAM: Final = SHARD0.dlq

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

AGG_WINDOWS_KEY: Final = SHARD0.windows
AGG_WINDOW_PREFIX: Final = SHARD0.window_prefix
AGG_FOLDS_KEY: Final = SHARD0.folds
QUOTA_GAUGE_KEY: Final = SHARD0.gauge

RELAY_STATS_PREFIX: Final = "trackrelay:relay:"
"""Each relay publishes its shedding view under this prefix plus its name, with a TTL."""

QUOTA_KEYS: Final = SHARD0.quota_keys

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
