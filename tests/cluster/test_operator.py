"""The AnalyticsPipeline CRD, the operator's RBAC, and the operator against a real API server.

A real kube-apiserver (no node), a real Redis, the analytics simulator and
local forwarder processes that read the operator's ConfigMap through the API.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from kubernetes import client

from tests.cluster.conftest import Cluster, deployment
from tests.support.prometheus import PrometheusServer
from tests.support.rbac import disallowed_answers
from tests.support.traffic import Traffic
from trackrelay.events import Event
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.processes import spawn_role, stop_all, wait_http
from trackrelay.queue.keys import EVENT_FIELD, FORWARDER_STATS_PREFIX, RELAY_STATS_PREFIX, STREAM
from trackrelay.runtime.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
GROUP, VERSION, PLURAL = "trackrelay.io", "v1alpha1", "analyticspipelines"
LOCAL = ["--allow-host", "127.0.0.1"]
"""Redis, the simulator and Prometheus run on this machine, not as the cluster's Services."""


def namespace(cluster: Cluster) -> str:
    name = f"op-{uuid.uuid4().hex[:8]}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


@pytest.fixture(scope="module")
def crd(cluster: Cluster) -> Cluster:
    for path in ("crds/analyticspipelines.trackrelay.io.yaml", "crds/kopf-peering.yaml"):
        applied = cluster.plane.kubectl("apply", "-f", str(MANIFESTS / path))
        assert applied.returncode == 0, applied.stderr
    waited = cluster.plane.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/analyticspipelines.trackrelay.io",
        "--timeout=30s",
    )
    assert waited.returncode == 0, waited.stderr
    return cluster


def until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(every)


# -- the resource ----------------------------------------------------------------------


def test_the_examples_apply_and_get_their_defaults(crd: Cluster) -> None:
    ns = namespace(crd)
    for example in ("minimal", "full"):
        applied = crd.plane.kubectl(
            "apply", "-n", ns, "-f", str(MANIFESTS / f"examples/{example}.yaml")
        )
        assert applied.returncode == 0, applied.stderr
    obj: Any = crd.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "shop")
    spec = obj["spec"]
    assert spec["budget"] == {
        "min": 20,
        "max": 5000,
        "initial": 1000,
        "increase": 1.5,
        "decrease": 0.5,
    }
    assert spec["replicas"]["max"] == 4 and spec["queue"]["shedding"]["policy"] == "auto"
    assert spec["redis"]["secretRef"]["key"] == "url"
    listed = crd.plane.kubectl("get", "analyticspipelines", "-n", ns)
    assert listed.returncode == 0
    header = listed.stdout.splitlines()[0].split()
    assert header == ["NAME", "BUDGET", "REPLICAS", "POLICY", "HEALTH", "BACKLOG", "AGE"]


NO_RANGE = {"name": "a", "query": "up"}
BAD_SPECS = [
    ({"budget": {"min": "lots"}}, ["spec.budget.min", "must be of type number"]),
    (
        {"budget": {"min": 100, "max": 10, "initial": 50}},
        ["spec.budget.min", "budget.min must be <= budget.max"],
    ),
    (
        {"replicas": {"min": 5, "max": 2}},
        ["spec.replicas.min", "replicas.min must be <= replicas.max"],
    ),
    (
        {"queue": {"shedding": {"policy": "shred"}}},
        ["spec.queue.shedding.policy", "Unsupported value"],
    ),
    ({"queue": {"quota": "lots"}}, ["spec.queue.quota"]),
    ({"budget": {"decrease": 1.5}}, ["spec.budget.decrease"]),
    (  # below one event per controller tick, delivery would stall
        {"budget": {"min": 0.001, "max": 10, "initial": 5}},
        ["spec.budget.min", "greater than or equal to 1"],
    ),
    ({"configMap": None}, ["spec.configMap", "Required value"]),
    (
        {"analytics": {"prometheus": {"address": "prometheus:9090"}}},
        ["spec.analytics.prometheus.address", "should match"],
    ),
    (
        {"analytics": {"prometheus": {"address": "http://p", "queries": [NO_RANGE]}}},
        ["spec.analytics.prometheus.queries[0]", "a query needs min, max or both"],
    ),
    (
        {"analytics": {"prometheus": {"address": "http://p", "timeoutSeconds": 0}}},
        ["spec.analytics.prometheus.timeoutSeconds"],
    ),
]


