"""The demo's report: a summary and one self-contained HTML page of plots (inline SVG).

Pure: the demo records one sample per second and the accounting at the end;
this module turns them into ``summary.json`` and ``report.html``. No
JavaScript and no external file: the page renders anywhere, offline.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Sequence
from typing import Any

from trackrelay.control.controller import Reason

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
PHASE_FILLS = ("#f4f8fb", "#fdf3e7")


def jaccard_top(truth: dict[str, float], seen: dict[str, float], k: int = 100) -> float:
    """Jaccard similarity of the top-``k`` SKUs by count (ties broken by name)."""

    def top(pop: dict[str, float]) -> set[str]:
        return {s for s, _ in sorted(pop.items(), key=lambda kv: (-kv[1], kv[0]))[:k]}

    a, b = top(truth), top(seen)
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def shed_lines(shed: dict[str, int]) -> tuple[int, int]:
    """(lines lost, lines folded) from the relays' ``where:policy:reason`` counts.

    Folded lines still reach analytics, inside exact aggregates; every other
    reason (sampled, evicted, refused) is a line analytics never sees as such.
    """
    folded = sum(n for k, n in shed.items() if k.endswith(":folded"))
    return sum(shed.values()) - folded, folded


def phase_rates(
    samples: Sequence[dict[str, Any]],
    timeline: Sequence[dict[str, Any]],
    lines_per_order: float,
) -> list[dict[str, Any]]:
    """Per phase, in story order: order lines arrived and events analytics accepted, per
    second, the budget's range, and the backlog at the phase's first and last sample.
    ``timeline``: the simulator's seconds (``t``: Unix
    second, ``accepted``); ``samples``: the demo's rows (``wall``, ``phase``,
    ``orders_accepted`` so far, ``budget``)."""
    out: list[dict[str, Any]] = []
    for name, rows in itertools.groupby(samples, key=lambda r: r["phase"]):
        group = list(rows)
        start, end = group[0]["wall"], group[-1]["wall"]
        seconds = end - start
        if seconds < 1:
            continue
        orders = group[-1]["orders_accepted"] - group[0]["orders_accepted"]
        accepted = sum(x["accepted"] for x in timeline if start <= x["t"] < int(end))
        whole = max(1, int(end) - math.ceil(start))
        budgets = [r["budget"] for r in group if r.get("budget") is not None]
        out.append(
            {
                "phase": name,
                "seconds": round(seconds, 1),
                "lines_arrived_per_s": round(orders * lines_per_order / seconds, 1),
                "events_delivered_per_s": round(accepted / whole, 1),
                "budget_min": round(min(budgets), 1) if budgets else None,
                "budget_max": round(max(budgets), 1) if budgets else None,
                "backlog_start": group[0].get("backlog"),
                "backlog_end": group[-1].get("backlog"),
            }
        )
    return out


def summarize(
    *,
    orders_accepted: int,
    orders_refused: int,
    lost_orders: int,
    lines: int,
    analytics: dict[str, Any],
    truth: dict[str, float],
    seen: dict[str, float],
    shed: dict[str, int],
    samples: Sequence[dict[str, Any]],
    left: dict[str, int],
    phases: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """What the run proved: nothing lost, what analytics got, how well popularity held."""
    lost_lines, folded = shed_lines(shed)
    shares = [s["queue_share"] for s in samples if s.get("queue_share") is not None]
    total_true, total_seen = sum(truth.values()), sum(seen.values())
    budgets = [s["budget"] for s in samples if s.get("budget") is not None]
    return {
        "lost_orders": lost_orders,
        "orders_accepted": orders_accepted,
        "orders_refused": orders_refused,
        "order_lines": lines,
        "events_delivered": int(analytics.get("accepted", 0)),
        "lines_delivered": int(analytics.get("lines", 0)),
        "events_shed": {
            "lost_lines": lost_lines,
            "folded_lines": folded,
            "by_policy": dict(sorted(shed.items())),
        },
        "duplicates": int(analytics.get("duplicates", 0)),
        "popularity_top100_jaccard": round(jaccard_top(truth, seen), 4),
        "popularity_total_error": round(abs(total_seen - total_true) / total_true, 4)
        if total_true
        else 0.0,
        "max_queue_over_quota": round(max(shares), 4) if shares else None,
        "budget_min_seen": min(budgets) if budgets else None,
        "budget_max_seen": max(budgets) if budgets else None,
        "max_replicas": max((s["replicas"] for s in samples), default=0),
        "replicas_over_usable": sum(
            1
            for s in samples
            if s.get("usable") is not None and (s.get("decided") or 0) > s["usable"]
        ),
        "left_undelivered": left,
        "phases": list(phases),
    }


# -- SVG ------------------------------------------------------------------------------------


def _nice(hi: float) -> float:
    if hi <= 0:
        return 1.0
    step = 10 ** math.floor(math.log10(hi))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if hi <= m * step:
            return float(m * step)
    return float(10 * step)


def _fmt(v: float) -> str:
    if v >= 1_000_000:
        return f"{v / 1_000_000:g}M"
    if v >= 1000:
        return f"{v / 1000:.3g}k"
    return f"{v:.3g}"


def svg_chart(
    title: str,
    t: Sequence[float],
    series: Sequence[tuple[str, Sequence[float | None]]],
    phases: Sequence[tuple[str, float, float]],
    unit: str = "",
    width: int = 900,
    height: int = 220,
    step: bool = False,
) -> str:
    """A line chart over time with phase bands, axes and a legend; None values are gaps."""
    left, right, top, bottom = 60, 15, 28, 30
    w, h = width - left - right, height - top - bottom
    t_end = max([*t, *(end for _, _, end in phases), 1.0])
    values = [v for _, vs in series for v in vs if v is not None]
    y_max = _nice(max(values, default=1.0) * 1.05)

    def x(v: float) -> float:
        return left + w * v / t_end

    def y(v: float) -> float:
        return top + h - h * min(v, y_max) / y_max

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="16" class="title">{html.escape(title)}</text>',
    ]
    for i, (name, start, end) in enumerate(phases):
        out.append(
            f'<rect x="{x(start):.1f}" y="{top}" width="{x(end) - x(start):.1f}" height="{h}" '
            f'fill="{PHASE_FILLS[i % 2]}"><title>{html.escape(name)}</title></rect>'
        )
    for k in range(5):
        v = y_max * k / 4
        out.append(
            f'<line x1="{left}" x2="{left + w}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" class="ytick">{_fmt(v)}{unit}</text>'
        )
    for name, start, _ in phases:
        out.append(
            f'<text x="{x(start) + 3:.1f}" y="{top + 11}" class="phase">{html.escape(name)}</text>'
        )
    for s in range(0, int(t_end) + 1, max(10, int(t_end // 10 // 10 * 10) or 10)):
        out.append(f'<text x="{x(s):.1f}" y="{top + h + 16}" class="xtick">{s}s</text>')
    for i, (label, vs) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        runs: list[list[str]] = [[]]
        prev: float | None = None
        for tv, val in zip(t, vs, strict=True):
            if val is None:
                if runs[-1]:
                    runs.append([])
                prev = None
                continue
            if step and prev is not None:
                runs[-1].append(f"{x(tv):.1f},{y(prev):.1f}")
            runs[-1].append(f"{x(tv):.1f},{y(val):.1f}")
            prev = val
        for pts in runs:
            if pts:
                out.append(
                    f'<polyline class="series" fill="none" stroke="{color}" stroke-width="1.8" '
                    f'points="{" ".join(pts)}"><title>{html.escape(label)}</title></polyline>'
                )
        lx = left + 10 + i * 190
        out.append(
            f'<rect x="{lx}" y="{height - 10}" width="12" height="3" fill="{color}"/>'
            f'<text x="{lx + 16}" y="{height - 6}" class="legend">{html.escape(label)}</text>'
        )
    out.append(f'<rect x="{left}" y="{top}" width="{w}" height="{h}" class="frame"/>')
    out.append("</svg>")
    return "\n".join(out)


_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 960px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; } td, th { padding: 3px 10px; border-bottom: 1px solid #eee;
  text-align: left; vertical-align: top; }
.ok { color: #2ca02c; font-weight: 600; } .bad { color: #d62728; font-weight: 600; }
svg.chart { display: block; margin: 8px 0 18px; }
svg .title { font-weight: 600; font-size: 13px; } svg .grid { stroke: #e3e3e3; }
svg .ytick { font-size: 10px; text-anchor: end; fill: #555; }
svg .xtick, svg .legend { font-size: 10px; fill: #555; }
svg .phase { font-size: 10px; fill: #777; } svg .frame { fill: none; stroke: #bbb; }
.log td:first-child { white-space: nowrap; color: #666; }
"""


