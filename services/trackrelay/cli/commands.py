"""The service subcommands: each builds its settings from the flags and runs one role.

``orders``, ``relay``, ``migrate``, ``forwarder`` and ``analytics-sim`` are what a
container runs (the chart passes their flags); ``operator`` starts the kopf
operator. The bodies only wire settings to the runners; the heavy imports wait
until a command runs, so ``--help`` and the other commands stay quick.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from trackrelay.cli.flags import settings_for


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
    from trackrelay.runtime.retry import until_up

    settings = settings_for(StoreSettings, args)
    url = settings.resolved_database_url()

    async def go() -> None:
        await until_up(lambda: check_store(url), "the order database", settings.start_wait)
        await migrate_store(url)

    asyncio.run(go())
    print(f"migrated {redact_url(url)} to head")
    return 0


def cmd_forwarder(args: argparse.Namespace) -> int:
    from trackrelay.config.settings import ForwarderSettings
    from trackrelay.forwarder.main import run_forwarder

    return asyncio.run(run_forwarder(settings_for(ForwarderSettings, args)))


def cmd_sim(args: argparse.Namespace) -> int:
    from trackrelay.config.settings import SimulatorSettings
    from trackrelay.local.runner import serve_simulator

    return asyncio.run(serve_simulator(settings_for(SimulatorSettings, args)))


def cmd_operator(args: argparse.Namespace) -> int:
    """The Kubernetes operator (kopf): every AnalyticsPipeline in the namespaces given."""
    try:
        import kopf

        import trackrelay_operator  # noqa: F401  (registers the handlers)
        from trackrelay_operator.destinations import DEFAULT_ALLOWED
        from trackrelay_operator.memo import OperatorMemo
    except ImportError as exc:
        raise ValueError(
            f"the operator needs its extra: pip install 'trackrelay[operator]' ({exc})"
        ) from None
    if not args.namespace and not args.all_namespaces:
        raise ValueError("say which namespaces to watch: --namespace NS (repeatable) or -A")
    if (args.log_level or "INFO").upper() != "DEBUG":
        # kopf logs every handler run at INFO; the controller's reasons are what matter.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    memo = OperatorMemo()
    memo.allowed_hosts = tuple(args.allow_host or DEFAULT_ALLOWED)
    logging.getLogger(__name__).info(
        "pipelines' URLs may name these hosts: %s", ", ".join(memo.allowed_hosts)
    )
    asyncio.run(
        kopf.operator(
            memo=memo,
            clusterwide=args.all_namespaces,
            namespaces=args.namespace or (),
            standalone=args.peering is None,
            peering_name=args.peering,
            priority=args.priority,
            liveness_endpoint=args.liveness,
        )
    )
    return 0