@pytest.mark.parametrize(("change", "says"), BAD_SPECS, ids=lambda v: str(v)[:40])
def test_an_invalid_spec_is_refused_by_the_api_server_naming_the_field(
    crd: Cluster, change: dict[str, Any], says: list[str]
) -> None:
    ns = namespace(crd)
    body = yaml.safe_load((MANIFESTS / "examples/minimal.yaml").read_text())
    for key, value in change.items():
        if value is None:
            del body["spec"][key]
        else:
            body["spec"][key] = value
    refused = crd.plane.kubectl("apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump(body))
    assert refused.returncode != 0
    assert 'The AnalyticsPipeline "shop" is invalid' in refused.stderr
    for text in says:
        assert text in refused.stderr, refused.stderr


# -- RBAC ------------------------------------------------------------------------------


def test_the_operator_service_account_can_do_exactly_what_it_needs(crd: Cluster) -> None:
    home = namespace(crd)
    rbac = (MANIFESTS / "rbac/operator.yaml").read_text().replace("trackrelay-system", home)
    applied = crd.plane.kubectl("apply", "-f", "-", stdin=rbac)
    assert applied.returncode == 0, applied.stderr
    who = f"system:serviceaccount:{home}:trackrelay-operator"
    assert disallowed_answers(crd.plane.kubectl, who, namespace(crd)) == {}


# -- the operator ----------------------------------------------------------------------


@dataclass
class Rig:
    cluster: Cluster
    ns: str
    redis_url: str
    sim: str
    r: redis.Redis
    env: dict[str, str]
    logs: Path
    operator: subprocess.Popen[bytes] | None = None
    liveness: str = ""

    def pipeline(self) -> dict[str, Any]:
        obj: Any = self.cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, "shop"
        )
        return dict(obj)

    def status(self) -> dict[str, Any]:
        return dict(self.pipeline().get("status") or {})

    def live(self) -> dict[str, str]:
        try:
            return dict(
                self.cluster.core.read_namespaced_config_map("shop-live", self.ns).data or {}
            )
        except client.exceptions.ApiException:
            return {}

    def replicas(self) -> int:
        dep: Any = self.cluster.apps.read_namespaced_deployment("forwarders", self.ns)
        return int(dep.spec.replicas)

    def events(self) -> list[str]:
        items = self.cluster.core.list_namespaced_event(self.ns).items
        return [f"{e.reason}: {e.message}" for e in items if e.involved_object.name == "shop"]

    def fault(self, body: dict[str, Any]) -> None:
        import urllib.request

        req = urllib.request.Request(
            f"{self.sim}/admin/fault", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=5):
            pass

    def accepted(self) -> int:
        import urllib.request

        with urllib.request.urlopen(f"{self.sim}/admin/state", timeout=5) as r:
            return int(json.loads(r.read())["accepted"])

    def publish(self, n: int, start: int = 0) -> None:
        pipe = self.r.pipeline(transaction=False)
        for i in range(start, start + n):
            ev = Event(f"e-{i}", f"o-{i}", f"sku-{i % 40}", 1, 1.0, "2026-11-29T00:00:00.000Z")
            pipe.xadd(STREAM, {EVENT_FIELD: ev.to_json()})
        pipe.execute()

    def start_operator(self) -> None:
        self.liveness = f"http://127.0.0.1:{free_port()}/healthz"
        self.operator = spawn_role(
            ["operator", "-n", self.ns, "--liveness", self.liveness, *LOCAL],
            self.env,
            self.logs / "operator.log",
        )


def create_forwarders(cluster: Cluster, ns: str) -> None:
    """A one-replica Deployment named ``forwarders`` (no kubelet here: its pods never run)."""
    cluster.apps.create_namespaced_deployment(ns, deployment("forwarders", 1, "trackrelay:test"))


