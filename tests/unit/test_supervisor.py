"""The supervisor reaps and restarts with backoff; the control loop holds when it cannot see."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from trackrelay.control.controller import Decision, ForwarderView, Observation, Spec
from trackrelay.local.supervisor import Supervisor
from trackrelay.loop.shell import ControlLoop


def short_lived(seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_child_that_keeps_dying_is_restarted_with_growing_backoff() -> None:
    clock = Clock()
    sup = Supervisor(backoff_base=1.0, backoff_max=4.0, stable_after=10.0, clock=clock)
    child = sup.start("flaky", lambda: short_lived(0))
    waits = []
    for _ in range(4):
        assert child.process is not None
        child.process.wait()
        assert sup.check() == []  # reaped, restart scheduled, not yet due
        assert child.restart_at is not None
        waits.append(child.restart_at - clock.now)
        clock.now = child.restart_at
        due = sup.check()
        assert due == [child]
        await sup.relaunch(child)
    assert waits == [1.0, 2.0, 4.0, 4.0]
    assert child.restarts == 4
    assert "flaky (pid" in sup.events[0] and "restarting in 1.0 s" in sup.events[0]
    sup.stop_all()


async def test_a_child_that_ran_long_enough_starts_over_at_the_first_backoff() -> None:
    clock = Clock()
    sup = Supervisor(backoff_base=1.0, backoff_max=8.0, stable_after=10.0, clock=clock)
    child = sup.start("steady", lambda: short_lived(0))
    child.failures = 3
    assert child.process is not None
    child.process.wait()
    clock.now = 60.0  # it ran a minute before it died
    sup.check()
    assert child.restart_at == 61.0
    sup.stop_all()


async def test_a_retired_child_is_stopped_and_never_restarted() -> None:
    sup = Supervisor()
    child = sup.start("forwarder-3", lambda: short_lived(60))
    assert child.process is not None
    proc = child.process
    sup.retire("forwarder-3")
    assert "forwarder-3" not in sup.children
    proc.wait(10)
    assert sup.check() == []
    assert sup.retiring == []  # reaped
    assert child.restarts == 0


async def test_the_loop_holds_when_it_cannot_observe_and_says_so_once() -> None:
    calls: list[Decision] = []

    async def observe() -> Observation:
        raise ConnectionRefusedError("redis at 127.0.0.1:1 refused")

    async def act(d: Decision) -> None:
        calls.append(d)

    loop = ControlLoop(Spec(), observe, act)
    for _ in range(3):
        d = await loop.tick()
        assert d.held and d.budget == Spec().budget_initial
    assert calls == []  # fail static: nothing is changed on missing data
    assert [r.text for _, r in loop.reasons] == [
        "holding the last decision: cannot observe "
        "(ConnectionRefusedError: redis at 127.0.0.1:1 refused)"
    ]


async def test_the_loop_acts_on_fresh_data_and_logs_each_reason() -> None:
    acted: list[Decision] = []
    sick = ForwarderView("f0", pushes=10, throttled=5)

    async def observe() -> Observation:
        return Observation(at=time.time(), lag=100, pending=0, forwarders=(sick,))

    async def act(d: Decision) -> None:
        acted.append(d)

    loop = ControlLoop(Spec(budget_initial=800), observe, act)
    await loop.tick()
    assert acted[0].budget == 400
    assert loop.reasons[-1][1].text == (
        "budget 800 -> 400 ev/s: analytics overloaded (429/503, timeouts) on 50% of pushes"
        " > 5%; 0 ev/s delivered"
    )
    status = loop.status()
    assert status["decision"]["budget"] == 400 and status["observation"]["lag"] == 100
    # What `trackrelay status` reads: each reason's kind and text, as JSON.
    last = json.loads(json.dumps(status["reasons"]))[-1]
    assert last["kind"] == "budget-cut" and last["text"] == loop.reasons[-1][1].text


def test_a_bad_spec_is_refused_with_its_fields() -> None:
    async def nothing(_: Decision) -> None:
        return None

    async def never() -> Observation:
        raise AssertionError("not called")

    with pytest.raises(ValueError, match="replicas: need 0 < min <= max"):
        ControlLoop(Spec(replicas_min=5, replicas_max=2), never, nothing)
