"""The shedding policy as live configuration in Redis (local mode's controller writes it,
relays read it); in a cluster the operator's ConfigMap carries it instead."""

from __future__ import annotations

import json
from typing import Any

from trackrelay.queue.client import set_small
from trackrelay.queue.handle import Queue
from trackrelay.queue.keys import SHEDDING_KEY


async def set_shedding(redis: Queue, policy: dict[str, Any]) -> None:
    """Publish the controller's shedding decision (JSON ``{"policy", "p"}``)."""
    await set_small(redis, SHEDDING_KEY, json.dumps(policy))


async def get_shedding(redis: Queue) -> bytes | str | None:
    """The raw published decision, or None when the controller has set none."""
    raw: bytes | str | None = await redis.get(SHEDDING_KEY)
    return raw
