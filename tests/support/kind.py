"""The e2e tier's cluster: kind with a node image built here (tests/e2e/kind-cluster.sh).

Everything goes through the script's own commands, so a test sees the cluster
exactly as ``make e2e-cluster`` leaves it for a user.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "e2e" / "kind-cluster.sh"


def script(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """Run ``kind-cluster.sh``; a failure raises with its output, which names the cause."""
    done = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"kind-cluster.sh {' '.join(args)} exited {done.returncode}:\n"
            f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return done


@dataclass(frozen=True)
class KindCluster:
    """A running kind cluster and the tools to reach it."""

    name: str
    kubeconfig: Path
    kubectl_bin: str
    kind_bin: str
    slim_image: str
    cache: Path
    env: dict[str, str]

    @classmethod
    def from_script(cls) -> KindCluster:
        values = dict(
            line.split("=", 1) for line in script("env").stdout.splitlines() if "=" in line
        )
        env = {**os.environ, **values}
        return cls(
            name=values["KIND_CLUSTER"],
            kubeconfig=Path(values["KUBECONFIG"]),
            kubectl_bin=values["KUBECTL"],
            kind_bin=values["KIND"],
            slim_image=values["E2E_SLIM_IMAGE"],
            cache=Path(values["E2E_CACHE"]),
            env=env,
        )

    def run(
        self, *argv: str, stdin: str | None = None, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=timeout, env=self.env
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    def kubectl(
        self, *args: str, stdin: str | None = None, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            self.kubectl_bin,
            "--kubeconfig",
            str(self.kubeconfig),
            *args,
            stdin=stdin,
            timeout=timeout,
            check=check,
        )

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def ready_pods(self, ns: str, selector: str) -> list[dict[str, Any]]:
        """Pods matching ``selector`` that are Ready and not being deleted."""
        pods = self.get("pods", "-n", ns, "-l", selector)["items"]
        return [
            p
            for p in pods
            if p["metadata"].get("deletionTimestamp") is None
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
        ]

    def kind(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.run(self.kind_bin, *args, timeout=timeout)

    def node_containers(self) -> list[str]:
        """Names of the podman containers that belong to this cluster."""
        out = self.run(
            "podman",
            "ps",
            "-a",
            "--filter",
            f"label=io.x-k8s.kind.cluster={self.name}",
            "--format",
            "{{.Names}}",
        ).stdout
        return out.split()

    def network_exists(self) -> bool:
        return self.run("podman", "network", "exists", self.name, check=False).returncode == 0


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 120, every: float = 1) -> Any:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last saw {last!r}")
