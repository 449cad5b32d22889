"""The ``trackrelay`` console script: one entry point, a subcommand per role.

Every flag's ``dest`` is the name of the settings field it overrides, and
``settings_for`` hands every given flag to the command's settings class, so a
flag cannot be parsed and then forgotten (a unit test checks each one). The
commands only wire settings to the runners in ``local/`` and the services.

Failures at start (a database or Redis unreachable, a port taken, a bad
setting) end the command with one line on stderr and a non-zero exit; the
traceback is logged only with ``--log-level DEBUG``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

if TYPE_CHECKING:
    from trackrelay.local.stack import StackOptions
    from trackrelay.queue.client import Queue

Handler = Callable[[argparse.Namespace], int]
QueueWork = Callable[["Queue"], Awaitable[None]]
S = TypeVar("S", bound=BaseSettings)

log = logging.getLogger("trackrelay")

COMMAND_ARGS = {"command", "func", "log_level"}
"""Namespace entries that are not settings of any command."""
NOT_SETTINGS = {
    "owner",
    "forwarders",
    "load",
    "analytics_url_up",
    "action",
    "count",
    "value",
    "json",
    "duration",
    "scenario",
    "no_live",
    "report_dir",
    "namespace",
    "all_namespaces",
    "peering",
    "priority",
    "liveness",
}
"""Flags that steer a command itself rather than a settings field."""


def settings_for(cls: type[S], args: argparse.Namespace) -> S:
    """``cls`` from the environment, overridden by every flag the user gave."""
    given = {
        name: value
        for name, value in vars(args).items()
        if name in cls.model_fields and value is not None
    }
    return cls(**given)


def _store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", dest="redis_url", help="queue Redis (default: embedded)")
    p.add_argument(
        "--database-url",
        dest="database_url",
        help="order store, postgresql://... or sqlite:///path (default: SQLite file)",
    )
    p.add_argument("--data-dir", dest="data_dir", help="where embedded data lives")


def _server_flags(p: argparse.ArgumentParser, port_help: str) -> None:
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    p.add_argument("--port", type=int, help=port_help)


def _relay_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--relay-batch-size", dest="relay_batch_size", type=int)
    p.add_argument("--relay-lease-seconds", dest="relay_lease_seconds", type=float)
    p.add_argument(
        "--no-migrate",
        dest="migrate_on_start",
        action="store_const",
        const=False,
        help="do not apply migrations at start (run `trackrelay migrate` first)",
    )


def parse_size(text: str) -> int:
    """A size flag (``64MiB``); a bad one is argparse's usage error with the reason."""
    from trackrelay.control import shedding

    try:
        return shedding.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _quota_flags(p: argparse.ArgumentParser) -> None:
    from trackrelay.config.settings import SHEDDING_MODES

    p.add_argument(
        "--queue-quota",
        dest="queue_quota",
        type=parse_size,
        help="bytes the queue may use in Redis: 64MiB, 512KiB or plain bytes (default: none)",
    )
    p.add_argument(
        "--outbox-quota",
        dest="outbox_quota",
        type=int,
        help="outbox rows allowed to wait for the stream (default: no limit)",
    )
    p.add_argument(
        "--shedding",
        choices=SHEDDING_MODES,
        help="how analytics data is thinned under the quotas (default auto: from pressure)",
    )
    p.add_argument("--sample-p", dest="sample_p", type=float, help="keep probability of sample")
    p.add_argument(
        "--queue-read-ahead",
        dest="queue_read_ahead",
        type=int,
        help="entries forwarders may hold at once, kept free under the quota (default 4000)",
    )
    p.add_argument(
        "--aggregate-window", dest="aggregate_window", type=float, help="seconds per aggregate"
    )


def _control_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--forwarders",
        type=int,
        help="forwarder processes at start (default: --min-forwarders); the controller scales",
    )
    p.add_argument("--min-forwarders", dest="replicas_min", type=int, help="default 1")
    p.add_argument("--max-forwarders", dest="replicas_max", type=int, help="default 4")
    p.add_argument(
        "--budget", dest="budget_initial", type=float, help="starting budget, events/s (1000)"
    )
    p.add_argument("--budget-min", dest="budget_min", type=float, help="events/s (default 20)")
    p.add_argument("--budget-max", dest="budget_max", type=float, help="events/s (5000)")
    p.add_argument(
        "--p99-target",
        dest="p99_target",
        type=float,
        help="analytics push p99 (seconds) above which the budget falls (default 0.5)",
    )
    p.add_argument("--health-url", dest="health_url", help="analytics health URL to probe")
    p.add_argument(
        "--control-interval", dest="interval", type=float, help="seconds per tick (default 1)"
    )
    p.add_argument(
        "--no-control",
        dest="enabled",
        action="store_const",
        const=False,
        help="no controller: fixed forwarders, no budget",
    )


