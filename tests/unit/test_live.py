"""The demo's synthetic shoppers post valid, skewed orders."""

from __future__ import annotations

import collections
import random

from trackrelay.local.live import SKUS, random_order
from trackrelay.orders.models import OrderRequest


def test_synthetic_orders_are_valid_and_skewed() -> None:
    rng = random.Random(3)
    counts: collections.Counter[str] = collections.Counter()
    for n in range(2000):
        order = OrderRequest.model_validate(random_order(rng, n))
        assert 1 <= len(order.items) <= 3
        counts.update(item.sku for item in order.items)
    assert set(counts) <= set(SKUS)
    # Zipf-like: the first SKU sells far more than the tenth.
    assert counts[SKUS[0]] > 5 * counts[SKUS[9]]


def test_the_status_line_shows_policy_memory_against_quota_and_shed_counts() -> None:
    from trackrelay.local.live import shedding_parts

    view = {
        "policy": "sample",
        "p": 0.25,
        "queue_bytes": 48 * 1024 * 1024,
        "queue_quota": 64 * 1024 * 1024,
        "outbox_rows": 120,
        "outbox_quota": 1000,
        "outbox_policy": "none",
        "shed": {"stream:sample:sampled": 1500, "outbox:evict:evicted": 3},
    }
    line = " | ".join(shedding_parts({"relay-1": view}))
    assert "queue 48.0 MiB/64.0 MiB (75%) shedding sample p=0.25" in line
    assert "outbox 120/1000 rows (none)" in line
    assert "outbox:evict:evicted 3" in line and "stream:sample:sampled 1500" in line
    assert shedding_parts({"relay-1": {"shed": {}, "full": False}}) == []


def test_the_embedded_redis_runs_above_the_quota() -> None:
    from trackrelay.local.runner import redis_maxmemory

    assert redis_maxmemory(None) is None
    quota = 64 * 1024 * 1024
    assert int(redis_maxmemory(quota) or 0) > quota
