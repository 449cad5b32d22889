"""The ``trackrelay`` console script: one entry point, a subcommand per role.

Flags override the matching ``TRACKRELAY_*`` settings; the commands only wire
settings to the runners in ``local/`` and the services' factories.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

Handler = Callable[[argparse.Namespace], int]


def _overrides(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """Flags the user gave (not None), as settings keyword arguments."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", dest="redis_url", help="queue Redis (default: embedded)")
    p.add_argument(
        "--database-url",
        dest="database_url",
        help="order store, postgresql://... or sqlite:///path (default: SQLite file)",
    )
    p.add_argument("--data-dir", dest="data_dir", help="where embedded data lives")


_STORE = ("redis_url", "database_url", "data_dir")


def cmd_orders(args: argparse.Namespace) -> int:
    from trackrelay.local.runner import serve_orders
    from trackrelay.settings import OrderSettings

    settings = OrderSettings(**_overrides(args, (*_STORE, "host", "port", "run_relay")))
    return asyncio.run(serve_orders(settings))


def cmd_relay(args: argparse.Namespace) -> int:
    from trackrelay.local.runner import run_relay
    from trackrelay.settings import OrderSettings

    settings = OrderSettings(**_overrides(args, (*_STORE, "relay_batch_size")))
    return asyncio.run(run_relay(settings, owner=args.owner))


def cmd_migrate(args: argparse.Namespace) -> int:
    from trackrelay.orders.migrate import upgrade
    from trackrelay.settings import StoreSettings

    settings = StoreSettings(**_overrides(args, _STORE))
    url = settings.resolved_database_url()
    upgrade(url)
    print(f"migrated {url.split('@')[-1]} to head")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from trackrelay.local.runner import up
    from trackrelay.settings import OrderSettings

    settings = OrderSettings(**_overrides(args, (*_STORE, "host", "port")))
    return asyncio.run(
        up(settings, analytics_url=args.analytics_url, forwarders=args.forwarders, load=args.load)
    )


_FORWARDER = (
    "redis_url",
    "analytics_url",
    "batch_size",
    "block_ms",
    "push_timeout",
    "claim_idle",
    "max_deliveries",
    "consumer_name",
    "metrics_port",
)


def cmd_forwarder(args: argparse.Namespace) -> int:
    from trackrelay.forwarder.main import run_forwarder
    from trackrelay.settings import ForwarderSettings

    return asyncio.run(run_forwarder(ForwarderSettings(**_overrides(args, _FORWARDER))))


def cmd_sim(args: argparse.Namespace) -> int:
    from trackrelay.local.runner import serve_simulator
    from trackrelay.settings import SimulatorSettings

    names = (
        "sim_host",
        "sim_port",
        "sim_rate",
        "sim_overhead",
        "sim_queue_limit",
        "sim_collapse",
        "sim_scenario",
        "sim_seed",
    )
    return asyncio.run(serve_simulator(SimulatorSettings(**_overrides(args, names))))


def cmd_dlq(args: argparse.Namespace) -> int:
    import json

    from redis.asyncio import Redis

    from trackrelay.forwarder import dlq
    from trackrelay.settings import StoreSettings

    settings = StoreSettings(**_overrides(args, ("redis_url",)))
    if settings.redis_url is None:
        raise ValueError("dlq needs TRACKRELAY_REDIS_URL / --redis-url")

    async def go() -> int:
        redis = Redis.from_url(settings.redis_url or "")
        try:
            if args.action == "list":
                for dead in await dlq.list_entries(redis, args.count or 100):
                    print(json.dumps(dead.as_dict()))
            elif args.action == "replay":
                print(f"replayed {await dlq.replay(redis, args.count)} events onto the stream")
            else:
                print(f"purged {await dlq.purge(redis)} events from the DLQ")
        finally:
            await redis.aclose()
        return 0

    return asyncio.run(go())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackrelay", description="Keep taking orders when analytics is slow."
    )
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("orders", help="run the order service (and its outbox relay)")
    _store_flags(p)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--no-relay", dest="run_relay", action="store_const", const=False)
    p.set_defaults(func=cmd_orders)

    p = sub.add_parser("relay", help="run an outbox relay on its own")
    _store_flags(p)
    p.add_argument("--batch-size", dest="relay_batch_size", type=int)
    p.add_argument("--owner", help="relay name written into leases (default: host-pid)")
    p.set_defaults(func=cmd_relay)

    p = sub.add_parser("migrate", help="apply the order store's schema migrations")
    _store_flags(p)
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("up", help="run the whole stack on this machine")
    _store_flags(p)
    p.add_argument("--host")
    p.add_argument("--port", type=int, help="order API port (default 8000)")
    p.add_argument("--analytics-url", help="analytics base URL (default: built-in simulator)")
    p.add_argument("--forwarders", type=int, default=2, help="forwarder processes")
    p.add_argument(
        "--load",
        type=float,
        default=0.0,
        help="synthetic orders per second, with a status line (default: none)",
    )
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("forwarder", help="push events from the stream to analytics")
    p.add_argument("--redis-url", dest="redis_url")
    p.add_argument("--analytics-url", dest="analytics_url")
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--concurrency", type=int, help="batches in flight at once (default 2)")
    p.add_argument("--block-ms", dest="block_ms", type=int)
    p.add_argument("--push-timeout", dest="push_timeout", type=float)
    p.add_argument("--claim-idle", dest="claim_idle", type=float)
    p.add_argument("--max-deliveries", dest="max_deliveries", type=int)
    p.add_argument("--consumer-name", dest="consumer_name")
    p.add_argument("--metrics-port", dest="metrics_port", type=int)
    p.set_defaults(func=cmd_forwarder)

    p = sub.add_parser("analytics-sim", help="run the analytics simulator")
    p.add_argument("--host", dest="sim_host")
    p.add_argument("--port", dest="sim_port", type=int)
    p.add_argument("--rate", dest="sim_rate", type=float, help="events/s; 0 = unlimited")
    p.add_argument("--overhead", dest="sim_overhead", type=float, help="seconds per request")
    p.add_argument("--queue-limit", dest="sim_queue_limit", type=float)
    p.add_argument("--collapse", dest="sim_collapse", action="store_const", const=True)
    p.add_argument("--scenario", dest="sim_scenario", help="JSON/YAML file of timed phases")
    p.add_argument("--seed", dest="sim_seed", type=int)
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("dlq", help="list, replay or purge the dead-letter stream")
    p.add_argument("action", choices=["list", "replay", "purge"])
    p.add_argument("--redis-url", dest="redis_url")
    p.add_argument("--count", type=int, default=None)
    p.set_defaults(func=cmd_dlq)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        code: int = args.func(args)
    except ValidationError as exc:
        print(f"trackrelay: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as exc:
        print(f"trackrelay: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