def cmd_orders(args: argparse.Namespace) -> int:
    from trackrelay.config.settings import OrderSettings
    from trackrelay.local.runner import serve_orders, serve_orders_workers

    settings = settings_for(OrderSettings, args)
    if settings.workers > 1:
        return serve_orders_workers(settings)
    return asyncio.run(serve_orders(settings))


def cmd_relay(args: argparse.Namespace) -> int:
    from trackrelay.config.settings import OrderSettings
    from trackrelay.local.runner import run_relay

    return asyncio.run(run_relay(settings_for(OrderSettings, args), owner=args.owner))


def cmd_migrate(args: argparse.Namespace) -> int:
    from trackrelay.config.settings import StoreSettings
    from trackrelay.db.startup import check_store, migrate_store
    from trackrelay.runtime.redact import redact_url

    url = settings_for(StoreSettings, args).resolved_database_url()

    async def go() -> None:
        await check_store(url)
        await migrate_store(url)

    asyncio.run(go())
    print(f"migrated {redact_url(url)} to head")
    return 0


def stack_options(args: argparse.Namespace) -> StackOptions:
    """What ``up`` and ``demo`` start: store, quota and controller settings from the flags."""
    from trackrelay.config.settings import ControllerSettings, OrderSettings
    from trackrelay.local.stack import StackOptions

    control = settings_for(ControllerSettings, args)
    if args.forwarders is not None and args.forwarders > control.replicas_max:
        control = control.model_copy(update={"replicas_max": args.forwarders})
    forwarders = control.replicas_min if args.forwarders is None else args.forwarders
    return StackOptions(
        settings=settings_for(OrderSettings, args),
        control=control,
        analytics_url=args.analytics_url_up,
        forwarders=max(forwarders, control.replicas_min if control.enabled else 0),
    )


def cmd_up(args: argparse.Namespace) -> int:
    from trackrelay.local import up

    return asyncio.run(up.up(stack_options(args), load=args.load))


def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from trackrelay.config.settings import ControllerSettings, OrderSettings
    from trackrelay.local import demo, scenario
    from trackrelay.local.view import LiveView, PlainView
    from trackrelay.runtime.ports import free_port

    story = scenario.load(Path(args.scenario)) if args.scenario else scenario.DEFAULT
    if args.duration is not None:
        story = story.scaled(args.duration)
    given = settings_for(OrderSettings, args)
    settings = demo.demo_settings(given, given.model_fields_set)
    if args.port is None:
        settings = settings.model_copy(update={"port": free_port()})
    defaults = demo.DEMO_CONTROL.model_dump(exclude_unset=False)
    flags = {k: v for k, v in vars(args).items() if k in ControllerSettings.model_fields}
    control = ControllerSettings(
        **{**defaults, **{k: v for k, v in flags.items() if v is not None}}
    )
    options = demo.DemoOptions(
        settings=settings,
        control=control,
        scenario=story,
        live=not args.no_live,
        report_dir=Path(args.report_dir),
    )
    view = LiveView() if options.live else PlainView()
    summary = asyncio.run(demo.Demo(options, view).run())
    out = options.report_dir
    print(demo.summary_text(summary, out))
    return 0 if summary["lost_orders"] == 0 else 1


def cmd_operator(args: argparse.Namespace) -> int:
    """The Kubernetes operator (kopf): every AnalyticsPipeline in the namespaces given."""
    try:
        import kopf

        import trackrelay_operator  # noqa: F401  (registers the handlers)
    except ImportError as exc:
        raise ValueError(
            f"the operator needs its extra: pip install 'trackrelay[operator]' ({exc})"
        ) from None
    if not args.namespace and not args.all_namespaces:
        raise ValueError("say which namespaces to watch: --namespace NS (repeatable) or -A")
    if (args.log_level or "INFO").upper() != "DEBUG":
        # kopf logs every handler run at INFO; the controller's reasons are what matter.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    asyncio.run(
        kopf.operator(
            clusterwide=args.all_namespaces,
            namespaces=args.namespace or (),
            standalone=args.peering is None,
            peering_name=args.peering,
            priority=args.priority,
            liveness_endpoint=args.liveness,
        )
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from trackrelay.config.settings import StoreSettings
    from trackrelay.local import up

    return up.status(settings_for(StoreSettings, args), as_json=args.json)


