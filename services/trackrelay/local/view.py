"""What the demo shows while it runs: a live terminal panel (rich), or plain lines.

Both take the same calls: ``phase`` when the story moves on, ``update`` with
each second's sample and the controller's new reasons, ``say`` for a line.
"""

from __future__ import annotations

import collections
import time
from types import TracebackType
from typing import Any, Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from trackrelay.control.controller import Reason
from trackrelay.local.live import HEALTH_WORDS, human_size
from trackrelay.local.scenario import Phase


class View(Protocol):
    def __enter__(self) -> View: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    def say(self, text: str) -> None: ...
    def phase(self, index: int, count: int, phase: Phase) -> None: ...
    def update(
        self, row: dict[str, Any], reasons: list[tuple[float, Reason]], total: float
    ) -> None: ...


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f} ms"


def _health(row: dict[str, Any]) -> str:
    h = HEALTH_WORDS[row.get("healthy")]
    return h + (" (holding)" if row.get("held") else "")


def _queue(row: dict[str, Any]) -> str:
    if row.get("queue_bytes") is None or not row.get("quota"):
        return "-"
    return (
        f"{human_size(row['queue_bytes'])} of {human_size(row['quota'])} ({row['queue_share']:.0%})"
    )


def line(row: dict[str, Any]) -> str:
    """One plain status line from a sample."""
    return (
        f"[{row['t']:5.0f}s {row['phase']}] orders {row['orders_per_s']:.0f}/s "
        f"p99 {_ms(row['order_p99'])} | analytics {_health(row)} p99 {_ms(row['analytics_p99'])} "
        f"| budget {row['budget'] or 0:.0f} ev/s, delivered {row['delivered'] or 0:.0f} ev/s "
        f"| forwarders {row['replicas']} (usable {row['usable']}) | backlog {row['backlog']} "
        f"| queue {_queue(row)} | shedding {row['shedding']} "
        f"| shed lines {row['shed_lost']} lost, {row['shed_folded']} folded"
    )


class PlainView:
    """Plain lines (``--no-live``): a status line every ``every`` seconds and every reason."""

    def __init__(self, every: float = 2.0) -> None:
        self.every = every
        self._last = 0.0

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def say(self, text: str) -> None:
        print(f"trackrelay demo: {text}", flush=True)

    def phase(self, index: int, count: int, phase: Phase) -> None:
        self.say(f"phase {index + 1}/{count}: {phase.name} ({phase.seconds:.0f} s) - {phase.note}")

    def update(
        self, row: dict[str, Any], reasons: list[tuple[float, Reason]], total: float
    ) -> None:
        for _, reason in reasons:
            self.say(f"  controller: {reason.text}")
        if time.monotonic() - self._last >= self.every:
            self._last = time.monotonic()
            print(line(row), flush=True)


class LiveView:
    """A panel redrawn in place (rich): the numbers that tell the story, the latest reasons."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.reasons: collections.deque[str] = collections.deque(maxlen=8)
        self.title = "trackrelay demo"
        self.note = ""

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.live.__exit__(exc_type, exc, tb)

    def say(self, text: str) -> None:
        self.console.print(f"[bold]trackrelay demo:[/bold] {text}")

    def phase(self, index: int, count: int, phase: Phase) -> None:
        self.title = f"phase {index + 1}/{count}: {phase.name}"
        self.note = phase.note

    def update(
        self, row: dict[str, Any], reasons: list[tuple[float, Reason]], total: float
    ) -> None:
        for _, reason in reasons:
            self.reasons.append(f"{row['t']:5.0f}s  {reason.text}")
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_row(
            "orders",
            f"{row['orders_per_s']:.0f}/s, p99 {_ms(row['order_p99'])}, "
            f"{row['orders_accepted']} accepted",
        )
        table.add_row("analytics", f"{_health(row)}, push p99 {_ms(row['analytics_p99'])}")
        table.add_row(
            "budget", f"{row['budget'] or 0:.0f} ev/s (delivered {row['delivered'] or 0:.0f} ev/s)"
        )
        table.add_row(
            "forwarders", f"{row['replicas']} running, the budget can use {row['usable']}"
        )
        table.add_row("backlog", f"{row['backlog']} events")
        table.add_row("queue", _queue(row))
        table.add_row(
            "shedding",
            f"{row['shedding']}; lines shed {row['shed_lost']} lost, "
            f"{row['shed_folded']} folded into aggregates",
        )
        if row.get("restarts"):
            table.add_row("restarts", str(row["restarts"]))
        log = Text("\n".join(self.reasons) or "no changes yet", style="dim")
        body = Group(
            Text(self.note, style="italic"),
            table,
            Text(""),
            Text("latest reasons", style="bold"),
            log,
        )
        clock = f"{row['t']:.0f}/{total:.0f} s" if row["phase"] != "drain" else "draining"
        self.live.update(Panel(body, title=f"{self.title}  [{clock}]", border_style="cyan"))
