"""``helm install`` of the whole bundle in the kind cluster, with images built here.

The chart runs as a user would run it: PostgreSQL, Redis, the order service, the
forwarders, the simulator as analytics and the operator (tests/e2e/bundle.py).
"""

from __future__ import annotations

import base64
import calendar
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.bundle import Release, installed, merged
from tests.support.certs import server_tls
from tests.support.kind import KindCluster, wait_for
from trackrelay.control.controller import Spec

RELEASE = "shop"
FULLNAME = "shop-trackrelay"
QUOTA_MIB = 1
INITIAL_BUDGET = 400
BUDGET_MIN = 10


@pytest.fixture(scope="module")
def release(
    kind_cluster: KindCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    values = {
        "redis": {"appendfsync": "always"},
        "simulator": {"enabled": True, "rate": 400, "admin": True},
        "queue": {"quotaMiB": QUOTA_MIB},
        "orders": {"replicas": 1},
        # small batches: the quota's room for pending entries stays well under 1 MiB
        "forwarder": {"pushLatencyLimit": 0.5, "batchSize": 50, "concurrency": 2},
        "pipeline": {
            "budget": {"min": BUDGET_MIN, "max": 5000, "initial": INITIAL_BUDGET},
            "replicas": {"min": 1, "max": 2},
            "reconcileIntervalSeconds": 1,
            "latencyTargetSeconds": 0.5,
        },
    }
    with installed(
        kind_cluster,
        tmp_path_factory,
        RELEASE,
        "shop",
        merged(values, TLS_VALUES),
        before=lambda ns: store_certificates(kind_cluster, ns),
    ) as rel:
        yield rel


# both stores speak TLS alone, with certificates made here (cert-manager-style Secrets)
TLS_SECRETS = {"postgresql": f"{FULLNAME}-postgresql-tls", "redis": f"{FULLNAME}-redis-tls"}
TLS_VALUES = {store: {"tls": {"secretName": name}} for store, name in TLS_SECRETS.items()}


def store_certificates(cluster: KindCluster, ns: str) -> None:
    """A CA and a server certificate for each store's Service, in the Secrets TLS_VALUES name."""
    for store, name in TLS_SECRETS.items():
        service = f"{FULLNAME}-{store}"
        certs = server_tls([f"{service}.{ns}.svc", f"{service}.{ns}.svc.cluster.local"])
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": ns},
            "stringData": certs.secret_data(),
        }
        cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(secret))


def test_every_pod_becomes_ready_and_helm_test_passes(release: Release) -> None:
    for component in ("orders", "forwarder", "postgresql", "redis", "simulator", "operator"):
        assert release.ready_pods(component), component  # helm install --wait saw to it
    # the operator has written the live configuration the forwarders follow
    wait_for("the operator's first ConfigMap write", lambda: "budget" in release.live())
    tested = release.helm("test", RELEASE, "-n", release.ns, "--logs", timeout=300)
    assert "Phase:          Succeeded" in tested.stdout, tested.stdout
    assert "created and read back" in tested.stdout
    # the migration hook ran before the services needed it
    status = release.helm("status", RELEASE, "-n", release.ns).stdout
    assert "STATUS: deployed" in status
    # the operators steer with a Role in their namespace alone: no request was refused
    operators = release.ready_pods("operator")
    assert len(operators) == 2  # one steers, one stands by (kopf peering)
    for pod in operators:
        logs = operator_log(release, pod)
        refused = [
            line for line in logs.splitlines() if re.search(r"forbidden|permission", line, re.I)
        ]
        assert not refused, refused[:10]