def cmd_forwarder(args: argparse.Namespace) -> int:
    from trackrelay.config.settings import ForwarderSettings
    from trackrelay.forwarder.main import run_forwarder

    return asyncio.run(run_forwarder(settings_for(ForwarderSettings, args)))


def cmd_sim(args: argparse.Namespace) -> int:
    from trackrelay.config.settings import SimulatorSettings
    from trackrelay.local.runner import serve_simulator

    return asyncio.run(serve_simulator(settings_for(SimulatorSettings, args)))


def on_queue(args: argparse.Namespace, command: str, body: QueueWork) -> int:
    """Run ``body`` against the queue Redis the flags or environment name.

    The queue must answer (one clear line otherwise); the connection is closed after.
    """
    from trackrelay.config.settings import StoreSettings
    from trackrelay.queue import client

    url = settings_for(StoreSettings, args).redis_url
    if url is None:
        raise ValueError(f"{command} needs TRACKRELAY_REDIS_URL / --redis-url")

    async def go() -> int:
        await client.check_queue(url, required=True)
        redis = client.connect(url)
        try:
            await body(redis)
        finally:
            await redis.aclose()
        return 0

    return asyncio.run(go())


def cmd_dlq(args: argparse.Namespace) -> int:
    import json

    from trackrelay.queue import dlq

    async def body(redis: Queue) -> None:
        if args.action == "list":
            for dead in await dlq.list_entries(redis, args.count or 100):
                print(json.dumps(dead.as_dict()))
        elif args.action == "replay":
            print(f"replayed {await dlq.replay(redis, args.count)} events onto the stream")
        else:
            print(f"purged {await dlq.purge(redis)} events from the DLQ")

    return on_queue(args, "dlq", body)