@pytest.fixture
def rig(crd: Cluster, tmp_path: Path) -> Iterator[Rig]:
    ns = namespace(crd)
    server = EmbeddedRedis(tmp_path / "redis").start()
    sim_port = free_port()
    sim = f"http://127.0.0.1:{sim_port}"
    env = {**crd.plane.env(), "KUBECONFIG": str(crd.plane.kubeconfig)}
    children = [spawn_role(["analytics-sim", "--port", str(sim_port)], {}, tmp_path / "sim.log")]
    r = redis.Redis.from_url(server.url)
    rig = Rig(crd, ns, server.url, sim, r, env, tmp_path)
    try:
        wait_http(f"{sim}/healthz", 30, children[0])
        secret = client.V1Secret(
            metadata=client.V1ObjectMeta(name="queue"),
            data={"url": base64.b64encode(server.url.encode()).decode()},
        )
        crd.core.create_namespaced_secret(ns, secret)
        create_forwarders(crd, ns)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "AnalyticsPipeline",
            "metadata": {"name": "shop"},
            "spec": {
                "forwarders": {"deployment": "forwarders"},
                "configMap": "shop-live",
                "redis": {"secretRef": {"name": "queue"}},
                "analytics": {"latencyTargetSeconds": 0.5},
                "budget": {"min": 10, "max": 1000, "initial": 400},
                "replicas": {
                    "min": 1,
                    "max": 3,
                    "scaleUpWindowSeconds": 2,
                    "scaleDownWindowSeconds": 120,
                },
                "queue": {"quota": "1MiB"},
                "reconcileIntervalSeconds": 1,
            },
        }
        crd.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        rig.fault({"mode": "slow", "latency": 0.3})  # healthy (under 500 ms), one push at a time
        rig.start_operator()
        until(lambda: rig.live().get("budget"), 30, "the operator creates the ConfigMap")
        forwarder_env = {
            "TRACKRELAY_REDIS_URL": server.url,
            "TRACKRELAY_ANALYTICS_URL": sim,
            "TRACKRELAY_LIVE_CONFIGMAP": f"{ns}/shop-live",
            "TRACKRELAY_BATCH_SIZE": "10",
            "TRACKRELAY_CONCURRENCY": "1",
            "TRACKRELAY_BUDGET_TOLERANCE": "0.2",
            "KUBECONFIG": str(crd.plane.kubeconfig),
        }
        children.append(
            spawn_role(["forwarder", "--consumer-name", "fw-0"], forwarder_env, tmp_path / "fw.log")
        )
        yield rig
    finally:
        procs = [*children, *([rig.operator] if rig.operator else [])]
        stop_all(procs)
        r.close()
        server.stop()


