"""The stoppable waits every loop shares (``runtime.retry``): they end on the first
event set, or at their timeout, and leave no waiter behind."""

from __future__ import annotations

import asyncio

from trackrelay.runtime.retry import first_set, pause


async def test_first_set_ends_when_any_event_is_set_and_leaves_no_waiter() -> None:
    a, b = asyncio.Event(), asyncio.Event()
    asyncio.get_running_loop().call_soon(b.set)
    await asyncio.wait_for(first_set(a, b, timeout=60), timeout=5)
    assert b.is_set() and not a.is_set()
    await asyncio.sleep(0)  # the cancelled waits finish
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_first_set_returns_at_once_for_an_event_already_set() -> None:
    done = asyncio.Event()
    done.set()
    await asyncio.wait_for(first_set(asyncio.Event(), done, timeout=60), timeout=1)


async def test_first_set_gives_up_at_its_timeout() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await first_set(asyncio.Event(), asyncio.Event(), timeout=0.05)
    assert loop.time() - started >= 0.04  # (asyncio may fire a timer a clock tick early)


async def test_pause_says_whether_it_ended_by_stopping() -> None:
    stop = asyncio.Event()
    assert await pause(stop, 0.01) is False
    stop.set()
    assert await pause(stop, 60) is True
