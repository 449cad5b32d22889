"""Names shared by every process: Redis keys, stream fields, consumer groups.

One place per fact (arq's ``constants.py``): any code that touches Redis takes
its names from here, so producers and consumers can never disagree.
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