def test_the_operator_steers_budget_replicas_and_shedding_and_fails_static(rig: Rig) -> None:
    # Backlog with a healthy (300 ms) analytics: the forwarders' replicas rise, never above
    # what the budget can use.
    rig.publish(1500)
    seen: list[tuple[int, int]] = []

    def risen() -> bool:
        # the scale first, the status after: the operator scales before it reports, so
        # a status read second is never older than the scale it is compared with
        replicas = rig.replicas()
        st = rig.status()
        if "usableReplicas" in st:
            seen.append((replicas, st["usableReplicas"]))
        return replicas > 1

    until(risen, 60, "replicas rise with backlog and healthy analytics")
    assert all(replicas <= usable for replicas, usable in seen), seen
    until(
        lambda: any(e.startswith("ReplicasChanged: replicas 1 -> ") for e in rig.events()),
        10,
        "an Event says why the replicas changed",
    )

    # Analytics overloaded (503 to every push): the ConfigMap's budget falls, once for the
    # episode, and status and Events say why. (A slow analytics that is not overloaded is
    # no reason to cut: tests/integration/test_control_scenarios.py.)
    before = float(rig.live()["budget"])
    rig.fault({"mode": "down"})
    until(lambda: float(rig.live()["budget"]) < before / 2, 60, "the budget falls")
    # The ConfigMap is written first, then the status, then the Events.
    until(lambda: rig.status().get("health") == "Unhealthy", 10, "the status says unhealthy")
    until(
        lambda: any(
            e.startswith("BudgetChanged: budget ") and "analytics overloaded" in e
            for e in rig.events()
        ),
        10,
        "an Event says why the budget fell",
    )
    st = rig.status()
    assert st["health"] == "Unhealthy"
    healthy = next(c for c in st["conditions"] if c["type"] == "AnalyticsHealthy")
    assert healthy["status"] == "False" and healthy["message"] == st["healthReason"]
    described = rig.cluster.plane.kubectl("describe", "analyticspipeline", "shop", "-n", rig.ns)
    assert "BudgetChanged" in described.stdout
    listed = rig.cluster.plane.kubectl("get", "analyticspipelines", "-n", rig.ns)
    assert "Unhealthy" in listed.stdout
    (rig.logs / "kubectl-get.txt").write_text(listed.stdout)  # docs/operator.md shows these
    (rig.logs / "kubectl-describe.txt").write_text(described.stdout)

    # The liveness endpoint answers while the watch sees events.
    with urllib.request.urlopen(rig.liveness, timeout=5) as r:
        probe = json.loads(r.read())
    assert probe["watch"]["pipelines"] == 1 and probe["watch"]["last_event_seconds"] < 10

    # Memory pressure: the queue passes 40 % of its quota and the policy switches.
    rig.publish(6000, start=10_000)
    until(
        lambda: (
            json.loads(rig.live().get("shedding", "{}")).get("policy") in ("aggregate", "evict")
        ),
        30,
        "the shedding policy switches under memory pressure",
    )

    def shedding_reported() -> bool:
        conditions = rig.status().get("conditions", [])
        return any(c["type"] == "Shedding" and c["status"] == "True" for c in conditions)

    # The ConfigMap is written first, the status right after it.
    until(shedding_reported, 10, "the status reports shedding")
    st = rig.status()
    assert st["queueBytes"] > 0.4 * st["queueQuota"]
    # The outbox against its limit, as a relay publishes it (its view, under a TTL).
    view = {"at": time.time(), "outbox_rows": 37, "outbox_quota": 4096}
    rig.r.set(RELAY_STATS_PREFIX + "relay-0", json.dumps(view), px=60_000)
    until(
        lambda: (rig.status().get("outboxRows"), rig.status().get("outboxQuota")) == (37, 4096),
        15,
        "the status shows the outbox against its limit",
    )

    # The operator dies: the forwarders keep going on the last configuration.
    assert rig.operator is not None
    rig.operator.send_signal(signal.SIGKILL)
    rig.operator.wait(10)
    last = rig.live()
    rig.fault({"mode": "healthy"})
    delivered = rig.accepted()
    until(lambda: rig.accepted() > delivered + 50, 30, "forwarders keep delivering")
    assert rig.live() == last  # nobody changed it

    def forwarder_budget() -> float:
        return float(json.loads(rig.r.get(FORWARDER_STATS_PREFIX + "fw-0") or "{}")["budget"])

    # The forwarder paces by the last budget the operator wrote (its next stats carry it).
    until(lambda: forwarder_budget() == float(last["budget"]), 10, "the last budget holds")
    time.sleep(2)
    assert forwarder_budget() == float(last["budget"])


def test_a_pipeline_deleted_after_the_operator_stopped_is_not_stuck(rig: Rig) -> None:
    """kopf holds every pipeline with a daemon by a finalizer; a SIGTERMed operator
    releases it, so `helm uninstall` (operator and pipeline deleted together) completes."""

    def finalizers() -> list[str]:
        return list(rig.pipeline()["metadata"].get("finalizers") or [])

    until(finalizers, 30, "kopf adds its finalizer while the daemon runs")
    assert rig.operator is not None
    rig.operator.send_signal(signal.SIGTERM)
    assert rig.operator.wait(30) == 0
    assert finalizers() == []
    assert "released" in (rig.logs / "operator.log").read_text()
    rig.cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, rig.ns, PLURAL, "shop")

    def gone() -> bool:
        try:
            rig.pipeline()
        except client.ApiException as exc:
            return bool(exc.status == 404)
        return False

    until(gone, 10, "the pipeline is deleted with no operator running")


def test_a_deployment_managed_by_an_hpa_is_left_alone(rig: Rig) -> None:
    hpa = client.V1HorizontalPodAutoscaler(
        metadata=client.V1ObjectMeta(name="forwarders-hpa"),
        spec=client.V1HorizontalPodAutoscalerSpec(
            scale_target_ref=client.V1CrossVersionObjectReference(
                api_version="apps/v1", kind="Deployment", name="forwarders"
            ),
            min_replicas=1,
            max_replicas=5,
        ),
    )
    rig.cluster.plane.kubectl("version")  # warm
    client.AutoscalingV1Api(rig.cluster.api).create_namespaced_horizontal_pod_autoscaler(
        rig.ns, hpa
    )
    rig.publish(3000)
    until(lambda: rig.status().get("hpa") == "forwarders-hpa", 30, "status names the HPA")
    # The controller wants more forwarders for this backlog, and does not get them.
    until(lambda: rig.status().get("desiredReplicas", 0) > 1, 30, "the controller wants more")
    time.sleep(3)
    assert rig.replicas() == 1 and rig.status()["replicas"] == 1
    ready = next(c for c in rig.status()["conditions"] if c["type"] == "Ready")
    assert "HorizontalPodAutoscaler forwarders-hpa" in ready["message"]
    assert os.path.exists(rig.logs / "operator.log")


