"""Pure decisions: lease rules and backoff."""

from __future__ import annotations

import random

import pytest

from trackrelay.control import backoff
from trackrelay.control.lease import grant, is_free, still_held


def test_lease_rules() -> None:
    lease = grant("relay-a", now=100.0, duration=30.0)
    assert lease.token.startswith("relay-a/")
    assert lease.expires_at == 130.0
    assert grant("relay-a", 100.0, 30.0).token != lease.token
    assert is_free(None, 100.0)
    assert not is_free(lease.expires_at, 129.9)
    assert is_free(lease.expires_at, 130.0)
    assert still_held(lease, now=120.0, margin=1.0)
    assert not still_held(lease, now=129.5, margin=1.0)
    with pytest.raises(ValueError):
        grant("x", 0.0, 0.0)


def test_backoff_grows_exponentially_and_is_capped() -> None:
    assert backoff.ceiling(0, 0.1, 5.0) == 0.0
    assert [backoff.ceiling(n, 0.1, 5.0) for n in (1, 2, 3, 4)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8]
    )
    assert backoff.ceiling(10_000, 0.1, 5.0) == 5.0
    rng = random.Random(1)
    draws = [backoff.full_jitter(6, 0.1, 5.0, rng) for _ in range(500)]
    assert all(0.0 <= d <= 3.2 for d in draws)
    assert max(draws) > 2.5 and min(draws) < 0.5  # jitter spreads over the whole range
