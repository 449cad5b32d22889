"""The ``trackrelay`` console script: one entry point, a subcommand per role.

``build_parser`` says which settings each subcommand takes (their flags come
from the settings fields, see ``flags``) and which arguments of its own.

Failures at start (a database or Redis unreachable, a port taken, a bad
setting) end the command with one line on stderr and a non-zero exit; the
traceback is logged only with ``--log-level DEBUG``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence

from pydantic import ValidationError

from trackrelay.cli import commands, local_commands, queue_commands
from trackrelay.cli.flags import add_settings, own_fields
from trackrelay.config.settings import (
    ControllerSettings,
    ForwarderSettings,
    OrderSettings,
    RelaySettings,
    SimulatorSettings,
    StoreSettings,
)

Handler = Callable[[argparse.Namespace], int]

log = logging.getLogger("trackrelay")

READ_AHEAD = "the most forwarders x concurrency x batch size"
"""What ``up`` and ``demo`` keep free under the quota unless told (see ``local.stack``)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackrelay", description="Keep taking orders when analytics is slow."
    )
    parser.add_argument(
        "--log-level",
        help="INFO by default (WARNING for demo, whose view shows the reasons); "
        "DEBUG shows tracebacks on failure",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = _command(sub, "orders", commands.cmd_orders, "run the order service (and its outbox relay)")
    add_settings(p, StoreSettings)
    add_settings(p, RelaySettings)
    add_settings(p, OrderSettings)

    p = _command(sub, "relay", commands.cmd_relay, "run an outbox relay on its own")
    add_settings(p, StoreSettings)
    add_settings(p, RelaySettings)
    add_settings(p, OrderSettings, ["migrate_on_start"], title="Start")
    p.add_argument("--owner", help="relay name written into leases (default: host-pid)")

    p = _command(sub, "migrate", commands.cmd_migrate, "apply the order store's schema migrations")
    add_settings(p, StoreSettings)

    p = _command(sub, "up", local_commands.cmd_up, "run the whole stack on this machine")
    _stack_flags(p, port=None)
    p.add_argument(
        "--analytics-url",
        dest="analytics_url_up",
        help="analytics base URL (default: built-in simulator)",
    )
    p.add_argument(
        "--load",
        type=float,
        default=0.0,
        help="synthetic orders per second, with a status line (default: none)",
    )

    p = _command(
        sub,
        "demo",
        local_commands.cmd_demo,
        "the story on one machine: analytics slow, down, overloaded, recovering; a report",
        "Unless given, the controller's settings, the quotas and the data directory take "
        "the demo's own values rather than the defaults shown.",
    )
    _stack_flags(p, port="a free one")
    p.add_argument(
        "--duration", type=float, help="seconds the story takes (default 120; phases scale)"
    )
    p.add_argument("--scenario", help="a JSON or YAML file of phases instead of the built-in")
    p.add_argument("--no-live", dest="no_live", action="store_true", help="plain lines (CI, logs)")
    p.add_argument(
        "--report-dir",
        dest="report_dir",
        default="demo-report",
        help="where summary.json and report.html go (default demo-report/)",
    )

    p = _command(
        sub,
        "operator",
        commands.cmd_operator,
        "the Kubernetes operator: steers every AnalyticsPipeline it watches",
    )
    p.add_argument("--namespace", "-n", action="append", help="namespace to watch (repeatable)")
    p.add_argument(
        "--all-namespaces", "-A", dest="all_namespaces", action="store_true", help="cluster-wide"
    )
    p.add_argument(
        "--peering",
        help="kopf peering name, so replicas of the operator do not fight (default: standalone)",
    )
    p.add_argument("--priority", type=int, help="peering priority (default: random)")
    p.add_argument(
        "--allow-host",
        dest="allow_host",
        action="append",
        metavar="PATTERN",
        help="a host a pipeline's URLs may name (repeatable; * is one DNS label, ** any host,"
        " an IP address only itself; default: the cluster's Services by cluster name,"
        " *.*.svc and *.*.svc.cluster.local)",
    )
    p.add_argument(
        "--liveness", help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz (default: none)"
    )

    p = _command(
        sub,
        "status",
        local_commands.cmd_status,
        "what `trackrelay up` decided, observed and restarted",
    )
    add_settings(p, StoreSettings, ["data_dir"])
    p.add_argument("--json", action="store_true", help="the raw status as JSON")

    p = _command(
        sub, "forwarder", commands.cmd_forwarder, "push events from the stream to analytics"
    )
    add_settings(p, ForwarderSettings)

    p = _command(sub, "analytics-sim", commands.cmd_sim, "run the analytics simulator")
    add_settings(p, SimulatorSettings)

    p = _command(
        sub,
        "budget",
        queue_commands.cmd_budget,
        "show, set or clear the rate budget all forwarders share (live)",
    )
    p.add_argument("action", choices=["show", "set", "clear"])
    p.add_argument("value", nargs="?", help="events per second, for set")
    _queue_flag(p)

    p = _command(sub, "dlq", queue_commands.cmd_dlq, "list, replay or purge the dead-letter stream")
    p.add_argument("action", choices=["list", "replay", "purge"])
    _queue_flag(p)
    p.add_argument("--count", type=int, default=None)

    return parser


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    func: Handler,
    summary: str,
    more: str = "",
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=summary, description=f"{summary}. {more}".strip())
    p.set_defaults(func=func)
    return p