def test_when_observations_fail_nothing_is_scaled_down_and_the_status_says_why(rig: Rig) -> None:
    # The operator itself scales to the most (3) on a backlog that outlasts the test, with a
    # one-second scale-down window: a controller that read missing data as "no backlog"
    # would scale down within the test. (A scale by hand would race the first decision.)
    window = {"spec": {"replicas": {"scaleDownWindowSeconds": 1}}}
    rig.cluster.custom.patch_namespaced_custom_object(
        GROUP, VERSION, rig.ns, PLURAL, "shop", window
    )
    rig.publish(10)  # pushes to judge analytics by: scaling up needs it healthy
    until(lambda: rig.status().get("health") == "Healthy", 30, "analytics judged healthy")
    rig.publish(6000, start=10)

    def scaled_up() -> bool:  # the scale first, the status after (the operator reports last)
        return rig.replicas() == 3 and rig.status().get("replicas") == 3

    until(scaled_up, 60, "the operator scales the forwarders to 3 on the backlog")
    # Redis goes away: nothing can be observed.
    rig.r.shutdown(nosave=True)

    def holding() -> bool:
        conditions = rig.status().get("conditions", [])
        ready: dict[str, Any] = next((c for c in conditions if c["type"] == "Ready"), {})
        return ready.get("reason") == "Holding"

    until(holding, 30, "the status says the operator holds")
    st = rig.status()
    degraded = next(c for c in st["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and "cannot observe" in degraded["message"]
    until(
        lambda: any(
            e.startswith("Holding: holding the last decision: cannot observe") for e in rig.events()
        ),
        10,
        "a Warning Event says the operator holds",
    )
    time.sleep(3)
    assert rig.replicas() == 3  # no scale-down on missing data


def test_a_url_off_the_allowed_hosts_is_refused_in_the_status_and_never_requested(
    rig: Rig,
) -> None:
    until(lambda: rig.status().get("budget"), 30, "a first decision")
    # A listener the spec points at: the operator must never connect to it.
    trap = socket.socket()
    trap.bind(("127.0.0.2", 0))
    trap.listen(8)
    trap.settimeout(0.2)
    port = trap.getsockname()[1]
    change = {"spec": {"analytics": {"healthURL": f"http://127.0.0.2:{port}/healthz"}}}
    rig.cluster.custom.patch_namespaced_custom_object(
        GROUP, VERSION, rig.ns, PLURAL, "shop", change
    )
    try:

        def refused() -> dict[str, Any]:
            conditions = rig.status().get("conditions", [])
            found: dict[str, Any] = next((c for c in conditions if c["type"] == "Degraded"), {})
            return found if found.get("reason") == "DestinationRefused" else {}

        degraded = until(refused, 30, "the status says the URL is refused")
        assert degraded["status"] == "True"
        assert "spec.analytics.healthURL: host '127.0.0.2'" in degraded["message"]
        until(
            lambda: any(
                e.startswith("DestinationRefused: spec.analytics.healthURL") for e in rig.events()
            ),
            10,
            "a Warning Event says so",
        )
        time.sleep(3)  # ticks that would have probed it
        try:
            conn, _ = trap.accept()
            conn.close()
            raise AssertionError("the operator connected to a host it may not reach")
        except TimeoutError:
            pass
    finally:
        trap.close()
    # Back to an allowed URL: steering again.
    back = {"spec": {"analytics": {"healthURL": f"{rig.sim}/healthz"}}}
    rig.cluster.custom.patch_namespaced_custom_object(GROUP, VERSION, rig.ns, PLURAL, "shop", back)

    def ready() -> bool:
        conditions = rig.status().get("conditions", [])
        found: dict[str, Any] = next((c for c in conditions if c["type"] == "Ready"), {})
        return found.get("status") == "True"

    until(ready, 30, "steering again once the URL is allowed")


def test_two_operators_with_peering_do_not_fight(crd: Cluster, tmp_path: Path) -> None:
    ns = namespace(crd)
    peering = {
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfPeering",
        "metadata": {"name": "trackrelay"},
    }
    crd.custom.create_namespaced_custom_object("kopf.dev", "v1", ns, "kopfpeerings", peering)
    env = {**crd.plane.env(), "KUBECONFIG": str(crd.plane.kubeconfig)}

    def start(priority: int) -> subprocess.Popen[bytes]:
        args = ["--log-level", "DEBUG", "operator", "-n", ns, "--peering", "trackrelay"]
        args += ["--priority", str(priority), *LOCAL]
        return spawn_role(args, env, tmp_path / f"operator-{priority}.log")

    def log(priority: int) -> str:
        return (tmp_path / f"operator-{priority}.log").read_text()

    def announced() -> bool:
        obj: Any = crd.custom.get_namespaced_custom_object(
            "kopf.dev", "v1", ns, "kopfpeerings", "trackrelay"
        )
        return bool(obj.get("status"))

    # The first replica takes the lead; a second one joining with a lower priority stands by.
    procs = [start(20)]
    try:
        until(
            announced,
            30,
            "the first operator announces itself in the peering object",
        )
        until(lambda: "Resuming operations" in log(20), 30, "the first operator acts")
        procs.append(start(10))
        until(lambda: "Starting the watch-stream for kopfpeerings" in log(10), 30, "joined")
        # A pipeline appears: only the leader handles it; the other stays paused (kopf
        # starts every operator paused and resumes it only when no peer outranks it).
        body = yaml.safe_load((MANIFESTS / "examples/minimal.yaml").read_text())
        crd.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        until(lambda: "Handler 'validate' succeeded" in log(20), 30, "the leader handles it")
        time.sleep(3)
        assert "Handler 'validate'" not in log(10)
        assert "Resuming operations" not in log(10)
    finally:
        stop_all(procs)


def test_the_live_configmap_is_followed_through_the_api_and_kept_when_broken(
    crd: Cluster,
) -> None:
    from trackrelay.config.configmap import ConfigMapWatch
    from trackrelay.config.live import ConfigMapLive
    from trackrelay.control.shedding import Policy

    ns = namespace(crd)
    cm = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="live"),
        data={"budget": "400", "shedding": '{"policy": "none", "p": 1}'},
    )
    crd.core.create_namespaced_config_map(ns, cm)
    watch = ConfigMapWatch(f"{ns}/live", api=crd.core)
    live = ConfigMapLive(f"{ns}/live", watch=watch).start()
    try:
        until(lambda: live.budget() == 400, 10, "the first read")
        patch = {"data": {"budget": "150", "shedding": '{"policy": "sample", "p": 0.5}'}}
        started = time.monotonic()
        crd.core.patch_namespaced_config_map("live", ns, patch)
        until(lambda: live.budget() == 150, 30, "the change arrives", every=0.05)
        # a watch, not the kubelet's volume refresh (a minute or more): far under it
        assert time.monotonic() - started < 15
        shedding = live.shedding()
        assert shedding is not None and shedding.policy is Policy.SAMPLE and shedding.p == 0.5
        # Garbage in the ConfigMap: ignored, the last good values stay.
        crd.core.patch_namespaced_config_map(
            "live", ns, {"data": {"budget": "fast", "shedding": '{"policy": "shred"}'}}
        )
        until(lambda: (live.watch.data or {}).get("budget") == "fast", 30, "the bad change")
        assert live.budget() == 150 and live.shedding() == shedding
        # Deleted: fail static.
        crd.core.delete_namespaced_config_map("live", ns)
        time.sleep(1)
        assert live.budget() == 150
    finally:
        live.watch.stop()