def _col(samples: Sequence[dict[str, Any]], key: str) -> list[float | None]:
    return [s.get(key) for s in samples]


def render_html(
    summary: dict[str, Any],
    samples: Sequence[dict[str, Any]],
    phases: Sequence[tuple[str, float, float]],
    reasons: Sequence[tuple[float, Reason]],
    notes: Sequence[tuple[str, str]] = (),
) -> str:
    """The whole report as one HTML document."""
    t = [float(s["t"]) for s in samples]
    quota = next((s["quota"] for s in samples if s.get("quota")), None)
    charts = [
        svg_chart(
            "Orders accepted per second", t, [("orders/s", _col(samples, "orders_per_s"))], phases
        ),
        svg_chart(
            "Order API p99 answer time",
            t,
            [
                (
                    "order p99 (ms)",
                    [None if v is None else v * 1000 for v in _col(samples, "order_p99")],
                )
            ],
            phases,
            " ms",
        ),
        svg_chart(
            "Analytics push p99, as forwarders see it",
            t,
            [
                ("push p99 (s)", _col(samples, "analytics_p99")),
                ("target (s)", _col(samples, "p99_target")),
            ],
            phases,
            " s",
        ),
        svg_chart(
            "Rate budget and delivery (events/s)",
            t,
            [("budget", _col(samples, "budget")), ("delivered", _col(samples, "delivered"))],
            phases,
            step=True,
        ),
        svg_chart(
            "Forwarder replicas",
            t,
            [
                ("running", _col(samples, "replicas")),
                ("the budget can use", _col(samples, "usable")),
            ],
            phases,
            step=True,
        ),
        svg_chart(
            "Backlog (events waiting + in delivery)",
            t,
            [("backlog", _col(samples, "backlog"))],
            phases,
        ),
        svg_chart(
            "Queue memory against quota",
            t,
            [
                ("queue bytes", _col(samples, "queue_bytes")),
                ("quota", [quota] * len(samples) if quota else [None] * len(samples)),
            ],
            phases,
            "B",
        ),
        svg_chart(
            "Order lines shed (cumulative), by how",
            t,
            [
                ("folded into aggregates", _col(samples, "shed_folded")),
                ("lost (sampled, evicted, refused)", _col(samples, "shed_lost")),
            ],
            phases,
        ),
    ]
    ok = summary["lost_orders"] == 0

    def row(k: str, v: Any) -> str:
        return f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"

    headline = (
        f'<p class="{"ok" if ok else "bad"}">{summary["lost_orders"]} orders lost of '
        f"{summary['orders_accepted']} accepted; {summary['events_delivered']} events delivered, "
        f"{summary['duplicates']} duplicates dropped by analytics, popularity top-100 Jaccard "
        f"{summary['popularity_top100_jaccard']}.</p>"
    )
    rates = {r["phase"]: r for r in summary.get("phases", [])}

    def rate(name: str) -> str:
        r = rates.get(name)
        if r is None:
            return "<td></td>"
        budget = "" if r["budget_min"] is None else f"{r['budget_min']:.0f}-{r['budget_max']:.0f}"
        return (
            f"<td>{r['lines_arrived_per_s']:.0f} lines/s in, "
            f"{r['events_delivered_per_s']:.0f} events/s delivered, budget {budget} ev/s</td>"
        )

    phase_rows = "".join(
        f"<tr><th>{html.escape(n)}</th><td>{s:.0f}-{e:.0f} s</td>{rate(n)}"
        f"<td>{html.escape(note)}</td></tr>"
        for (n, s, e), (_, note) in zip(phases, notes or [(p[0], "") for p in phases], strict=True)
    )
    t0 = samples[0]["wall"] if samples else 0.0
    log_rows = "".join(
        f"<tr><td>{at - t0:6.1f} s</td><td>{html.escape(reason.text)}</td></tr>"
        for at, reason in reasons
    )
    summary_rows = "".join(
        row(k, v) for k, v in summary.items() if not isinstance(v, dict | list)
    ) + "".join(
        row(k, ", ".join(f"{a}: {b}" for a, b in v.items()) or "none")
        for k, v in summary.items()
        if isinstance(v, dict)
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>trackrelay demo report</title><style>{_CSS}</style></head>
<body>
<h1>trackrelay demo report</h1>
{headline}
<h2>Phases</h2><table>{phase_rows}</table>
<h2>Over time</h2>
{"".join(charts)}
<h2>Summary</h2><table>{summary_rows}</table>
<h2>Decision log</h2><table class="log">{log_rows or "<tr><td>no changes</td></tr>"}</table>
</body></html>
"""
