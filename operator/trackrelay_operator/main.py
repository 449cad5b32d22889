"""kopf's handlers for AnalyticsPipelines: registered here, each delegating to ``handlers/``.

- startup: kopf's settings, and the operator's state into the memo;
- cleanup: release the finalizers of the pipelines this process steered;
- create / update (spec) / resume: validate the spec, make sure the ConfigMap exists;
- every watch event, and the liveness probe: whether the watch is alive;
- one daemon per pipeline: the shared control loop (``runner.PipelineRunner``).

The function names are kopf's handler ids (its logs and annotations carry them).
"""

from __future__ import annotations

from typing import Any

import kopf

from trackrelay_operator.handlers import (
    handle_cleanup,
    handle_liveness,
    handle_reconcile,
    handle_startup,
    handle_validate,
)
from trackrelay_operator.memo import OperatorMemo
from trackrelay_operator.spec import GROUP, PLURAL, VERSION


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: OperatorMemo, **_: Any) -> None:
    await handle_startup.startup(settings, memo)


@kopf.on.cleanup()
async def release_finalizers(settings: kopf.OperatorSettings, memo: OperatorMemo, **_: Any) -> None:
    await handle_cleanup.release_finalizers(settings, memo)


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@kopf.on.resume(GROUP, VERSION, PLURAL)
async def validate(
    spec: kopf.Spec,
    body: kopf.Body,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: OperatorMemo,
    **_: Any,
) -> None:
    await handle_validate.validate(memo.kube, spec, body, status, patch)


@kopf.on.event(GROUP, VERSION, PLURAL)
def seen(memo: OperatorMemo, **_: Any) -> None:
    handle_liveness.seen(memo)


@kopf.on.probe(id="watch")
def liveness(memo: OperatorMemo, **_: Any) -> dict[str, Any]:
    return handle_liveness.probe(memo)


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0)
async def reconcile(
    body: kopf.Body, stopped: kopf.DaemonStopped, memo: OperatorMemo, **_: Any
) -> None:
    await handle_reconcile.reconcile(body, stopped, memo)