@pytest.mark.needs("prometheus")
def test_analytics_health_from_a_real_prometheus_shows_in_status_and_events(rig: Rig) -> None:
    """The pipeline names a Prometheus that scrapes the simulator: the status says what its
    queries say and which one decided, an Event tells each change; a spec the operator refuses
    is a Degraded condition naming the field; a query Prometheus refuses reads unknown."""
    target = rig.sim.removeprefix("http://")
    with PrometheusServer(rig.logs / "prometheus", [target], interval=0.5) as prom:
        prom.wait_up()
        patch: dict[str, Any] = {"spec": {"analytics": {"prometheus": {"address": prom.url}}}}
        rig.cluster.custom.patch_namespaced_custom_object(
            GROUP, VERSION, rig.ns, PLURAL, "shop", patch
        )

        def metrics() -> dict[str, Any]:
            return dict(rig.status().get("analyticsHealth") or {})

        until(lambda: metrics().get("state") == "healthy", 60, "analyticsHealth healthy")
        assert "analytics_p99 " in metrics()["why"] and metrics().get("query") is None
        wide = rig.cluster.plane.kubectl("get", "analyticspipelines", "-n", rig.ns, "-o", "wide")
        assert wide.stdout.splitlines()[0].split()[-2:] == ["METRICS", "AGE"]
        assert "healthy" in wide.stdout.splitlines()[1].split()

        rig.fault({"mode": "slow", "latency": 1.5})
        with Traffic(rig.sim):
            until(
                lambda: (
                    metrics().get("state") == "unhealthy"
                    and metrics().get("query") == "analytics_p99"
                ),
                90,
                "analyticsHealth unhealthy, decided by the p99 query",
            )
        assert "outside [0, 0.5]" in metrics()["why"]
        until(
            lambda: any(
                e.startswith("AnalyticsHealth: analytics' metrics say unhealthy: analytics_p99 ")
                for e in rig.events()
            ),
            10,
            "an Event names the query that decided",
        )

        # Two queries of one name: the API server admits it, the operator refuses it.
        twice = [{"name": "p99", "query": "vector(0)", "max": 1}] * 2
        patch = {"spec": {"analytics": {"prometheus": {"queries": twice}}}}
        rig.cluster.custom.patch_namespaced_custom_object(
            GROUP, VERSION, rig.ns, PLURAL, "shop", patch
        )

        def condition(kind: str) -> dict[str, Any]:
            conditions = rig.status().get("conditions") or []
            return dict(next((c for c in conditions if c["type"] == kind), {}))

        until(lambda: condition("Degraded").get("reason") == "InvalidSpec", 30, "InvalidSpec")
        message = "spec.analytics.prometheus.queries[1].name: 'p99' is named twice"
        assert message in condition("Degraded")["message"]
        assert condition("Ready")["status"] == "False"
        until(
            lambda: any(e == f"InvalidSpec: {message}" for e in rig.events()),
            10,
            "a Warning Event names the field",
        )

        # A query Prometheus cannot parse: unknown, with Prometheus' own words.
        typo = [{"name": "typo", "query": "sum(rate(analytics_sim_requests_total[1m]", "max": 1}]
        patch = {"spec": {"analytics": {"prometheus": {"queries": typo}}}}
        rig.cluster.custom.patch_namespaced_custom_object(
            GROUP, VERSION, rig.ns, PLURAL, "shop", patch
        )
        until(lambda: metrics().get("state") == "unknown", 30, "analyticsHealth unknown")
        assert metrics()["query"] == "typo"
        assert "typo: Prometheus answered 400: bad_data:" in metrics()["why"]
        assert condition("Ready")["status"] == "True"

        # Prometheus gone: unknown, never healthy.
        patch = {"spec": {"analytics": {"prometheus": {"queries": None}}}}
        rig.cluster.custom.patch_namespaced_custom_object(
            GROUP, VERSION, rig.ns, PLURAL, "shop", patch
        )
        until(lambda: "typo" not in metrics().get("why", "typo"), 30, "the default queries again")
        prom.stop()
        until(
            lambda: "Prometheus unreachable" in metrics().get("why", ""),
            30,
            "analyticsHealth says Prometheus is unreachable",
        )
        assert metrics()["state"] == "unknown"


