"""Wake the relay when orders commit, rather than find their rows by polling.

On PostgreSQL the order statement ends in ``pg_notify(OUTBOX_CHANNEL, '')``: PostgreSQL
delivers it at commit (never for a transaction that rolled back), once per
transaction, to every session that LISTENs on the channel. Each relay holds one
such session (``listen``). In one process (SQLite, or the order service's own
relay) the order route wakes the relay directly (``Wakeup.notify``).

Polling stays as the net for what no notification announces: rows a dead relay's
lease frees, rows held at the quota, a listen session being re-opened. While a
session listens, the poll is slower (``LISTENING_POLL``); without one it is
``relay_idle_seconds``, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from trackrelay.config.tls import postgres_tls
from trackrelay.db.engine import CONNECT_TIMEOUT, asyncpg_dsn
from trackrelay.db.schema import OUTBOX_CHANNEL
from trackrelay.runtime.errors import brief
from trackrelay.runtime.retry import Backoff, first_set, pause

log = logging.getLogger(__name__)

LISTENING_POLL = 0.25
"""Seconds between polls while notifications arrive: only for rows none announces."""
CHECK_EVERY = 5.0
"""Seconds between round trips on an idle listen session: a peer gone without a FIN
(a database pod replaced) is found within this and the session re-opened."""


class Wakeup:
    """A latch the relay sleeps on between rounds: ``notify`` ends the sleep at once."""

    def __init__(self) -> None:
        self._set = asyncio.Event()
        self._commits = 0
        self.listening = False
        """A listen session is open: commits elsewhere will wake this relay."""

    def notify(self) -> None:
        self._commits += 1
        self._set.set()

    def clear(self) -> int:
        """Forget earlier notifications (called as a round starts: it sees their rows);
        how many there were (commits announced, plus the listen session's own)."""
        self._set.clear()
        commits, self._commits = self._commits, 0
        return commits

    def poll_every(self, idle: float) -> float:
        """Seconds an idle relay waits before it looks anyway."""
        return max(idle, LISTENING_POLL) if self.listening else idle

    async def wait(self, stop: asyncio.Event, seconds: float) -> None:
        """Until notified (since the last ``clear``), ``stop`` is set or ``seconds`` pass."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        await first_set(self._set, stop, timeout=seconds)


LISTEN_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def listen(database_url: str, wakeup: Wakeup, stop: asyncio.Event) -> None:
    """Hold a LISTEN session on ``OUTBOX_CHANNEL`` until ``stop``, notifying ``wakeup`` on each
    notification. A session that fails is re-opened with backoff; meanwhile the relay
    polls at its own pace, so a database that is down costs freshness, never rows."""
    dsn, tls = postgres_tls(asyncpg_dsn(database_url))
    backoff = Backoff(0.5, 10.0)
    while not stop.is_set():
        try:
            con = await asyncpg.connect(dsn, ssl=tls, timeout=CONNECT_TIMEOUT)
        except LISTEN_ERRORS as exc:
            wait = backoff.failed()
            log.warning("relay: cannot listen for commits (%s); retry in %.1fs", brief(exc), wait)
            await pause(stop, wait)
            continue
        try:
            await _listen_on(con, wakeup, stop)
            backoff.succeeded()
        except LISTEN_ERRORS as exc:
            log.warning("relay: the listen session ended (%s); polling meanwhile", brief(exc))
            await pause(stop, backoff.failed())
        finally:
            wakeup.listening = False
            with contextlib.suppress(*LISTEN_ERRORS):
                await asyncio.wait_for(con.close(), timeout=2.0)
            if not con.is_closed():
                con.terminate()


async def _listen_on(con: asyncpg.Connection, wakeup: Wakeup, stop: asyncio.Event) -> None:
    lost = asyncio.Event()

    def notified(*_: Any) -> None:
        wakeup.notify()

    con.add_termination_listener(lambda _con: lost.set())
    await con.add_listener(OUTBOX_CHANNEL, notified)
    wakeup.listening = True
    wakeup.notify()  # rows committed while no session listened
    while not stop.is_set():
        await first_set(stop, lost, timeout=CHECK_EVERY)
        if lost.is_set():
            raise ConnectionError("the database closed the listen session")
        if not stop.is_set():
            await asyncio.wait_for(con.execute("SELECT 1"), timeout=CONNECT_TIMEOUT)
