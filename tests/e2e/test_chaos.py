"""A chaos run: the whole bundle under steady order load while its parts are taken away.

One install of the chart (tests/e2e/bundle.py) with its stores on volumes that outlive
their pods, the relay in a Deployment of its own, and two forwarders. While a client
pod keeps placing orders (each retried under its Idempotency-Key until accepted, as a
shop's checkout would), one fault at a time:

- the PostgreSQL pod is deleted;
- the Redis pod is deleted;
- a relay and a forwarder are killed mid-batch (force-deleted together);
- the node's forwarder pods are drained (``kubectl drain --pod-selector``);
- the operator is restarted.

After each, the run waits for the replacement and for analytics to have counted every
line accepted until then (the time to catch up). At the end the database holds exactly
the orders the client was told were accepted, analytics counted each of their lines
exactly once, no store outage was a 500, and no pod is crash-looping. The run prints
its figures.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.e2e.bundle import Release, installed
from tests.support.kind import KindCluster, wait_for

NAME = "chaos"
FULLNAME = f"{NAME}-trackrelay"
STORAGE_CLASS = "trackrelay-chaos-local"
STORES = ("postgresql", "redis")
LINES = 3  # lines an order
EVERY = 0.05  # seconds between one order's answer and the next order
FAULT_TIMEOUT = 240  # seconds a fault may take to be replaced and caught up
LOAD_LIMIT = 1800  # seconds the client places orders at most (it stops when told)
STEADY = 10  # seconds of steady load after each fault has caught up
TRIES = 120  # attempts an order gets, 0.5 s apart, under its Idempotency-Key


@dataclass
class Load:
    """The client's orders, as their answers come back (read in a thread)."""

    proc: subprocess.Popen[str]
    accepted: dict[str, int] = field(default_factory=dict)
    """Order id -> its lines, for every order answered 201."""
    refused: list[tuple[float, str]] = field(default_factory=list)
    """When (monotonic, here) and why each attempt was not accepted."""
    lines: int = 0
    """Lines of the accepted orders."""
    retried: int = 0
    """Orders accepted after a refused attempt (retried under the same Idempotency-Key)."""
    gave_up: list[str] = field(default_factory=list)
    """Idempotency keys of orders the client stopped retrying."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            said = json.loads(raw)
            with self.lock:
                if "ok" in said:
                    self.accepted[said["ok"]] = said["lines"]
                    self.lines += said["lines"]
                    self.retried += said["tries"] > 1
                elif "refused" in said:
                    self.refused.append((time.monotonic(), said["refused"]))
                else:
                    self.gave_up.append(said["gave_up"])

    def accepted_lines(self) -> int:
        with self.lock:
            return self.lines


@dataclass
class Fault:
    name: str
    began: float
    replaced: float = 0.0
    caught_up: float = 0.0
    refused: int = 0


@pytest.fixture(scope="module")
def chaos(kind_cluster: KindCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    node = kind_cluster.get("nodes")["items"][0]["metadata"]["name"]
    root = f"/var/local/{FULLNAME}"
    kind_cluster.run("podman", "exec", node, "sh", "-c", f"rm -rf {root} && mkdir -p {root}")
    values = {
        "postgresql": {
            "persistence": {"enabled": True, "storageClass": STORAGE_CLASS, "size": "1Gi"}
        },
        "redis": {
            "persistence": {"enabled": True, "storageClass": STORAGE_CLASS, "size": "1Gi"},
            "appendfsync": "always",
        },
        "simulator": {"enabled": True, "rate": 2000, "admin": True},
        "queue": {"quotaMiB": 16},  # no shedding: every line is counted one by one
        "orders": {"replicas": 1},
        "relay": {"separate": True, "replicas": 1},
        "forwarder": {"replicas": 2, "batchSize": 50, "concurrency": 2},
        "pipeline": {
            "budget": {"min": 50, "max": 5000, "initial": 1000},
            "replicas": {"min": 2, "max": 2},
            "reconcileIntervalSeconds": 1,
        },
    }
    for store in STORES:  # a local volume each, bound to the StatefulSet's claim by name
        path = f"{root}/{store}"
        kind_cluster.run("podman", "exec", node, "sh", "-c", f"mkdir -p {path} && chmod 777 {path}")
    ns_holder: dict[str, str] = {}

    def make_volumes(ns: str) -> None:
        storage_class = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer",
        }
        docs: list[dict[str, Any]] = [storage_class]
        docs += [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"{FULLNAME}-{ns}-{store}"},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": STORAGE_CLASS,
                    "claimRef": {"namespace": ns, "name": f"data-{FULLNAME}-{store}-0"},
                    "local": {"path": f"{root}/{store}"},
                    "nodeAffinity": {
                        "required": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {
                                            "key": "kubernetes.io/hostname",
                                            "operator": "In",
                                            "values": [node],
                                        }
                                    ]
                                }
                            ]
                        }
                    },
                },
            }
            for store in STORES
        ]
        kind_cluster.kubectl(
            "apply",
            "-f",
            "-",
            stdin=json.dumps({"kind": "List", "apiVersion": "v1", "items": docs}),
        )
        ns_holder["ns"] = ns

    try:
        with installed(
            kind_cluster, tmp_path_factory, NAME, "chaos", values, before=make_volumes
        ) as rel:
            yield rel
    finally:
        kind_cluster.kubectl("uncordon", node, check=False)
        if "ns" in ns_holder:
            for store in STORES:
                kind_cluster.kubectl(
                    "delete",
                    "pv",
                    f"{FULLNAME}-{ns_holder['ns']}-{store}",
                    "--wait=false",
                    check=False,
                )
        kind_cluster.kubectl("delete", "storageclass", STORAGE_CLASS, check=False)
        kind_cluster.run("podman", "exec", node, "rm", "-rf", root, check=False)


def test_nothing_is_lost_or_counted_twice_while_the_bundle_is_taken_apart(
    chaos: Release,
) -> None:
    cluster, ns = chaos.cluster, chaos.ns
    node = cluster.get("nodes")["items"][0]["metadata"]["name"]
    component = "app.kubernetes.io/component"
    mine = f"app.kubernetes.io/instance={NAME}"

    def pods(of: str) -> list[str]:
        return chaos.ready_pods(of)

    def counted() -> int:  # a kubectl exec that fails once (a loaded node) is "not yet"
        try:
            return int(chaos.sim_state()["lines"])
        except (AssertionError, subprocess.TimeoutExpired):
            return -1

    def uids(of: str) -> set[str]:  # a StatefulSet's pod comes back under the same name
        ready = cluster.ready_pods(ns, f"{component}={of},{mine}")
        return {p["metadata"]["uid"] for p in ready}

    def replaced(of: str, gone: set[str], count: int = 1) -> Callable[[], bool]:
        def probe() -> bool:
            try:
                return len(uids(of) - gone) >= count
            except (AssertionError, subprocess.TimeoutExpired):  # kubectl failed once
                return False

        return probe

    args = {"orders": chaos.orders_url, "seconds": LOAD_LIMIT, "lines": LINES, "skus": 50}
    args["tries"] = TRIES
    load = Load(chaos.send_orders("load", tag="chaos", every=EVERY, **args))
    reader = threading.Thread(target=load.read, daemon=True)
    reader.start()
    faults: list[Fault] = []
    started = time.monotonic()
    lag: list[tuple[float, int, int]] = []  # when, lines accepted, lines counted
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            seen = counted()
            if seen >= 0:  # a failed exec is left out; the next sample tells
                lag.append((time.monotonic() - started, load.accepted_lines(), seen))
            sampling.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def fault(name: str, act: Callable[[], None], back: Callable[[], bool]) -> None:
        f = Fault(name, time.monotonic())
        faults.append(f)
        act()
        wait_for(f"{name}: the replacement", back, timeout=FAULT_TIMEOUT, every=0.5)
        f.replaced = time.monotonic()
        due = load.accepted_lines()
        wait_for(
            f"{name}: analytics to count the {due} lines accepted until the replacement",
            lambda: counted() >= due,
            timeout=FAULT_TIMEOUT,
            every=0.5,
        )
        f.caught_up = time.monotonic()
        with load.lock:
            f.refused = sum(1 for t, _ in load.refused if f.began <= t <= f.caught_up)
        time.sleep(STEADY)

    def delete(*names: str, force: bool = False) -> None:
        how = ["--grace-period=0", "--force"] if force else ["--wait=false"]
        cluster.kubectl("delete", "pod", "-n", ns, *names, *how)

    try:
        wait_for("orders flowing", lambda: load.accepted_lines() >= 300, timeout=120)
        for store in STORES:

            def restart(of: str = store) -> None:
                delete(*pods(of))

            fault(f"{store} pod deleted", restart, replaced(store, uids(store)))
        relays, forwarders = uids("relay"), uids("forwarder")
        victims = [pods("relay")[0], pods("forwarder")[0]]
        fault(
            "relay and forwarder killed mid-batch",
            lambda: delete(*victims, force=True),
            lambda: (
                replaced("relay", relays)()
                and len(uids("forwarder")) >= 2
                and bool(uids("forwarder") - forwarders)
            ),
        )
        drained = uids("forwarder")

        def drain() -> None:
            cluster.kubectl(
                "drain",
                node,
                f"--pod-selector={component}=forwarder,{mine}",
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--timeout=180s",
                timeout=240,
            )
            cluster.kubectl("uncordon", node)

        fault("forwarders drained", drain, replaced("forwarder", drained, 2))
        operators = uids("operator")
        fault(
            "operator restarted",
            lambda: delete(*pods("operator")),
            replaced("operator", operators, 2),
        )
    finally:
        cluster.kubectl("uncordon", node, check=False)
        cluster.kubectl("exec", "-n", ns, chaos.client_pod, "--", "touch", "/tmp/stop-chaos")
        try:
            load.proc.wait(timeout=60)
        finally:
            if load.proc.poll() is None:
                load.proc.kill()
        reader.join(timeout=30)
    assert load.proc.returncode == 0, load.proc.stderr.read() if load.proc.stderr else ""
    # a store that is away is a 503 (or no answer at all while a pod is replaced), never a 500
    assert not [why for _, why in load.refused if "HTTP Error 5" in why and "503" not in why]
    ended = time.monotonic()

    # every accepted order is in the database, and each of its lines counted once
    (store,) = pods("postgresql")
    psql = ["exec", "-n", ns, store, "-c", "postgresql", "--", "psql", "-h", "/tmp"]
    psql += ["-U", "trackrelay", "-d", "trackrelay", "-At", "-c"]
    stored = set(cluster.kubectl(*psql, "SELECT order_id FROM orders").stdout.split())
    stored_lines = int(cluster.kubectl(*psql, "SELECT count(*) FROM order_lines").stdout)
    missing = set(load.accepted) - stored
    assert not missing, f"{len(missing)} accepted orders not in the database"
    # each order was retried under its key until accepted: the database holds exactly
    # those, once each (a 503 whose order was committed all the same is answered on retry)
    assert not load.gave_up
    assert stored == set(load.accepted), f"{len(stored - set(load.accepted))} orders never told"
    assert stored_lines == load.lines
    wait_for(
        f"analytics to count the {stored_lines} lines in the database",
        lambda: counted() >= stored_lines,
        timeout=FAULT_TIMEOUT,
        every=1,
    )
    final = chaos.sim_state()
    caught_up = time.monotonic() - ended
    sampling.set()
    sampler.join(timeout=30)
    assert final["lines"] == stored_lines, final  # none lost, none counted twice

    # nothing is left crash-looping; every pod of the release is ready
    restarts: dict[str, int] = {}
    for pod in cluster.get("pods", "-n", ns, "-l", mine)["items"]:
        if pod["status"].get("phase") == "Succeeded":  # the migration Job's
            continue
        name = pod["metadata"]["name"]
        for status in pod["status"].get("containerStatuses", []):
            waiting = (status.get("state") or {}).get("waiting") or {}
            assert waiting.get("reason") != "CrashLoopBackOff", (name, status)
            restarts[f"{name}/{status['name']}"] = status.get("restartCount", 0)
    # a store that restarted in place (not replaced as asked) would be a fault of its own
    restarted = {k: v for k, v in restarts.items() if v and ("postgresql" in k or "redis" in k)}
    assert not restarted, restarted
    for of in ("orders", "relay", "forwarder", "operator", "postgresql", "redis", "simulator"):
        assert pods(of), f"no ready {of} pod: {chaos.diagnose()}"

    rows = [
        ("orders accepted", f"{len(load.accepted):,}"),
        ("attempts refused", f"{len(load.refused):,}"),
        ("orders accepted after a retry", f"{load.retried:,}"),
        ("lines in the database", f"{stored_lines:,}"),
        ("events delivered (lines counted)", f"{final['lines']:,}"),
        ("duplicates dropped by analytics", f"{final['duplicates']:,}"),
        ("run", f"{ended - started:.0f} s"),
        ("last lines counted after the load stopped", f"{caught_up:.1f} s"),
    ]
    for f in faults:
        rows.append(
            (
                f.name,
                f"replaced in {f.replaced - f.began:.1f} s, caught up in "
                f"{f.caught_up - f.began:.1f} s, {f.refused} attempts refused meanwhile",
            )
        )
    rows.append(("container restarts", json.dumps({k: v for k, v in restarts.items() if v})))
    worst = max(lag, key=lambda s: s[1] - s[2], default=(0.0, 0, 0))
    rows.append(("most lines not yet counted", f"{worst[1] - worst[2]:,} at {worst[0]:.0f} s"))
    width = max(len(k) for k, _ in rows)
    print("\nchaos run:\n" + "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows))
    reasons = sorted({why for _, why in load.refused})
    print(f"  refusals: {reasons}")
    print("  lag (s, accepted, counted): " + " ".join(f"{t:.0f},{a},{c}" for t, a, c in lag))