IDLE_PIPELINES = 50
WRITES = ("configmaps", "analyticspipelines", "horizontalpodautoscalers", "deployments", "events")


def _api_requests(crd: Cluster) -> int:
    """Requests the API server has served for the resources the operator touches (its own
    ``apiserver_request_total``, every verb but WATCH)."""
    text = crd.plane.kubectl("get", "--raw", "/metrics").stdout
    total = 0
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(
            (k, v.strip('"'))
            for k, v in (
                part.split("=", 1)
                for part in line[line.index("{") + 1 : line.index("}")].split(",")
            )
        )
        if labels.get("resource") in WRITES and labels.get("verb") != "WATCH":
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def test_idle_pipelines_cost_the_api_server_almost_nothing(crd: Cluster, tmp_path: Path) -> None:
    """50 pipelines with nothing to do, one operator: after their first decisions, the
    operator writes nothing and reads next to nothing (target: at most 2 requests per
    pipeline per minute; the count is the API server's own)."""
    ns = namespace(crd)
    server = EmbeddedRedis(tmp_path / "redis").start()
    env = {**crd.plane.env(), "KUBECONFIG": str(crd.plane.kubeconfig)}
    operator = None
    try:
        secret = client.V1Secret(
            metadata=client.V1ObjectMeta(name="queue"),
            data={"url": base64.b64encode(server.url.encode()).decode()},
        )
        crd.core.create_namespaced_secret(ns, secret)
        create_forwarders(crd, ns)
        for n in range(IDLE_PIPELINES):
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "AnalyticsPipeline",
                "metadata": {"name": f"idle-{n}"},
                "spec": {
                    "forwarders": {"deployment": "forwarders"},
                    "configMap": f"idle-{n}-live",
                    "redis": {"secretRef": {"name": "queue"}},
                    "replicas": {"min": 1, "max": 1},
                },
            }
            crd.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        operator = spawn_role(
            ["operator", "-n", ns, "--liveness", liveness, *LOCAL], env, tmp_path / "operator.log"
        )

        def decided() -> int:
            listed: Any = crd.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
            return sum(1 for item in listed["items"] if (item.get("status") or {}).get("budget"))

        until(lambda: decided() == IDLE_PIPELINES, 120, "every pipeline's first decision")
        time.sleep(10)  # first decisions settle (the first few ticks may still differ)
        before, started = _api_requests(crd), time.monotonic()
        time.sleep(60)
        after, minutes = _api_requests(crd), (time.monotonic() - started) / 60
        assert operator.poll() is None, (tmp_path / "operator.log").read_text()[-2000:]
        # A minute with no write, so no watch event: the operator is alive all the same.
        with urllib.request.urlopen(liveness, timeout=5) as r:
            assert r.status == 200
    finally:
        stop_all([operator] if operator else [])
        server.stop()
    per_pipeline = (after - before) / IDLE_PIPELINES / minutes
    print(
        f"idle: {after - before} API requests in {minutes:.2f} min, {per_pipeline:.2f} a pipeline"
    )
    assert per_pipeline <= 2.0


