"""The subcommands that steer a running queue by hand: ``budget`` and ``dlq``.

Both act on the queue Redis the flags or the environment name, which must
answer; they print one line per result for a person or a script to read.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from trackrelay.cli.flags import settings_for

if TYPE_CHECKING:
    from trackrelay.queue.client import Queue

QueueWork = Callable[["Queue"], Awaitable[None]]


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

    from trackrelay.queue import dlq, shards

    async def body(redis: Queue) -> None:
        every = await shards.current(redis)
        if args.action == "list":
            for dead in await dlq.list_entries(redis, every, args.count or 100):
                print(json.dumps(dead.as_dict()))
        elif args.action == "replay":
            moved = await dlq.replay(redis, every, args.count)
            print(f"replayed {moved} events onto the stream")
        else:
            print(f"purged {await dlq.purge(redis, every)} events from the DLQ")

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
