"""How long a woken relay lets commits gather (``relay.gather_seconds``), and the
wake-up latch counting the commits that set it."""

from __future__ import annotations

from trackrelay.relay.relay import GATHER, GATHER_MAX, gather_seconds
from trackrelay.relay.wakeup import Wakeup


def test_a_light_load_gathers_the_least_and_a_heavy_one_the_most() -> None:
    assert gather_seconds(0) == GATHER
    assert gather_seconds(100) == GATHER
    assert gather_seconds(1_000) == GATHER_MAX
    assert gather_seconds(50_000) == GATHER_MAX


def test_gathering_grows_with_the_rate_of_commits_between_its_bounds() -> None:
    rates = [200, 300, 500, 800, 1_000]
    waits = [gather_seconds(r) for r in rates]
    assert waits == sorted(waits) and len(set(waits)) == len(waits)
    assert all(GATHER <= w <= GATHER_MAX for w in waits)


def test_clearing_the_latch_returns_the_commits_since_the_last_clear() -> None:
    latch = Wakeup()
    for _ in range(3):
        latch.notify()
    assert latch.clear() == 3
    assert latch.clear() == 0