async def test_repeated_and_similar_events_are_aggregated_in_the_api_server(crd: Cluster) -> None:
    """Against the real API server: a repeat bumps the Event's count, and similar Events
    past ten distinct messages share one combined Event."""
    from trackrelay_operator.correlation import COMBINED, SIMILAR_MAX
    from trackrelay_operator.kube import Kube
    from trackrelay_operator.reporting import Reporter

    ns = namespace(crd)
    body = yaml.safe_load((MANIFESTS / "examples/minimal.yaml").read_text())
    made: Any = crd.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
    reporter = Reporter(Kube(crd.api), made)
    for _ in range(3):  # the same words three times: one Event, counted 3
        await reporter.tell("BudgetChanged", "budget 100 -> 200", "Normal")
    for n in range(SIMILAR_MAX + 2):  # twelve other words: nine Events, then one combined
        await reporter.tell("ReplicasChanged", f"replicas {n} -> {n + 1}", "Normal")
    listed = crd.core.list_namespaced_event(ns).items
    by_reason: dict[str, list[Any]] = {}
    for e in listed:
        by_reason.setdefault(str(e.reason), []).append(e)
    assert [(e.message, e.count) for e in by_reason["BudgetChanged"]] == [("budget 100 -> 200", 3)]
    replicas = by_reason["ReplicasChanged"]
    assert len(replicas) == SIMILAR_MAX
    combined = [e for e in replicas if e.message.startswith(COMBINED)]
    assert [(e.message, e.count) for e in combined] == [(COMBINED + "replicas 11 -> 12", 3)]
    assert all(e.count == 1 for e in replicas if e not in combined)
    stamps = [(e.first_timestamp, e.last_timestamp) for e in listed]
    assert all(first is not None and last is not None and last >= first for first, last in stamps)
