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
    return asyncio.run(up(settings, analytics_url=args.analytics_url, forwarders=args.forwarders))


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
    p.set_defaults(func=cmd_up)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
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
