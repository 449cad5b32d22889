"""Operator startup: kopf's settings for this operator, and its state put into the memo."""

from __future__ import annotations

import asyncio
import logging
import random

import kopf

from trackrelay_operator.destinations import DEFAULT_ALLOWED
from trackrelay_operator.kube import Kube
from trackrelay_operator.liveness import Liveness
from trackrelay_operator.memo import OperatorMemo


def configure(settings: kopf.OperatorSettings) -> None:
    # Our own Events carry the controller's reasons; kopf's per-handler ones would be noise.
    settings.posting.level = logging.ERROR
    # Replicas of one operator must not share a priority, or peering cannot pick one.
    if settings.peering.priority == 0:
        settings.peering.priority = random.randint(1, 32767)
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    # No cluster-wide reads: kopf does not scan namespaces or CRDs (the CRD is installed
    # before the operator; a namespaced operator's Role could list neither).
    settings.scanning.disabled = True


def fill(memo: OperatorMemo, kube: Kube) -> None:
    """The operator's state, before any resource is watched (resource memos copy it)."""
    memo.kube = kube
    memo.liveness = Liveness()
    memo.runners = {}
    memo.steered = set()
    if "allowed_hosts" not in memo:  # the command line sets it before kopf starts
        memo.allowed_hosts = DEFAULT_ALLOWED


async def startup(settings: kopf.OperatorSettings, memo: OperatorMemo) -> None:
    configure(settings)
    # The client reads the kubeconfig (or the in-cluster account) from disk: off the loop.
    fill(memo, await asyncio.to_thread(Kube))
