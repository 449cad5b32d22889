"""A pipeline's daemon: its runner, known in the memo while it runs.

The memo's ``runners`` is what the liveness probe counts; ``steered`` is what
cleanup releases at exit.
"""

from __future__ import annotations

import kopf

from trackrelay_operator.memo import OperatorMemo, pipeline_key
from trackrelay_operator.runner import PipelineRunner

PAUSING = kopf.DaemonStoppingReason.OPERATOR_PAUSING


async def reconcile(body: kopf.Body, stopped: kopf.DaemonStopped, memo: OperatorMemo) -> None:
    key = pipeline_key(body)
    runner = PipelineRunner(
        memo.kube, body, liveness=memo.liveness, allowed_hosts=memo.allowed_hosts
    )
    memo.runners[key] = runner
    memo.steered.add(key)
    try:
        await runner.run(stopped)
    finally:
        if memo.runners.get(key) is runner:  # a daemon started since keeps its own
            del memo.runners[key]
            if stopped.reason is not None and stopped.reason & PAUSING:
                # Another replica steers now: at exit, this one must not take off the
                # finalizer that replica relies on.
                memo.steered.discard(key)