def test_the_stores_speak_only_verified_tls(release: Release) -> None:
    """With both stores' tls.secretName: every session the services hold with PostgreSQL
    is encrypted, Redis has no plain-text port, and the URLs verify the server's name."""
    wait_for("the operator's first ConfigMap write", lambda: "budget" in release.live())
    pg = f"{FULLNAME}-postgresql-0"
    sessions = release.cluster.kubectl(
        "exec",
        "-n",
        release.ns,
        pg,
        "-c",
        "postgresql",
        "--",
        "psql",
        "-h",
        "/tmp",
        "-U",
        "trackrelay",
        "-d",
        "trackrelay",
        "-At",
        "-F",
        " ",
        "-c",
        "SELECT s.ssl, a.application_name FROM pg_stat_ssl s JOIN pg_stat_activity a"
        " USING (pid) WHERE a.usename = 'trackrelay' AND a.pid <> pg_backend_pid()"
        " AND a.client_addr IS NOT NULL",
    ).stdout.split("\n")
    sessions = [line for line in sessions if line.strip()]
    assert sessions, "no service session with PostgreSQL"
    assert all(line.startswith("t") for line in sessions), sessions

    def redis_cli(*flags: str) -> tuple[int, str]:  # as the administrator (its password file)
        cli = f"redis-cli {' '.join(flags)} -p 6379 ping"
        auth = 'REDISCLI_AUTH="$(cat /etc/trackrelay-redis-secrets/password)"'
        done = release.cluster.kubectl(
            "exec",
            "-n",
            release.ns,
            f"{FULLNAME}-redis-0",
            "-c",
            "redis",
            "--",
            "sh",
            "-c",
            f"{auth} {cli}",
            check=False,
        )
        return done.returncode, done.stdout + done.stderr

    assert redis_cli("--tls", "--cacert", "/etc/trackrelay-redis-tls/ca.crt") == (0, "PONG\n")
    # plain text: the TLS port drops the connection (redis-cli says so and exits 1)
    code, said = redis_cli()
    assert code != 0 and "PONG" not in said and "Connection reset" in said, (code, said)
    urls = release.cluster.get("secret", f"{FULLNAME}-redis", "-n", release.ns)["data"]
    forwarder_url = base64.b64decode(urls["forwarder-url"]).decode()
    assert forwarder_url.startswith("rediss://") and "ssl_ca_certs=" in forwarder_url
    database = release.cluster.get("secret", f"{FULLNAME}-database", "-n", release.ns)["data"]
    assert "sslmode=verify-full" in base64.b64decode(database["url"]).decode()


# a TCP connection from inside a pod: "open", or "closed <why>" when none was made in time
CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("open")
except OSError as exc:
    print("closed", type(exc).__name__)
