"""The liveness probe: an operator whose watch has frozen reports itself unhealthy
(``liveness.Liveness`` keeps the evidence)."""

from __future__ import annotations

from typing import Any

from trackrelay_operator.memo import OperatorMemo


def seen(memo: OperatorMemo) -> None:
    memo.liveness.seen()


def probe(memo: OperatorMemo) -> dict[str, Any]:
    """Fails the liveness endpoint (HTTP 500) when the watch or a loop looks frozen."""
    ticks = [
        (f"{ns}/{name}", runner.ticked_at, runner.interval)
        for (ns, name), runner in list(memo.runners.items())
    ]
    return memo.liveness.report(len(memo.runners), ticks=ticks)
