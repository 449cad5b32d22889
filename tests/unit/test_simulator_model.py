"""The simulator's capacity model, fault schedule and contract checks (pure)."""

from __future__ import annotations

import random

import pytest

from trackrelay.analytics_sim.model import (
    Capacity,
    Fault,
    Mode,
    Schedule,
    check_events,
    extra_latency,
    fault_verdict,
)


def test_unlimited_capacity_answers_at_once() -> None:
    cap = Capacity(rate=0)
    assert cap.admit(0.0, 10_000).status == 200
    assert cap.admit(0.0, 10_000).delay == 0.0


def test_latency_rises_with_load() -> None:
    cap = Capacity(rate=1000, overhead=0.01, queue_limit=10_000)
    delays = [cap.admit(0.0, 100).delay for _ in range(5)]
    assert delays == pytest.approx([0.11, 0.22, 0.33, 0.44, 0.55])
    assert cap.backlog(0.0) == pytest.approx(550)
    # Once the queue drained, a request is fast again.
    assert cap.admit(10.0, 100).delay == pytest.approx(0.11)


def test_past_the_queue_limit_it_answers_429_with_retry_after() -> None:
    cap = Capacity(rate=100, queue_limit=300)
    assert cap.admit(0.0, 200).status == 200
    refused = cap.admit(0.0, 200)
    assert refused.status == 429
    assert refused.retry_after == 1.0
    assert cap.backlog(0.0) == pytest.approx(200)  # a refused request adds no work


def test_collapse_mode_loses_goodput_under_overload() -> None:
    calm, collapsing = (
        Capacity(rate=1000, queue_limit=1000),
        Capacity(rate=1000, queue_limit=1000, collapse=True),
    )
    for cap in (calm, collapsing):
        for _ in range(8):
            assert cap.admit(0.0, 100).status == 200
    # The same 800 events take longer to serve once the queue is past half full.
    assert collapsing.busy_until > calm.busy_until * 1.1
    assert collapsing.effective_rate(0.0) < 1000 / 2
    assert collapsing.effective_rate(100.0) == 1000  # recovered once drained


def test_a_request_knows_how_long_it_waited_behind_queued_work() -> None:
    cap = Capacity(rate=1000, overhead=0.01, queue_limit=10_000)
    first, second = cap.admit(0.0, 100), cap.admit(0.0, 100)
    assert (first.delay, first.queued) == pytest.approx((0.11, 0.0))
    assert (second.delay, second.queued) == pytest.approx((0.22, 0.11))
    assert cap.admit(0.2, 100).queued == pytest.approx(0.02)
    assert Capacity(rate=0, overhead=0.02).admit(0.0, 5).queued == 0.0


def test_another_client_below_the_rate_queues_nothing_on_an_idle_server() -> None:
    cap = Capacity(rate=100, queue_limit=1000, other_client=60)
    cap.accrue(0.0)
    assert cap.backlog(10.0) == 0.0
    assert cap.other_served == pytest.approx(600)
    assert cap.admit(10.0, 40).delay == pytest.approx(0.4)


def test_another_client_takes_its_share_behind_our_queued_work() -> None:
    cap = Capacity(rate=100, queue_limit=1000, other_client=60)
    cap.accrue(0.0)
    assert cap.admit(0.0, 500).delay == pytest.approx(5.0)
    # What it sent while our 500 events were served waits behind them: 5 s x 60 ev/s.
    assert cap.backlog(5.0) == pytest.approx(300)
    assert cap.admit(5.0, 10).delay == pytest.approx(3.1)


def test_saturated_we_are_left_the_rate_less_what_the_other_client_takes() -> None:
    cap = Capacity(rate=100, queue_limit=200, other_client=60)
    cap.accrue(0.0)
    ours = 0
    for tick in range(1000):  # 10 events every 0.1 s: 100 ev/s offered, the whole rate
        accepted = cap.admit(tick / 10, 10).status == 200
        if tick >= 200 and accepted:
            ours += 10
    assert ours == pytest.approx(40 * 80, rel=0.05)
    assert cap.other_refused == pytest.approx(0, abs=10)


def test_another_client_past_the_queue_limit_is_refused_and_so_are_we() -> None:
    cap = Capacity(rate=100, queue_limit=100, other_client=200)
    cap.accrue(0.0)
    assert cap.backlog(2.0) == pytest.approx(100)
    assert (cap.other_served, cap.other_refused) == pytest.approx((300, 100))
    assert cap.admit(2.0, 1).status == 429
    with pytest.raises(ValueError, match="other_client"):
        Capacity.changes({"other_client": -5})
    assert Capacity.changes({"other_client": 50}) == {"other_client": 50.0}


def test_faults() -> None:
    rng = random.Random(7)
    assert fault_verdict(Fault(Mode.HEALTHY), rng) is None
    down = fault_verdict(Fault(Mode.DOWN), rng)
    assert down is not None and down.status == 503 and down.retry_after == 1.0
    hang = fault_verdict(Fault(Mode.HANG, hang=99), rng)
    assert hang is not None and hang.delay == 99
    assert extra_latency(Fault(Mode.SLOW, latency=0.5)) == 0.5
    assert extra_latency(Fault(Mode.HEALTHY, latency=0.5)) == 0.0
    flaky = Fault(Mode.FLAKY, error_rate=0.3)
    errors = sum(1 for _ in range(2000) if fault_verdict(flaky, rng) is not None)
    assert 500 < errors < 700


def test_fault_parse_errors_name_the_field() -> None:
    assert Fault.parse({"mode": "slow", "latency": 2}).latency == 2.0
    with pytest.raises(ValueError, match="mode must be one of"):
        Fault.parse({"mode": "sleepy"})
    with pytest.raises(ValueError, match="latency"):
        Fault.parse({"mode": "slow", "latency": -1})
    with pytest.raises(ValueError, match="error_rate"):
        Fault.parse({"mode": "flaky", "error_rate": 2})
    with pytest.raises(ValueError, match="unknown fault fields"):
        Fault.parse({"mode": "down", "colour": "red"})


def test_schedule_phases_in_time() -> None:
    sched = Schedule.parse(
        {
            "phases": [
                {"duration": 10, "mode": "healthy"},
                {"duration": 5, "mode": "down"},
                {"duration": 5, "mode": "slow", "latency": 1},
            ]
        }
    )
    assert sched.fault_at(0).mode is Mode.HEALTHY
    assert sched.fault_at(12).mode is Mode.DOWN
    assert sched.fault_at(16).latency == 1
    assert sched.fault_at(1000).mode is Mode.SLOW  # the last phase stays
    looping = Schedule(sched.phases, repeat=True)
    assert looping.fault_at(21).mode is Mode.HEALTHY
    with pytest.raises(ValueError, match=r"phases\[1\].duration"):
        Schedule.parse({"phases": [{"duration": 1}, {"mode": "down"}]})
    with pytest.raises(ValueError, match="non-empty 'phases'"):
        Schedule.parse({"phases": []})


def test_check_events_separates_bad_events() -> None:
    good = {
        "event_id": "o:0",
        "order_id": "o",
        "sku": "s",
        "qty": 1,
        "weight": 1.0,
        "occurred_at": "2026-01-01T00:00:00Z",
    }
    checked = check_events({"events": [good, {**good, "qty": -1}, {**good, "sku": 3}, "x"]})
    assert checked.good == [good]
    assert [b["index"] for b in checked.bad] == ["1", "2", "3"]
    assert "qty" in checked.bad[0]["problem"]
    with pytest.raises(ValueError):
        check_events({"evts": []})
