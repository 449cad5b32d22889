"""Turn SIGINT/SIGTERM into an asyncio event, so every long-running command stops cleanly;
SIGUSR1 logs where every asyncio task is waiting, to see what a process that seems stuck
is doing without stopping it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

log = logging.getLogger(__name__)


def awaiting(task: asyncio.Task[object]) -> list[str]:
    """Where ``task`` waits: each coroutine of its await chain, outermost first."""
    chain: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            chain.append(f"{frame.f_code.co_name} ({frame.f_code.co_filename}:{frame.f_lineno})")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain


def log_task_stacks() -> None:
    """Log each asyncio task of the running loop with the chain of awaits it waits in."""
    for task in sorted(asyncio.all_tasks(), key=lambda t: t.get_name()):
        log.warning("task %s waits in: %s", task.get_name(), " > ".join(awaiting(task)))


@contextlib.asynccontextmanager
async def stop_on_signals() -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, log_task_stacks)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            loop.remove_signal_handler(sig)
