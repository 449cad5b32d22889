"""The one-machine subcommands: ``up`` and ``demo`` run the whole stack, ``status`` reads it.

``up`` and ``demo`` take the store, quota, relay and controller settings from the
flags and hand them to ``trackrelay.local``; the number of forwarders at start
and the analytics URL are arguments of the stack rather than settings.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from trackrelay.cli.flags import settings_for

if TYPE_CHECKING:
    from trackrelay.local.stack import StackOptions


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


def cmd_status(args: argparse.Namespace) -> int:
    from trackrelay.config.settings import StoreSettings
    from trackrelay.local import up

    return up.status(settings_for(StoreSettings, args), as_json=args.json)
