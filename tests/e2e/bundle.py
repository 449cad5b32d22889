"""One install of the whole bundle in the kind cluster, for a test module to drive.

``installed`` runs ``helm install --wait`` of the chart with the images built here
(trackrelay's own Dockerfile on a Debian base; PostgreSQL and Redis from Debian's
packages, loaded with ``kind load image-archive``) in a namespace of its own, starts a
client pod there, and uninstalls at the end. Traffic comes from the client pod, to
the cluster's Services.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kind import KindCluster, script

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "trackrelay"
RESTRICTED = [f"pod-security.kubernetes.io/{mode}=restricted" for mode in ("enforce", "warn")]
"""The labels that make a namespace admit only pods meeting Pod Security "restricted"."""
RESTRICTED_POD = {
    "spec": {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "client",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    }
}
"""``kubectl run --overrides`` for the client pod: restricted, like every other pod."""


# what the client pod runs: the order API and the simulator's admin API, by Service name
CLIENT = r"""
import json, os, sys, time, urllib.request, uuid

def call(method, url, body=None, timeout=30, key=None):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)

command, args = sys.argv[1], json.loads(sys.argv[2])
if command == "orders":  # create orders, read each back, print ids and lines
    made = []
    for i in range(args["count"]):
        items = [{"sku": f"sku-{(i * 7 + j) % args['skus']}", "qty": 1 + j % 3, "price": 100}
                 for j in range(args["lines"])]
        body = {"customer_id": f"c-{args['tag']}-{i}", "items": items}
        order = call("POST", args["orders"] + "/v1/orders", body)
        made.append(order["order_id"])
        if args.get("every"):
            time.sleep(args["every"])
    read = [call("GET", args["orders"] + "/v1/orders/" + o)["order_id"] for o in made]
    print(json.dumps({"created": made, "read": read}))
elif command == "load":  # orders until told to stop, each retried under its key until 201
    start, i, stop = time.monotonic(), 0, "/tmp/stop-" + args["tag"]
    while time.monotonic() - start < args["seconds"] and not os.path.exists(stop):
        items = [{"sku": f"sku-{(i * 7 + j) % args['skus']}", "qty": 1, "price": 100}
                 for j in range(args["lines"])]
        body = {"customer_id": f"c-{args['tag']}-{i}", "items": items}
        key, tries, said = f"{args['tag']}-{i}", 0, None
        while said is None and tries < args["tries"]:
            tries += 1
            try:
                order = call("POST", args["orders"] + "/v1/orders", body, timeout=10, key=key)
                said = {"ok": order["order_id"], "lines": len(items), "tries": tries}
            except Exception as exc:  # refused, reset, timed out: the order may exist or not
                print(json.dumps({"refused": type(exc).__name__ + ": " + str(exc)[:200]}),
                      flush=True)
                time.sleep(0.5)
        print(json.dumps(said or {"gave_up": key}), flush=True)
        i += 1
        time.sleep(args["every"])
elif command == "get":
    print(json.dumps(call("GET", args["url"])))
elif command == "post":
    print(json.dumps(call("POST", args["url"], args["body"])))
