"""The operator's state, kept in kopf's memo: one object every handler is handed, so no
handler needs a module-level global.

kopf hands every handler a ``memo``: the operator's own in operator-level
handlers (startup, cleanup, probes), and for each resource a shallow copy of
it, so what startup puts there (the Kubernetes adapter, the liveness record,
the table of running pipelines) is the same object everywhere. ``OperatorMemo``
names those entries with their types; ``handle_startup`` fills them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import kopf

if TYPE_CHECKING:
    from trackrelay_operator.kube import Kube
    from trackrelay_operator.liveness import Liveness
    from trackrelay_operator.runner import PipelineRunner

PipelineKey = tuple[str, str]
"""A pipeline by (namespace, name)."""


class OperatorMemo(kopf.Memo):
    """kopf's memo with the operator's entries typed (a plain ``kopf.Memo`` works alike)."""

    kube: Kube
    """Every Kubernetes call goes through this one adapter."""
    liveness: Liveness
    """When the watch last delivered an event (the liveness probe's evidence)."""
    runners: dict[PipelineKey, PipelineRunner]
    """The pipelines whose daemon runs now, each with its runner."""
    steered: set[PipelineKey]
    """Every pipeline this process ran a daemon for (its finalizers are released at exit)."""
    allowed_hosts: tuple[str, ...]
    """The hosts a pipeline's URLs may name (``destinations``); set before kopf starts."""


def pipeline_key(body: kopf.Body) -> PipelineKey:
    return body["metadata"]["namespace"], body["metadata"]["name"]