def _stack_flags(p: argparse.ArgumentParser, port: str | None) -> None:
    """``up``'s and ``demo``'s: the store, the order API, the relay, the controller."""
    add_settings(p, StoreSettings)
    add_settings(
        p,
        OrderSettings,
        ["host", "port"],
        title="The order API",
        shown={"port": port} if port else None,
    )
    # The relay follows the local controller's shedding policy, not a ConfigMap's.
    relay = [name for name in own_fields(RelaySettings) if name != "live_configmap"]
    add_settings(p, RelaySettings, relay, shown={"queue_read_ahead": READ_AHEAD})
    add_settings(p, ControllerSettings)
    p.add_argument(
        "--forwarders",
        type=int,
        help="forwarder processes at start (default: --min-forwarders); the controller scales",
    )


def _queue_flag(p: argparse.ArgumentParser) -> None:
    """``budget``'s and ``dlq``'s: the queue they act on."""
    add_settings(p, StoreSettings, ["redis_url"], shown={"redis_url": "none; one is needed"})


RETIRED = {
    "--latency-target": "--push-latency-limit (forwarder) or --p99-target (up, demo)",
    "TRACKRELAY_LATENCY_TARGET": "TRACKRELAY_PUSH_LATENCY_LIMIT",
    "TRACKRELAY_CONTROL_LATENCY_TARGET": "TRACKRELAY_CONTROL_P99_TARGET",
}
"""Flags and environment variables of earlier versions, with what replaced each: named in a
clear error rather than refused as unknown (a flag) or silently ignored (a variable)."""


def retired_names(argv: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """One line for each retired flag in ``argv`` or variable in ``environ``."""
    flags = {a.split("=", 1)[0] for a in argv}
    return [f"{old} is now {new}" for old, new in RETIRED.items() if old in flags | set(environ)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    retired = retired_names(sys.argv[1:] if argv is None else argv, os.environ)
    if retired:
        print("trackrelay: " + "; ".join(retired), file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    level = args.log_level or ("WARNING" if args.command == "demo" else "INFO")
    try:
        logging.basicConfig(
            level=level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    except ValueError:
        parser.error(f"--log-level: unknown level {level!r}")
    for noisy in ("alembic", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    name = f"trackrelay {args.command}"
    try:
        code: int = args.func(args)
    except ValidationError as exc:
        print(f"{name}: invalid configuration:\n{_validation_lines(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from trackrelay.runtime.errors import describe

        log.debug("%s failed", name, exc_info=True)
        print(f"{name}: {describe(exc, *_urls(args))}", file=sys.stderr)
        return 1
    return code


def _validation_lines(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def _urls(args: argparse.Namespace) -> list[str | None]:
    import os

    names = ("redis_url", "database_url", "analytics_url")
    given: list[str | None] = [getattr(args, n, None) for n in names]
    return given + [os.environ.get(f"TRACKRELAY_{n.upper()}") for n in names]
