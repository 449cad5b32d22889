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