"""


@dataclass
class Release:
    cluster: KindCluster
    ns: str
    helm_bin: str
    name: str
    client_pod: str = "client"

    @property
    def fullname(self) -> str:
        return f"{self.name}-trackrelay"

    def helm(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.cluster.run(
            self.helm_bin,
            "--kubeconfig",
            str(self.cluster.kubeconfig),
            *args,
            timeout=timeout,
            check=check,
        )

    def client(self, command: str, timeout: float = 300, **args: Any) -> Any:
        done = self.cluster.kubectl(
            "exec",
            "-n",
            self.ns,
            self.client_pod,
            "--",
            "python3",
            "-c",
            CLIENT,
            command,
            json.dumps(args),
            timeout=timeout,
        )
        return json.loads(done.stdout)

    def diagnose(self) -> str:
        """The pods, and the last log lines of every container that is not ready."""
        out = [self.cluster.kubectl("get", "pods", "-n", self.ns, "-o", "wide", check=False).stdout]
        pods = self.cluster.get("pods", "-n", self.ns)["items"]
        for pod in pods:
            for status in pod["status"].get("containerStatuses", []):
                if not status.get("ready"):
                    name = pod["metadata"]["name"]
                    logs = self.cluster.kubectl(
                        "logs",
                        "-n",
                        self.ns,
                        name,
                        "-c",
                        status["name"],
                        "--tail=30",
                        "--previous" if status.get("restartCount") else "--tail=30",
                        check=False,
                    )
                    out.append(f"--- {name}/{status['name']}:\n{logs.stdout}{logs.stderr}")
        return "\n".join(out)

    def send_orders(self, command: str = "orders", **args: Any) -> subprocess.Popen[str]:
        """``client(command, ...)`` in the background, while the test does something else."""
        argv = [self.cluster.kubectl_bin, "--kubeconfig", str(self.cluster.kubeconfig), "exec"]
        argv += ["-n", self.ns, self.client_pod, "--", "python3", "-c", CLIENT, command]
        argv.append(json.dumps({**args, "orders": self.orders_url}))
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    @property
    def orders_url(self) -> str:
        return f"http://{self.fullname}-orders"

    @property
    def sim_url(self) -> str:
        return f"http://{self.fullname}-simulator:8100"

    def sim_state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.client("get", url=self.sim_url + "/admin/state")
        return state

    def live(self) -> dict[str, str]:
        live = self.cluster.get("configmap", f"{self.fullname}-live", "-n", self.ns)
        data: dict[str, str] = live.get("data") or {}
        return data

    def pipeline(self) -> dict[str, Any]:
        obj: dict[str, Any] = self.cluster.get("analyticspipeline", self.fullname, "-n", self.ns)
        return obj

    def ready_pods(self, component: str) -> list[str]:
        pods = self.cluster.ready_pods(self.ns, f"app.kubernetes.io/component={component}")
        return [p["metadata"]["name"] for p in pods]


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on it, key by key (nested mappings merge)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


@contextmanager
def installed(
    cluster: KindCluster,
    tmp: pytest.TempPathFactory,
    name: str,
    ns_prefix: str,
    values: dict[str, Any],
    before: Callable[[str], None] | None = None,
) -> Iterator[Release]:
    """The chart installed as release ``name`` with ``values`` over the images built here,
    in a fresh namespace, with a client pod; uninstalled, namespace and all, at the end.
    ``before`` is called with the namespace's name before the install."""
    script("app-images", timeout=1800)
    env = cluster.env  # the script's env, after app-images built what it names
    ns = f"{ns_prefix}-{secrets.token_hex(3)}"
    rel = Release(cluster, ns, str(Path(cluster.kubectl_bin).parent / "helm"), name)
    image, tag = env["E2E_TRACKRELAY_IMAGE"].rsplit(":", 1)
    pg_repo, pg_tag = env["E2E_POSTGRES_IMAGE"].rsplit(":", 1)
    redis_repo, redis_tag = env["E2E_REDIS_IMAGE"].rsplit(":", 1)
    images = {
        "image": {"repository": image, "tag": tag, "pullPolicy": "Never"},
        "postgresql": {
            "image": {"repository": pg_repo, "tag": pg_tag, "pullPolicy": "Never"},
            "persistence": {"enabled": False},  # kind's node has no volume provisioner here
        },
        "redis": {
            "image": {"repository": redis_repo, "tag": redis_tag, "pullPolicy": "Never"},
            "persistence": {"enabled": False},
        },
    }
    values_file = tmp.mktemp("helm") / f"{name}-values.yaml"
    values_file.write_text(yaml.safe_dump(merged(images, values)))
    try:
        # every pod must pass Pod Security "restricted": the namespace refuses any other
        cluster.kubectl("create", "namespace", ns)
        cluster.kubectl("label", "namespace", ns, *RESTRICTED)
        if before is not None:
            before(ns)
        started = time.monotonic()
        done = rel.helm(
            "install",
            name,
            str(CHART),
            "--namespace",
            ns,
            "--create-namespace",
            "--wait",
            "--timeout",
            "5m",
            "-f",
            str(values_file),
            check=False,
        )
        assert done.returncode == 0, done.stderr + rel.diagnose()
        print(f"\nhelm install --wait took {time.monotonic() - started:.0f}s")
        cluster.kubectl(
            "run",
            rel.client_pod,
            "-n",
            ns,
            f"--image={env['E2E_TRACKRELAY_IMAGE']}",
            "--image-pull-policy=Never",
            "--restart=Never",
            "--override-type=strategic",
            f"--overrides={json.dumps(RESTRICTED_POD)}",
            "--command",
            "--",
            "python3",
            "-c",
            "import time; time.sleep(10**6)",
        )
        cluster.kubectl(
            "wait", "-n", ns, f"pod/{rel.client_pod}", "--for=condition=Ready", "--timeout=120s"
        )
        yield rel
    finally:
        if rel.helm("status", name, "-n", ns, check=False).returncode == 0:
            rel.helm("uninstall", name, "-n", ns, "--wait", check=False)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