def cmd_budget(args: argparse.Namespace) -> int:
    import json

    from trackrelay.queue import rate_budget, views

    value: float | None = None
    if args.action == "set":
        if args.value is None:
            raise ValueError("budget set needs a value in events per second, e.g. 800")
        value = rate_budget.parse_budget(args.value)
    elif args.value is not None:
        raise ValueError(f"budget {args.action} takes no value")

    async def body(redis: Queue) -> None:
        if args.action == "set":
            await rate_budget.set_budget(redis, value)
            print(f"budget: {value:g} events/s shared by all forwarders")
        elif args.action == "clear":
            await rate_budget.set_budget(redis, None)
            print("budget: none (each forwarder's adaptive window alone)")
        else:
            current = await rate_budget.get_budget(redis)
            print(f"budget: {'none' if current is None else f'{current:g} events/s'}")
            for name, view in sorted((await views.read_stats(redis)).items()):
                print(f"forwarder {name}: {json.dumps(view, sort_keys=True)}")

    return on_queue(args, "budget", body)


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

    p = sub.add_parser("orders", help="run the order service (and its outbox relay)")
    _store_flags(p)
    _server_flags(p, "order API port (default 8000)")
    _relay_flags(p)
    _quota_flags(p)
    p.add_argument("--no-relay", dest="run_relay", action="store_const", const=False)
    p.add_argument("--max-items", dest="max_items", type=int)
    p.add_argument("--max-body-bytes", dest="max_body_bytes", type=int)
    p.add_argument("--db-pool-size", dest="db_pool_size", type=int, help="order-write connections")
    p.add_argument(
        "--workers", type=int, help="request processes (default 1); >1: the relay runs apart"
    )
    p.set_defaults(func=cmd_orders)

    p = sub.add_parser("relay", help="run an outbox relay on its own")
    _store_flags(p)
    _relay_flags(p)
    _quota_flags(p)
    p.add_argument("--owner", help="relay name written into leases (default: host-pid)")
    p.set_defaults(func=cmd_relay)

    p = sub.add_parser("migrate", help="apply the order store's schema migrations")
    _store_flags(p)
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("up", help="run the whole stack on this machine")
    _store_flags(p)
    _server_flags(p, "order API port (default 8000)")
    p.add_argument(
        "--analytics-url",
        dest="analytics_url_up",
        help="analytics base URL (default: built-in simulator)",
    )
    _quota_flags(p)
    _control_flags(p)
    p.add_argument(
        "--load",
        type=float,
        default=0.0,
        help="synthetic orders per second, with a status line (default: none)",
    )
    p.set_defaults(func=cmd_up)

    p = sub.add_parser(
        "demo",
        help="the story on one machine: analytics slow, down, overloaded, recovering; a report",
    )
    _store_flags(p)
    _server_flags(p, "order API port (default: a free one)")
    _quota_flags(p)
    _control_flags(p)
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
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "operator", help="the Kubernetes operator: steers every AnalyticsPipeline it watches"
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
        "--liveness", help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz (default: none)"
    )
    p.set_defaults(func=cmd_operator)

    p = sub.add_parser("status", help="what `trackrelay up` decided, observed and restarted")
    p.add_argument("--data-dir", dest="data_dir", help="the data directory `up` runs in")
    p.add_argument("--json", action="store_true", help="the raw status as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("forwarder", help="push events from the stream to analytics")
    p.add_argument("--redis-url", dest="redis_url")
    p.add_argument("--analytics-url", dest="analytics_url")
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--concurrency", type=int, help="most pushes in flight at once (default 8)")
    p.add_argument(
        "--fixed",
        dest="adaptive",
        action="store_const",
        const=False,
        help="no adaptive window, breaker or retry allowance: every lane pushes full batches",
    )
    p.add_argument(
        "--push-latency-limit",
        dest="push_latency_limit",
        type=float,
        help="seconds a push may take",
    )
    p.add_argument("--breaker-threshold", dest="breaker_threshold", type=int)
    p.add_argument("--breaker-open-max", dest="breaker_open_max", type=float)
    p.add_argument("--retry-ratio", dest="retry_ratio", type=float, help="retries per attempt")
    p.add_argument("--budget-tolerance", dest="budget_tolerance", type=float)
    p.add_argument(
        "--ignore-retry-after",
        dest="honor_retry_after",
        action="store_const",
        const=False,
        help="retry without waiting for Retry-After (a benchmark baseline)",
    )
    p.add_argument("--stats-interval", dest="stats_interval", type=float)
    p.add_argument("--block-ms", dest="block_ms", type=int)
    p.add_argument("--push-timeout", dest="push_timeout", type=float)
    p.add_argument("--claim-idle", dest="claim_idle", type=float)
    p.add_argument("--claim-interval", dest="claim_interval", type=float)
    p.add_argument("--redis-timeout", dest="redis_timeout", type=float)
    p.add_argument("--max-deliveries", dest="max_deliveries", type=int)
    p.add_argument("--split-after", dest="split_after", type=int)
    p.add_argument("--max-batch-bytes", dest="max_batch_bytes", type=int)
    p.add_argument("--backoff-base", dest="backoff_base", type=float)
    p.add_argument("--backoff-max", dest="backoff_max", type=float)
    p.add_argument("--shutdown-grace", dest="shutdown_grace", type=float)
    p.add_argument("--consumer-name", dest="consumer_name")
    p.add_argument("--host", help="address of /healthz, /readyz, /metrics (default 127.0.0.1)")
    p.add_argument(
        "--metrics-port", dest="metrics_port", type=int, help="port of /healthz, /metrics"
    )
    p.set_defaults(func=cmd_forwarder)

    p = sub.add_parser("analytics-sim", help="run the analytics simulator")
    p.add_argument("--host", dest="sim_host")
    p.add_argument("--port", dest="sim_port", type=int)
    p.add_argument("--rate", dest="sim_rate", type=float, help="events/s; 0 = unlimited")
    p.add_argument("--overhead", dest="sim_overhead", type=float, help="seconds per request")
    p.add_argument("--queue-limit", dest="sim_queue_limit", type=float)
    p.add_argument("--collapse", dest="sim_collapse", action="store_const", const=True)
    p.add_argument("--max-body-bytes", dest="sim_max_body_bytes", type=int, help="413 beyond")
    p.add_argument("--scenario", dest="sim_scenario", help="JSON/YAML file of timed phases")
    p.add_argument("--seed", dest="sim_seed", type=int)
    p.add_argument(
        "--journal", dest="sim_journal", help="file that keeps accepted events across restarts"
    )
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser(
        "budget", help="show, set or clear the rate budget all forwarders share (live)"
    )
    p.add_argument("action", choices=["show", "set", "clear"])
    p.add_argument("value", nargs="?", help="events per second, for set")
    p.add_argument("--redis-url", dest="redis_url")
    p.set_defaults(func=cmd_budget)

    p = sub.add_parser("dlq", help="list, replay or purge the dead-letter stream")
    p.add_argument("action", choices=["list", "replay", "purge"])
    p.add_argument("--redis-url", dest="redis_url")
    p.add_argument("--count", type=int, default=None)
    p.set_defaults(func=cmd_dlq)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
