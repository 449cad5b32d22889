"""Operator exit: release the pipelines kopf holds with its finalizer.

kopf puts a finalizer on every object with a daemon, and leaves it when the
operator exits: a pipeline deleted while no operator runs (``helm uninstall``
deletes both at once) would then hang in Terminating forever. The daemon holds
nothing to clean up (the forwarders go on with the last configuration), so a
pipeline needs no finalizer while no operator watches it; the next operator
adds it back when it resumes.
"""

from __future__ import annotations

import asyncio
import logging

import kopf

from trackrelay_operator.memo import OperatorMemo

log = logging.getLogger(__name__)


async def release_finalizers(settings: kopf.OperatorSettings, memo: OperatorMemo) -> None:
    if "kube" not in memo:  # startup never finished: nothing was steered
        return
    finalizer = settings.persistence.finalizer
    for namespace, name in sorted(memo.steered):
        try:
            released = await asyncio.to_thread(
                memo.kube.release_finalizer, namespace, name, finalizer
            )
        except Exception as exc:  # exiting: report, never raise
            log.warning("could not release %s/%s: %s", namespace, name, exc)
            continue
        if released:
            log.info("released %s/%s (finalizer %s)", namespace, name, finalizer)
