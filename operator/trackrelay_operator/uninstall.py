"""Delete a release's AnalyticsPipelines while their operator still runs (Helm pre-delete).

``helm uninstall`` deletes the operator, its RBAC and the pipelines at once; kopf
holds each pipeline with a finalizer that only a running operator removes, so the
pipeline could hang in Terminating. The chart's pre-delete hook runs this first:
delete the pipelines, wait until the operator has let them go, and if none does
within the grace period (operator disabled or down), release them itself.

    python -m trackrelay_operator.uninstall --namespace NS --selector app.kubernetes.io/instance=R
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import kopf

from trackrelay_operator.kube import Kube


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trackrelay_operator.uninstall")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--selector", required=True, help="label selector of the pipelines")
    parser.add_argument(
        "--grace", type=float, default=60.0, help="seconds to wait for the operator"
    )
    args = parser.parse_args(argv)
    kube = Kube()
    finalizer = kopf.OperatorSettings().persistence.finalizer  # the operator's, by default
    names = kube.pipelines(args.namespace, args.selector)
    for name in names:
        kube.delete_pipeline(args.namespace, name)
        print(f"deleting AnalyticsPipeline {args.namespace}/{name}", flush=True)
    deadline = time.monotonic() + args.grace
    left = names
    while left and time.monotonic() < deadline:
        time.sleep(1)
        left = kube.pipelines(args.namespace, args.selector)
    for name in left:  # no operator let it go: nothing else will
        if kube.release_finalizer(args.namespace, name, finalizer):
            print(f"released {args.namespace}/{name}: no operator answered", flush=True)
    print(f"{len(names)} pipeline(s) deleted", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
