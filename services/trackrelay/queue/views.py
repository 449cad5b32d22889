"""Published views: what each forwarder and relay tells the controller, under a TTL.

Each process writes its own key (a prefix plus its name) and lets it expire with
the process, so the controller reads only live processes and never a dead one's
last word.
"""

from __future__ import annotations

import json
from typing import Any

from trackrelay.queue.client import set_small
from trackrelay.queue.handle import Queue
from trackrelay.queue.keys import FORWARDER_STATS_PREFIX


async def publish_stats(
    redis: Queue,
    consumer: str,
    stats: dict[str, Any],
    ttl: float,
    prefix: str = FORWARDER_STATS_PREFIX,
) -> None:
    """Publish one process's view (JSON) for the controller; it expires with the process.

    Forwarders publish under ``FORWARDER_STATS_PREFIX``, relays under ``RELAY_STATS_PREFIX``.
    """
    await set_small(redis, prefix + consumer, json.dumps(stats), ttl)


async def read_stats(
    redis: Queue, prefix: str = FORWARDER_STATS_PREFIX
) -> dict[str, dict[str, Any]]:
    """Every live process's published view under ``prefix``, by name."""
    keys = [k async for k in redis.scan_iter(match=prefix + "*", count=200)]
    if not keys:
        return {}
    # One GET a key in a pipeline, not MGET: on a Redis Cluster the views' keys hash to
    # any slot, and a multi-key command must stay within one.
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    out: dict[str, dict[str, Any]] = {}
    for key, raw in zip(keys, await pipe.execute(), strict=True):
        if raw is None:
            continue
        name = key.decode() if isinstance(key, bytes) else str(key)
        out[name[len(prefix) :]] = json.loads(raw)
    return out