"""


def connects(release: Release, pod: str, service: str, port: int, timeout: float) -> bool:
    done = release.cluster.kubectl(
        "exec",
        "-n",
        release.ns,
        pod,
        "--",
        "python3",
        "-c",
        CONNECT,
        service,
        str(port),
        str(timeout),
        timeout=timeout + 60,
    )
    return done.stdout.split()[0] == "open"


def test_network_policies_let_each_role_reach_only_what_it_needs(release: Release) -> None:
    """The chart's NetworkPolicies, enforced by the cluster's engine (kube-network-policies):
    a pod that is not the release's reaches the order API and neither store; the order
    service reaches both stores but not analytics, which only the forwarders reach."""
    policies = release.cluster.get("networkpolicy", "-n", release.ns)["items"]
    names = {p["metadata"]["name"] for p in policies}
    assert f"{FULLNAME}-default-deny" in names, names
    redis, postgresql = (f"{FULLNAME}-redis", 6379), (f"{FULLNAME}-postgresql", 5432)
    simulator, orders = (f"{FULLNAME}-simulator", 8100), (f"{FULLNAME}-orders", 80)
    (orders_pod, *_), (forwarder_pod, *_) = (
        release.ready_pods("orders"),
        release.ready_pods("forwarder"),
    )
    # allowed paths connect: what each role needs (a dropped SYN would wait out the timeout)
    allowed = [
        (release.client_pod, orders),
        (orders_pod, redis),
        (orders_pod, postgresql),
        (forwarder_pod, redis),
        (forwarder_pod, simulator),
    ]
    for pod, (service, port) in allowed:
        assert connects(release, pod, service, port, timeout=20), f"{pod} -> {service}:{port}"
    # refused paths: nothing answers in 3 s (the engine drops the first packet; an allowed
    # path above connected to the same Service)
    refused = [
        (release.client_pod, redis),
        (release.client_pod, postgresql),
        (orders_pod, simulator),
        (forwarder_pod, postgresql),
    ]
    for pod, (service, port) in refused:
        assert not connects(release, pod, service, port, timeout=3), f"{pod} -> {service}:{port}"


PAUSED = "Pausing operations in favour of"
PAUSED_ALL = "Pausing all operators, including self"  # two equal priorities
RESUMED = "Resuming operations after the pause"


def steers(log: str) -> bool:
    """The operator whose log this is has resumed since it last paused (kopf peering)."""
    return log.rfind(RESUMED) > max(log.rfind(PAUSED), log.rfind(PAUSED_ALL))


def operator_log(release: Release, pod: str) -> str:
    done = release.cluster.kubectl("logs", "-n", release.ns, pod, "--tail=-1", check=False)
    return done.stdout


PROMETHEUS_MANIFEST = Path(__file__).parent / "prometheus.yaml"
# the simulator's default queries (control/analytics_health.py) with 10 s windows, not
# 1 min: the Prometheus here scrapes every second, so each change of state shows in seconds
WINDOW = "10s"
PROM_ORDERS = 100  # two lines each, one every 0.1 s: pushes go on while analytics is slow
METRICS_QUERIES = [
    {
        "name": "analytics_p99",
        "query": "(histogram_quantile(0.99, sum by (le)"
        f" (rate(analytics_sim_request_duration_seconds_bucket[{WINDOW}]))) >= 0)"
        f" or (sum(rate(analytics_sim_request_duration_seconds_count[{WINDOW}])) == 0)",
        "min": 0,
        "max": 0.5,
    },
    {
        "name": "analytics_error_share",
        "query": f'(sum(rate(analytics_sim_requests_total{{status=~"429|5.."}}[{WINDOW}]))'
        f" or vector(0)) / clamp_min(sum(rate(analytics_sim_requests_total[{WINDOW}])), 1e-9)",
        "min": 0,
        "max": 0.05,
    },
]


@pytest.fixture(scope="module")
def prometheus(release: Release) -> Iterator[str]:
    """tests/e2e/prometheus.yaml in the release's namespace, Ready: its address."""
    docs = list(yaml.safe_load_all(PROMETHEUS_MANIFEST.read_text()))
    for doc in docs:
        if doc["kind"] == "Deployment":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            container["image"] = release.cluster.env["E2E_PROMETHEUS_IMAGE"]
    cluster, ns = release.cluster, release.ns
    cluster.kubectl("apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump_all(docs))
    try:
        rolled = cluster.kubectl(
            "rollout", "status", "-n", ns, "deployment/prometheus", "--timeout=120s", check=False
        )
        assert rolled.returncode == 0, rolled.stderr + release.diagnose()
        yield f"http://prometheus.{ns}.svc:9090"
    finally:
        cluster.kubectl("delete", "-n", ns, "-f", str(PROMETHEUS_MANIFEST), check=False)


def test_the_operator_reads_analytics_health_from_prometheus_in_the_cluster(
    release: Release, prometheus: str
) -> None:
    def health() -> dict[str, Any]:
        found: dict[str, Any] = release.pipeline().get("status", {}).get("analyticsHealth") or {}
        return found

    def wait_health(state: str) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def reached() -> dict[str, Any] | None:
            nonlocal last
            last = health()
            return last if last.get("state") == state else None

        try:
            found: dict[str, Any] = wait_for(f"analyticsHealth {state}", reached, timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; analyticsHealth {last}; targets {targets()}") from None
        return found

    def targets() -> str:  # what Prometheus scrapes, for a failure's message
        try:
            found = release.client("get", url=prometheus + "/api/v1/targets?state=active")
        except AssertionError as exc:
            return str(exc)
        return json.dumps([(t["scrapeUrl"], t["health"]) for t in found["data"]["activeTargets"]])

    fault = release.sim_url + "/admin/fault"
    release.client("post", url=fault, body={"mode": "healthy"})
    spec = {"address": prometheus, "queries": METRICS_QUERIES, "timeoutSeconds": 2}
    patch = {"spec": {"analytics": {"prometheus": spec}}}
    release.cluster.kubectl(
        "patch",
        "analyticspipeline",
        FULLNAME,
        "-n",
        release.ns,
        "--type=merge",
        "-p",
        json.dumps(patch),
    )
    sender: subprocess.Popen[str] | None = None
    started = time.monotonic()
    took = []
    try:
        # healthy: every query read a number from the simulator's scraped metrics, in range
        healthy = wait_health("healthy")
        took.append(f"healthy after {time.monotonic() - started:.0f}s")
        assert "analytics_p99" in healthy["why"] and "within" in healthy["why"], healthy

        # analytics slowed to 1 s a push while orders flow: p99 leaves its range and the
        # status names the query that decided
        lines = release.sim_state()["lines"] + PROM_ORDERS * 2
        sender = release.send_orders(count=PROM_ORDERS, lines=2, skus=40, tag="prom", every=0.1)
        release.client("post", url=fault, body={"mode": "slow", "latency": 1.0})
        slowed = time.monotonic()
        unhealthy = wait_health("unhealthy")
        took.append(f"unhealthy {time.monotonic() - slowed:.0f}s after the slowing")
        assert unhealthy["query"] == "analytics_p99", unhealthy
        assert unhealthy["why"].startswith("analytics_p99 ") and "outside" in unhealthy["why"]

        def warned() -> list[tuple[str, str]]:  # the Event follows the status in its tick
            events = release.cluster.get(
                "events",
                "-n",
                release.ns,
                "--field-selector",
                f"involvedObject.kind=AnalyticsPipeline,involvedObject.name={FULLNAME},"
                "reason=AnalyticsHealth",
            )["items"]
            said = [(e["type"], e["message"]) for e in events]
            return said if any(t == "Warning" and "analytics_p99" in m for t, m in said) else []

        wait_for("a Warning Event naming analytics_p99", warned, timeout=30)
        # the CRD's Metrics column (kubectl get -o wide): columns are aligned with their heads
        head, row = release.cluster.kubectl(
            "get", "analyticspipeline", FULLNAME, "-n", release.ns, "-o", "wide"
        ).stdout.splitlines()[:2]
        assert row[head.index("METRICS") :].split()[0] == "unhealthy", (head, row)

        # the orders all made and delivered, once: the tests after this one count lines
        release.client("post", url=fault, body={"mode": "healthy"})
        out, err = sender.communicate(timeout=300)
        assert sender.returncode == 0, err
        assert len(json.loads(out)["created"]) == PROM_ORDERS
        counted = wait_for(
            "analytics to count every line",
            lambda: (n := release.sim_state()["lines"]) >= lines and n,
            timeout=240,
            every=2,
        )
        assert counted == lines

        # Prometheus gone: unknown, never healthy
        release.cluster.kubectl("scale", "-n", release.ns, "deployment/prometheus", "--replicas=0")
        gone = time.monotonic()
        unknown = wait_health("unknown")
        took.append(f"unknown {time.monotonic() - gone:.0f}s after Prometheus' scale-down")
        print("\nanalyticsHealth: " + ", ".join(took))
        assert "Prometheus" in unknown["why"], unknown
    finally:
        release.client("post", url=fault, body={"mode": "healthy"})
        if sender is not None and sender.poll() is None:
            sender.kill()
            sender.communicate(timeout=30)
        # the pipeline as the chart made it, for the tests after this one
        unset = {"spec": {"analytics": {"prometheus": None}}}
        release.cluster.kubectl(
            "patch",
            "analyticspipeline",
            FULLNAME,
            "-n",
            release.ns,
            "--type=merge",
            "-p",
            json.dumps(unset),
        )


def test_orders_reach_analytics_exactly_once_though_a_forwarder_dies_mid_batch(
    release: Release,
) -> None:
    before = release.sim_state()
    # slow pushes keep batches in flight while the forwarder pod is deleted
    release.client(
        "post", url=release.sim_url + "/admin/fault", body={"mode": "slow", "latency": 0.3}
    )
    sender = release.send_orders(count=150, lines=4, skus=40, tag="kill", every=0.05)
    try:
        time.sleep(6)
        victims = release.ready_pods("forwarder")
        assert victims
        release.cluster.kubectl(
            "delete", "pod", "-n", release.ns, victims[0], "--grace-period=0", "--force"
        )
        out, err = sender.communicate(timeout=300)
    finally:
        if sender.poll() is None:
            sender.kill()
    assert sender.returncode == 0, err
    made = json.loads(out)
    assert len(made["created"]) == 150 and made["read"] == made["created"]
    release.client("post", url=release.sim_url + "/admin/fault", body={"mode": "healthy"})
    expected_lines = before["lines"] + 150 * 4

    def delivered() -> dict[str, Any] | None:
        state = release.sim_state()
        return state if state["lines"] >= expected_lines else None

    state = wait_for("analytics to count every line", delivered, timeout=240, every=2)
    assert state["lines"] == expected_lines  # none lost, none counted twice
    assert wait_for("a replacement forwarder", lambda: release.ready_pods("forwarder"))


OVERLOAD_CUT = re.compile(
    r"budget (\d+) -> (\d+) ev/s: analytics overloaded .*; (\d+) ev/s delivered"
)


def budget_events(release: Release) -> list[dict[str, Any]]:
    """The pipeline's BudgetChanged Events."""
    selector = f"involvedObject.kind=AnalyticsPipeline,involvedObject.name={FULLNAME}"
    got = release.cluster.get(
        "events", "-n", release.ns, "--field-selector", selector + ",reason=BudgetChanged"
    )
    items: list[dict[str, Any]] = got["items"]
    return items


def told(event: dict[str, Any]) -> tuple[str, int]:
    """One telling of an Event: its uid and how many times it has been said."""
    return event["metadata"]["uid"], int(event.get("count") or 1)


def test_overloaded_analytics_lowers_the_budget_and_the_pipeline_says_why(
    release: Release,
) -> None:
    # overloaded: 503 to every push (a slow analytics that is not overloaded is no reason
    # to cut: tests/integration/test_control_scenarios.py)
    # Healthy orders first: the budget comes back to the rate analytics last took well
    # (the test before may leave it near its floor of 10), so that a cut has room to show.
    release.client(
        "orders", count=100, lines=2, skus=40, tag="warm", orders=release.orders_url, timeout=300
    )
    start = wait_for(
        "a budget with room to fall",
        lambda: (b := float(release.live()["budget"])) >= 30 and b,
        timeout=60,
    )
    # a new Event, or a bump of one (past ten messages they share one: correlation.py)
    earlier = {told(e) for e in budget_events(release)}
    release.client("post", url=release.sim_url + "/admin/fault", body={"mode": "down"})
    sender = release.send_orders(count=300, lines=2, skus=40, tag="overload", every=0.1)
    try:
        # The law (control/budget.py): one cut per overload episode, to ``decrease`` of
        # the rate analytics delivered in the tick that showed it (or of the budget, if
        # nothing was), never above the budget then; held while the breakers the 503s
        # opened pace the pushes. What was delivered in that tick is the operator's to
        # measure, and its Event names it.
        def cut() -> tuple[float, float, float] | None:
            for e in budget_events(release):
                said = OVERLOAD_CUT.search(e["message"])
                if told(e) not in earlier and said:
                    before, after, delivered = (float(x) for x in said.groups())
                    return before, after, delivered
            return None

        try:
            before, after, delivered = wait_for(
                "a BudgetChanged Event cutting the budget for overload", cut, timeout=120
            )
        except AssertionError as exc:
            st = release.pipeline().get("status", {})
            seen = {k: st.get(k) for k in ("budget", "health", "healthReason", "reasons")}
            raise AssertionError(f"{exc}; from {start}; status {seen}") from None
        # (a tick with nothing delivered cuts the budget itself); rounded to 1 ev/s
        # and never below the pipeline's floor
        cut_to = max(BUDGET_MIN, Spec().decrease * (delivered or before))
        assert after < before and after <= cut_to + 1
        lowered = wait_for(
            "the cut budget in the ConfigMap",
            lambda: (b := float(release.live()["budget"])) <= after + 1 and b,
            timeout=30,
        )
        assert lowered < start
        status = release.pipeline()["status"]
        healthy = {c["type"]: c for c in status["conditions"]}["AnalyticsHealthy"]
        assert healthy["status"] == "False" and healthy["message"] == status["healthReason"]
        described = release.cluster.kubectl(
            "describe", "analyticspipeline", FULLNAME, "-n", release.ns
        ).stdout
        assert "AnalyticsHealthy" in described and "budget" in described.lower()
    finally:
        release.client("post", url=release.sim_url + "/admin/fault", body={"mode": "healthy"})
        sender.kill()
        sender.communicate(timeout=30)


def test_a_full_quota_switches_the_shedding_policy(release: Release) -> None:
    assert json.loads(release.live()["shedding"])["policy"] == "none"
    release.client("post", url=release.sim_url + "/admin/fault", body={"mode": "down"})
    try:
        # analytics down: the stream fills towards the 1 MiB quota
        release.client(
            "orders",
            count=120,
            lines=80,
            skus=500,
            tag="fill",
            orders=release.orders_url,
            timeout=600,
        )

        def switched() -> str | None:
            policy: str = json.loads(release.live()["shedding"])["policy"]
            return None if policy == "none" else policy

        try:
            policy = wait_for("the operator to switch the shedding policy", switched, timeout=120)
        except AssertionError as exc:
            status = release.pipeline().get("status", {})
            raise AssertionError(f"{exc}; pipeline status {json.dumps(status)}") from None
        assert policy in ("sample", "aggregate", "evict", "drop_new")
        shedding = {c["type"]: c for c in release.pipeline()["status"]["conditions"]}["Shedding"]
        assert shedding["status"] == "True"
    finally:
        release.client("post", url=release.sim_url + "/admin/fault", body={"mode": "healthy"})


def test_one_operator_steers_and_the_other_takes_over_when_it_is_deleted(
    release: Release,
) -> None:
    pods = release.ready_pods("operator")
    assert len(pods) == 2

    def roles() -> tuple[str, str] | None:  # (leader, standby) once one steers
        # kopf starts every replica paused and resumes the one no peer outranks
        steering = [p for p in pods if steers(operator_log(release, p))]
        if len(steering) != 1:
            return None
        (leader,) = steering
        (standby,) = [p for p in pods if p != leader]
        return leader, standby

    leader, standby = wait_for("one operator steers, the other stands by", roles, timeout=90)
    resumed_before = operator_log(release, standby).count(RESUMED)
    deleted_at = time.time()
    release.cluster.kubectl("delete", "pod", "-n", release.ns, leader, "--wait=false")

    def took_over() -> str | None:
        """The standby resumed; or the leader's replacement, when its random priority
        outranks the standby and it joined before the leader left."""
        if operator_log(release, standby).count(RESUMED) > resumed_before:
            return str(standby)
        for pod in release.ready_pods("operator"):
            if pod not in (leader, standby) and RESUMED in operator_log(release, pod):
                return pod
        return None

    def decided_since() -> bool:
        # a daemon that starts reports its first decision at once, idle or not
        stamp = release.pipeline().get("status", {}).get("lastDecisionTime", "")
        when = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")) if stamp else 0
        return when > deleted_at + 1

    # kopf's peering lifetime is 60 s; a leader that stops in order hands over at once
    successor = wait_for("an operator takes over", took_over, timeout=75)
    seconds = time.time() - deleted_at
    wait_for("a decision after the hand-over", decided_since, timeout=60)
    who = "the standby" if successor == standby else "the leader's replacement"
    print(f"operator hand-over: {who} resumed {seconds:.1f} s after the leader's deletion")
    # the Deployment replaces the deleted pod: two again
    wait_for("two operators again", lambda: len(release.ready_pods("operator")) == 2, timeout=120)


def test_helm_uninstall_leaves_the_crd_and_nothing_else(release: Release) -> None:
    release.helm("uninstall", RELEASE, "-n", release.ns, "--wait", timeout=300)
    cluster = release.cluster
    assert cluster.kubectl("get", "crd", "analyticspipelines.trackrelay.io").returncode == 0
    left = cluster.kubectl(
        "get",
        "deployments,statefulsets,services,jobs,poddisruptionbudgets,configmaps,secrets,"
        "serviceaccounts,roles,rolebindings,analyticspipelines",
        "-n",
        release.ns,
        "-l",
        f"app.kubernetes.io/instance={RELEASE}",
        "-o",
        "name",
    ).stdout.split()
    assert left == []
    for kind in ("clusterrole", "clusterrolebinding"):
        assert cluster.kubectl("get", kind, f"{FULLNAME}-operator", check=False).returncode != 0
