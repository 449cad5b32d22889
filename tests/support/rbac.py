"""What the operator's service account may and may not do (manifests/rbac and the chart)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

CAN = [
    ("get", "analyticspipelines.trackrelay.io"),
    ("watch", "analyticspipelines.trackrelay.io"),
    ("patch", "analyticspipelines.trackrelay.io/status"),
    ("create", "configmaps"),
    ("patch", "configmaps"),
    ("get", "secrets"),
    ("get", "deployments.apps"),
    ("patch", "deployments.apps/scale"),
    ("update", "analyticspipelines.trackrelay.io/status"),
    ("list", "horizontalpodautoscalers.autoscaling"),
    ("create", "events"),
    ("patch", "events"),
    ("patch", "kopfpeerings.kopf.dev"),
]
CANNOT = [
    ("delete", "analyticspipelines.trackrelay.io"),
    ("update", "deployments.apps"),
    ("delete", "deployments.apps/scale"),
    ("create", "analyticspipelines.trackrelay.io"),
    ("delete", "configmaps"),
    ("list", "secrets"),
    ("create", "secrets"),
    ("patch", "deployments.apps"),
    ("delete", "deployments.apps"),
    ("create", "pods"),
    ("patch", "horizontalpodautoscalers.autoscaling"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
]


NAMESPACED_ONLY = [("get", "secrets")]
"""What a namespaced operator (the chart's Role) may do only by name: ``get`` of the
Secrets its pipelines read, not of any Secret."""


def disallowed_answers(
    kubectl: Callable[..., subprocess.CompletedProcess[str]],
    who: str,
    namespace: str,
    namespaced: bool = False,
) -> dict[tuple[str, str], str]:
    """``kubectl auth can-i --as who`` for CAN and CANNOT: every answer that is wrong.
    ``namespaced``: the chart's Role, which grants NAMESPACED_ONLY only by name."""
    can = [c for c in CAN if not (namespaced and c in NAMESPACED_ONLY)]
    cannot = CANNOT + (NAMESPACED_ONLY if namespaced else [])
    wrong = {}
    for verb, resource in can + cannot:
        kind, _, sub = resource.partition("/")
        extra = [f"--subresource={sub}"] if sub else []
        r = kubectl("auth", "can-i", verb, kind, *extra, "-n", namespace, "--as", who)
        answer = r.stdout.strip()
        if answer != ("yes" if (verb, resource) in can else "no"):
            wrong[(verb, resource)] = answer
    return wrong
