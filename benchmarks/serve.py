"""Start one order-service variant for the benchmarks (run as a child process).

python benchmarks/serve.py KIND PORT DATABASE_URL REDIS_URL ANALYTICS_URL [WORKERS]

KIND: trackrelay | no-relay | no-outbox | sync | bare
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _no_events(*_args: object, **_kwargs: object) -> list[dict[str, object]]:
    return []


def main() -> None:
    kind, port, database_url, redis_url, analytics_url = sys.argv[1:6]
    workers = int(sys.argv[6]) if len(sys.argv) > 6 else 1
    from trackrelay.config.settings import OrderSettings, resolve_database_url
    from trackrelay.orders import store
    from trackrelay.orders.app import create_app

    if kind == "bare":
        from benchmarks.bare_service import prepare

        prepare(database_url)
    if kind == "bare" and workers > 1:
        os.environ["BENCH_DATABASE_URL"] = database_url
        os.environ["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
        uvicorn.run(
            "benchmarks.bare_service:from_env",
            factory=True,
            host="127.0.0.1",
            port=int(port),
            workers=workers,
            log_level="warning",
            access_log=False,
        )
        return
    if kind == "bare":
        from benchmarks.bare_service import create_bare_app

        app = create_bare_app(database_url)
    elif kind == "sync":
        from benchmarks.sync_baseline import create_sync_app

        app = create_sync_app(resolve_database_url(database_url, Path(".")), analytics_url)
    else:
        if kind == "no-outbox":
            # This benchmark's own variant: the same service writing no outbox rows
            # (the statement still runs, with empty arrays): the cost of the outbox.
            store.outbox_rows = _no_events
        settings = OrderSettings(
            database_url=database_url,
            redis_url=redis_url,
            run_relay=kind == "trackrelay",  # no-relay: `trackrelay orders --no-relay`
            migrate_on_start=False,
        )
        app = create_app(settings)
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
