"""The Helm chart: lint, the schema, what the templates render, and an install on the API server.

The API server has no node, so nothing here runs a pod (tests/e2e does): these
tests check what is rendered, that the server accepts every object in strict
validation, that an install creates them all, and what the operator's RBAC
allows. Hooks (the migration Job, the helm test pod) need running pods, so the
install here skips them.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.cluster.conftest import Cluster
from tests.support.rbac import disallowed_answers
from trackrelay.config.settings import derived_outbox_quota, read_ahead
from trackrelay.control.analytics_health import HealthQuery, PrometheusSpec
from trackrelay.forwarder.metrics import ForwarderMetrics
from trackrelay.orders.metrics import OrderMetrics
from trackrelay_operator.destinations import refusal
from trackrelay_operator.spec import parse

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "trackrelay"
MANIFESTS = REPO / "manifests"
ALL_OPTIONS = CHART / "ci" / "all-options-values.yaml"
SIMULATOR = CHART / "ci" / "simulator-values.yaml"
TLS = CHART / "ci" / "tls-values.yaml"
KUBE_VERSION = "1.35.4"
# Prometheus Operator kinds: no CRD for them on the test API server
NOT_ON_THIS_SERVER = {"ServiceMonitor", "PrometheusRule"}


def helm(cluster: Cluster, *args: str) -> str:
    done = cluster.plane.helm(*args)
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stderr}"
    return done.stdout


def render(cluster: Cluster, *args: str, namespace: str = "shop") -> list[dict[str, Any]]:
    out = helm(
        cluster,
        "template",
        "shop",
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        *args,
    )
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    specs = {}
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            specs[f"{d['kind']}/{d['metadata']['name']}"] = d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            specs[f"Pod/{d['metadata']['name']}"] = d["spec"]
    return specs


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# -- lint and schema -------------------------------------------------------------------


@pytest.mark.parametrize(
    "values", [SIMULATOR, ALL_OPTIONS, TLS], ids=["simulator", "all-options", "tls"]
)
def test_helm_lint_is_clean_in_strict_mode(cluster: Cluster, values: Path) -> None:
    out = helm(cluster, "lint", "--strict", str(CHART), "-f", str(values))
    assert "1 chart(s) linted, 0 chart(s) failed" in out


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("queue.quotaMiB=0", "at '/queue/quotaMiB': minimum: got 0, want 1"),
        ("orders.workers=0", "at '/orders/workers'"),
        ("redis.appendfsync=sometimes", "at '/redis/appendfsync': value must be one of"),
        ("forwarder.replicas=two", "at '/forwarder/replicas': got string, want integer"),
        ("pipeline.shedding.policy=random", "at '/pipeline/shedding/policy'"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
        ("database.externalUrl=mysql://x", "at '/database/externalUrl'"),
        ("replicas=3", "additional properties 'replicas' not allowed"),
        (
            "pipeline.analytics.prometheus.address=prometheus:9090",
            "at '/pipeline/analytics/prometheus/address'",
        ),
        (
            "pipeline.analytics.prometheus.timeoutSeconds=0",
            "at '/pipeline/analytics/prometheus/timeoutSeconds'",
        ),
    ],
)
def test_the_schema_refuses_bad_values_naming_them(
    cluster: Cluster, setting: str, says: str
) -> None:
    done = cluster.plane.helm(
        "template",
        "shop",
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        "-f",
        str(SIMULATOR),
        "--set",
        setting,
    )
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr
    assert says in done.stderr, done.stderr


def test_analytics_url_is_required_without_the_simulator(cluster: Cluster) -> None:
    done = cluster.plane.helm("template", "shop", str(CHART), "--kube-version", KUBE_VERSION)
    assert done.returncode != 0
    assert "analytics.url is required unless simulator.enabled is true" in done.stderr


# -- what the templates render ---------------------------------------------------------


def test_the_queue_quota_sets_redis_maxmemory_the_relays_and_the_pipeline(
    cluster: Cluster,
) -> None:
    docs = render(cluster, "-f", str(ALL_OPTIONS))  # quota 100 MiB, headroom 128 MiB
    conf = by_kind(docs, "ConfigMap")["shop-trackrelay-redis"]["data"]["redis.conf"]
    assert "maxmemory 228mb" in conf.splitlines()
    assert "maxmemory-policy noeviction" in conf.splitlines()
    assert "appendonly yes" in conf.splitlines()
    assert "appendfsync always" in conf.splitlines()
    pipeline = by_kind(docs, "AnalyticsPipeline")["shop-trackrelay"]["spec"]
    assert pipeline["queue"]["quota"] == "100MiB"
    for name in ("shop-trackrelay-orders", "shop-trackrelay-relay"):
        container = by_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]["containers"][0]
        assert env_of(container)["TRACKRELAY_QUEUE_QUOTA"] == "100MiB"
        # the chart's formula is local mode's: pipeline.replicas.max 6 x forwarder.concurrency 8
        # x forwarder.batchSize 500
        fwd = yaml.safe_load((CHART / "values.yaml").read_text())["forwarder"]
        replicas = yaml.safe_load(ALL_OPTIONS.read_text())["pipeline"]["replicas"]["max"]
        most = read_ahead(replicas, fwd["concurrency"], fwd["batchSize"])
        assert env_of(container)["TRACKRELAY_QUEUE_READ_AHEAD"] == str(most) == "24000"
        # no outbox quota given: the one local mode derives from the queue quota
        derived = derived_outbox_quota(100 * 2**20)
        assert env_of(container)["TRACKRELAY_OUTBOX_QUOTA"] == str(derived) == "1638400"
    default = render(cluster, "-f", str(SIMULATOR))
    conf = by_kind(default, "ConfigMap")["shop-trackrelay-redis"]["data"]["redis.conf"]
    assert "maxmemory 128mb" in conf.splitlines()  # 64 MiB quota + 64 MiB headroom
    given = render(cluster, "-f", str(SIMULATOR), "--set", "queue.outboxRows=5000")
    relay = by_kind(given, "Deployment")["shop-trackrelay-orders"]["spec"]["template"]["spec"]
    assert env_of(relay["containers"][0])["TRACKRELAY_OUTBOX_QUOTA"] == "5000"


def test_the_pipeline_reads_analytics_metrics_from_the_prometheus_values(cluster: Cluster) -> None:
    def pipeline(*args: str) -> dict[str, Any]:
        return dict(by_kind(render(cluster, *args), "AnalyticsPipeline")["shop-trackrelay"]["spec"])

    given = yaml.safe_load(ALL_OPTIONS.read_text())["pipeline"]["analytics"]["prometheus"]
    queries = tuple(
        HealthQuery(q["name"], q["query"], q.get("min"), q.get("max")) for q in given["queries"]
    )
    assert parse(pipeline("-f", str(ALL_OPTIONS))).prometheus == PrometheusSpec(
        given["address"], queries, given["timeoutSeconds"], given["stalenessSeconds"]
    )
    default = pipeline("-f", str(SIMULATOR))
    assert "prometheus" not in default["analytics"] and parse(default).prometheus is None
    address = "pipeline.analytics.prometheus.address=http://prometheus.monitoring:9090"
    only = parse(pipeline("-f", str(SIMULATOR), "--set", address)).prometheus
    assert only == PrometheusSpec("http://prometheus.monitoring:9090")  # the defaults


@pytest.mark.parametrize(
    "values", [SIMULATOR, ALL_OPTIONS, TLS], ids=["simulator", "all-options", "tls"]
)
def test_every_container_is_non_root_read_only_and_capability_free(
    cluster: Cluster, values: Path
) -> None:
    specs = pod_specs(render(cluster, "-f", str(values)))
    assert len(specs) >= 6
    for where, spec in specs.items():
        for container in spec.get("initContainers", []) + spec["containers"]:
            sc = container.get("securityContext", {})
            label = f"{where}/{container['name']}"
            assert sc.get("runAsNonRoot") is True, label
            assert sc.get("readOnlyRootFilesystem") is True, label
            assert sc.get("allowPrivilegeEscalation") is False, label
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], label
            assert sc.get("runAsUser", 0) > 0, label


@pytest.mark.parametrize(
    "values", [SIMULATOR, ALL_OPTIONS, TLS], ids=["simulator", "all-options", "tls"]
)
def test_long_running_containers_have_probes_and_resources(cluster: Cluster, values: Path) -> None:
    docs = render(cluster, "-f", str(values))
    workloads = {**by_kind(docs, "Deployment"), **by_kind(docs, "StatefulSet")}
    assert workloads
    for name, workload in workloads.items():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            assert container["resources"]["requests"], name
            assert "memory" in container["resources"].get("limits", {}), name
            if name.endswith("-relay"):
                continue  # the relay serves no HTTP; a stuck relay's lease lapses for another
            assert "livenessProbe" in container, name
            if not name.endswith("-operator"):
                assert "readinessProbe" in container, name
    orders = by_kind(docs, "Deployment")["shop-trackrelay-orders"]["spec"]["template"]["spec"]
    probes = orders["containers"][0]
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_stores_are_probed_by_asking_them_and_kept_through_drains(cluster: Cluster) -> None:
    """Redis and PostgreSQL are ready when they answer (PONG, pg_isready), not when a
    TCP port accepts; each has a PodDisruptionBudget selecting its pod; the order pods
    leave the Service before they get SIGTERM."""
    docs = render(cluster, "-f", str(SIMULATOR))
    sets = by_kind(docs, "StatefulSet")
    redis_probe = sets["shop-trackrelay-redis"]["spec"]["template"]["spec"]["containers"][0]
    assert "redis-cli -p 6379 ping" in " ".join(redis_probe["readinessProbe"]["exec"]["command"])
    # the probe's password from the Secret's file, on no command line
    probe = " ".join(redis_probe["readinessProbe"]["exec"]["command"])
    assert 'REDISCLI_AUTH="$(cat /etc/trackrelay-redis-secrets/password)"' in probe
    pg = sets["shop-trackrelay-postgresql"]["spec"]["template"]["spec"]["containers"][0]
    assert "pg_isready" in " ".join(pg["readinessProbe"]["exec"]["command"])
    budgets = by_kind(docs, "PodDisruptionBudget")
    for store in ("redis", "postgresql"):
        budget = budgets[f"shop-trackrelay-{store}"]["spec"]
        assert budget["minAvailable"] == 1
        labels = sets[f"shop-trackrelay-{store}"]["spec"]["template"]["metadata"]["labels"]
        assert budget["selector"]["matchLabels"].items() <= labels.items(), store
    orders = by_kind(docs, "Deployment")["shop-trackrelay-orders"]["spec"]["template"]["spec"]
    assert orders["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert orders["terminationGracePeriodSeconds"] > 5 + 10
    # a store pod restarted on a volume that applies fsGroup starts again (the chaos run in
    # tests/e2e/test_chaos.py found PostgreSQL refusing its group-writable data directory)
    for store in ("redis", "postgresql"):
        pod = sets[f"shop-trackrelay-{store}"]["spec"]["template"]["spec"]
        assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch", store
    started = pg["command"][-1]
    assert started.startswith('chmod 0700 "$PGDATA" && exec postgres -D "$PGDATA"'), started


def test_the_rbac_is_exactly_the_manifests(cluster: Cluster) -> None:
    manifests = {
        d["metadata"]["name"]: d
        for d in yaml.safe_load_all((MANIFESTS / "rbac" / "operator.yaml").read_text())
        if d and d["kind"] == "ClusterRole"
    }
    operator_rules = manifests["trackrelay-operator"]["rules"]
    # namespaced (the default): a Role whose Secrets rule names the release's Secret and
    # operator.secretNames; nothing cluster-wide at all
    docs = render(cluster, "-f", str(SIMULATOR), "--set", "operator.secretNames={queue-b}")
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    role = by_kind(docs, "Role")["shop-trackrelay-operator"]
    named = [
        {**rule, "resourceNames": ["shop-trackrelay-redis", "queue-b"]}
        if "secrets" in rule["resources"]
        else rule
        for rule in operator_rules
    ]
    assert role["rules"] == named
    binding = by_kind(docs, "RoleBinding")["shop-trackrelay-operator"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "shop-trackrelay-operator",
    }
    reader = by_kind(docs, "Role")["shop-trackrelay-live-config-reader"]
    assert reader["rules"] == manifests["trackrelay-live-config-reader"]["rules"]
    # cluster-wide, asked for: a ClusterRole with both sets of rules
    docs = render(cluster, "-f", str(SIMULATOR), "--set", "operator.namespaced=false")
    role = by_kind(docs, "ClusterRole")["shop-trackrelay-operator"]
    assert role["rules"] == operator_rules + manifests["trackrelay-operator-cluster"]["rules"]
    assert "shop-trackrelay-operator" not in by_kind(docs, "Role")
    binding = by_kind(docs, "ClusterRoleBinding")["shop-trackrelay-operator"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "shop-trackrelay-operator", "namespace": "shop"}
    ]


def test_a_cluster_wide_operator_is_granted_what_the_manifests_say(cluster: Cluster) -> None:
    """operator.namespaced: false, the opt-in: the whole matrix in any namespace, and the
    grant the values say it makes (every Secret in the cluster, get)."""
    ns = f"wide-{uuid.uuid4().hex[:6]}"
    installed = cluster.plane.helm(
        "install", "wide", str(CHART), "--namespace", ns, "--create-namespace",
        "-f", str(SIMULATOR), "--set", "operator.namespaced=false", "--no-hooks",
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    try:
        who = f"system:serviceaccount:{ns}:wide-trackrelay-operator"
        assert disallowed_answers(cluster.plane.kubectl, who, "default") == {}
        for verb, resource in [("get", "secrets/anything"), ("patch", "configmaps")]:
            r = cluster.plane.kubectl(
                "auth", "can-i", verb, resource, "-n", "kube-system", "--as", who
            )
            assert r.stdout.strip() == "yes", (verb, resource, r.stdout, r.stderr)
    finally:
        cluster.plane.helm("uninstall", "wide", "--namespace", ns, "--no-hooks")


def test_the_crds_are_the_manifests() -> None:
    for path in (MANIFESTS / "crds").glob("*.yaml"):
        assert (CHART / "crds" / path.name).read_text() == path.read_text()


def test_secrets_carry_the_urls_the_services_and_the_pipeline_read(cluster: Cluster) -> None:
    docs = render(cluster, "-f", str(ALL_OPTIONS))
    secrets = by_kind(docs, "Secret")
    redis_url = secrets["shop-trackrelay-redis"]["stringData"]["url"]
    assert redis_url == "redis://:a-fixed-password@shop-trackrelay-redis.shop.svc:6379/0"
    database = secrets["shop-trackrelay-database"]["stringData"]
    assert database == {"url": "postgresql://shop:secret@orders-db.example:5432/shop"}
    assert "shop-trackrelay-postgresql" not in by_kind(docs, "StatefulSet")
    pipeline = by_kind(docs, "AnalyticsPipeline")["shop-trackrelay"]["spec"]
    assert pipeline["redis"]["secretRef"] == {
        "name": "shop-trackrelay-redis",
        "key": "operator-url",
    }
    rendered = render(cluster, "-f", str(SIMULATOR))
    redis = by_kind(rendered, "Secret")["shop-trackrelay-redis"]["stringData"]
    password = redis["password"]
    assert len(password) == 32 and password.isalnum()
    # one Redis user a role, each with a password of its own, in its URL and in Redis' ACL
    # file, which the container writes from the Secret's files with each password's hash
    users = yaml.safe_load((CHART / "files" / "redis-users.yaml").read_text())
    assert sorted(users) == ["forwarder", "operator", "relay"]
    pod = by_kind(rendered, "StatefulSet")["shop-trackrelay-redis"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (script,) = container["args"]
    assert "h_default=$(hash password)" in script
    assert 'echo "user default on #$h_default ~* &* +@all"' in script
    assert "--aclfile /run/trackrelay-redis/users.acl" in script
    passwords = {redis[f"{role}-password"] for role in users} | {password}
    assert len(passwords) == 4
    for role, rules in users.items():
        role_password = redis[f"{role}-password"]
        assert (
            redis[f"{role}-url"]
            == f"redis://{role}:{role_password}@shop-trackrelay-redis.shop.svc:6379/0"
        )
        assert f"h_{role}=$(hash {role}-password)" in script
        assert f'echo "user {role} on #$h_{role} {rules}"' in script
    # no password in Redis' environment or command line: files of the Secret, and memory
    assert not [e for e in container.get("env", []) if "valueFrom" in e], container.get("env")
    volumes = {v["name"]: v for v in pod["volumes"]}
    items = [i["key"] for i in volumes["secrets"]["secret"]["items"]]
    assert sorted(items) == sorted(["password"] + [f"{role}-password" for role in users])
    assert volumes["acl"]["emptyDir"]["medium"] == "Memory"
    urls = {
        name: [
            e["valueFrom"]["secretKeyRef"]["key"]
            for e in spec["containers"][0].get("env", [])
            if e["name"] == "TRACKRELAY_REDIS_URL"
        ]
        for name, spec in pod_specs(rendered).items()
    }
    assert {n: u for n, u in urls.items() if u} == {
        "Deployment/shop-trackrelay-orders": ["relay-url"],
        "Deployment/shop-trackrelay-forwarder": ["forwarder-url"],
    }


def test_passwords_with_url_characters_are_escaped_in_the_urls(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A password may hold "/", "#", "?", "@", ":", "+" or a space: the URLs the services
    read carry it percent-encoded, and parse back to it."""
    from urllib.parse import unquote, urlsplit

    password = "p/a#s?s w+rd@:x"
    values = tmp_path / "pw.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "redis": {"password": password},
                "postgresql": {"password": password},
                "simulator": {"enabled": True},
            }
        )
    )
    secrets = by_kind(render(cluster, "-f", str(values)), "Secret")
    for name in ("shop-trackrelay-redis", "shop-trackrelay-database"):
        data = secrets[name]["stringData"]
        assert data["password"] == password, name
        parts = urlsplit(data["url"])
        assert parts.password is not None and unquote(parts.password) == password, name
        assert parts.hostname is not None and parts.hostname.startswith("shop-trackrelay-")


def test_the_dashboard_and_the_alerts_ask_for_metrics_the_services_export(
    cluster: Cluster,
) -> None:
    exported: set[str] = set()
    for make in (OrderMetrics, ForwarderMetrics):
        registry = CollectorRegistry()
        make(registry=registry)
        for family in registry.collect():  # labelled families have no samples yet
            suffixes = SERIES_SUFFIXES.get(family.type, [""])
            exported.update(family.name + suffix for suffix in suffixes)
    docs = render(cluster, "-f", str(ALL_OPTIONS))
    dashboard = json.loads(
        by_kind(docs, "ConfigMap")["shop-trackrelay-dashboard"]["data"]["trackrelay.json"]
    )
    rules = by_kind(docs, "PrometheusRule")["shop-trackrelay"]["spec"]["groups"][0]["rules"]
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [r["expr"] for r in rules]
    asked = {name for e in exprs for name in _metric_names(e)}
    ours = {n for n in asked if n.startswith("trackrelay_")}
    assert ours - exported == set()
    assert asked - ours == {"kube_deployment_status_replicas"}  # from kube-state-metrics
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("orders", "p99", "backlog", "budget", "replicas", "shedding", "latency"):
        assert topic in titles


def test_the_api_service_exposes_only_the_api_and_the_simulator_admin_is_opt_in(
    cluster: Cluster,
) -> None:
    docs = render(cluster, "-f", str(SIMULATOR))
    services = by_kind(docs, "Service")
    ports = {
        name: {p["name"]: p["targetPort"] for p in s["spec"]["ports"]}
        for name, s in services.items()
    }
    assert ports["shop-trackrelay-orders"] == {"http": "http"}
    assert ports["shop-trackrelay-orders-metrics"] == {"metrics": "metrics"}
    orders = by_kind(docs, "Deployment")["shop-trackrelay-orders"]["spec"]["template"]["spec"]
    (container,) = orders["containers"]
    assert "--metrics-port=9102" in container["args"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "http": 8000,
        "metrics": 9102,
    }
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    sim = by_kind(docs, "Deployment")["shop-trackrelay-simulator"]["spec"]["template"]["spec"]
    assert "--no-admin" in sim["containers"][0]["args"]
    asked = render(cluster, "-f", str(SIMULATOR), "--set", "simulator.admin=true")
    sim = by_kind(asked, "Deployment")["shop-trackrelay-simulator"]["spec"]["template"]["spec"]
    assert "--no-admin" not in sim["containers"][0]["args"]
    # Prometheus scrapes the ports named metrics only: the API's Service has none.
    monitored = render(cluster, "-f", str(ALL_OPTIONS))
    monitor = by_kind(monitored, "ServiceMonitor")["shop-trackrelay"]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]


def test_the_operators_allowed_hosts_reach_its_command_line(cluster: Cluster) -> None:
    def args(*more: str) -> list[str]:
        docs = render(cluster, "-f", str(SIMULATOR), *more)
        pod = by_kind(docs, "Deployment")["shop-trackrelay-operator"]["spec"]["template"]["spec"]
        return list(pod["containers"][0]["args"])

    # the release namespace's Services by default; every namespace's when cluster-wide
    assert [a for a in args() if a.startswith("--allow-host")] == [
        "--allow-host=*.shop.svc",
        "--allow-host=*.shop.svc.cluster.local",
    ]
    wide = args("--set", "operator.namespaced=false")
    assert not [a for a in wide if a.startswith("--allow-host")]  # the operator's own default
    # every URL the chart gives the pipeline is on the default list
    docs = render(cluster, "-f", str(SIMULATOR))
    pipeline = by_kind(docs, "AnalyticsPipeline")["shop-trackrelay"]["spec"]
    redis = by_kind(docs, "Secret")["shop-trackrelay-redis"]["stringData"]
    urls = [pipeline["analytics"]["healthURL"], redis[pipeline["redis"]["secretRef"]["key"]]]
    for url in urls:
        assert refusal("url", url, ("*.shop.svc", "*.shop.svc.cluster.local")) is None, url
    listed = args("--set", "operator.allowedHosts={analytics.example.com,10.0.0.7}")
    assert [a for a in listed if a.startswith("--allow-host")] == [
        "--allow-host=analytics.example.com",
        "--allow-host=10.0.0.7",
    ]


def test_the_stores_take_only_authenticated_clients_from_the_client_networks(
    cluster: Cluster,
) -> None:
    docs = render(cluster, "-f", str(SIMULATOR), "--set", "postgresql.clientCIDRs={10.244.0.0/16}")
    hba = by_kind(docs, "ConfigMap")["shop-trackrelay-postgresql"]["data"]["pg_hba.conf"]
    rules = [line.split() for line in hba.splitlines() if line.strip()]
    assert rules == [
        ["local", "all", "all", "trust"],  # the container's own socket (probes)
        ["host", "all", "all", "127.0.0.1/32", "scram-sha-256"],
        ["host", "all", "all", "::1/128", "scram-sha-256"],
        ["host", "all", "all", "10.244.0.0/16", "scram-sha-256"],
    ]
    pg = by_kind(docs, "StatefulSet")["shop-trackrelay-postgresql"]["spec"]["template"]["spec"]
    command = " ".join(pg["containers"][0]["command"])
    assert "hba_file=/etc/trackrelay-postgresql/pg_hba.conf" in command
    assert "0.0.0.0/0" not in json.dumps(pg)
    conf = by_kind(docs, "ConfigMap")["shop-trackrelay-redis"]["data"]["redis.conf"]
    assert "protected-mode yes" in conf.splitlines()
    redis_pod = by_kind(docs, "StatefulSet")["shop-trackrelay-redis"]["spec"]["template"]["spec"]
    assert "user default on #$h_default" in redis_pod["containers"][0]["args"][0]
    refused = cluster.plane.helm(
        "template",
        "shop",
        str(CHART),
        "-f",
        str(SIMULATOR),
        "--set",
        "postgresql.clientCIDRs={everyone}",
    )
    assert refused.returncode != 0 and "clientCIDRs" in refused.stderr


# -- NetworkPolicies ---------------------------------------------------------------------

# who listens where in a default install with the simulator (component -> ports)
LISTENERS = {
    "orders": [8000, 9102],
    "forwarder": [9100],
    "simulator": [8100],
    "redis": [6379],
    "postgresql": [5432],
}
OUTSIDER = {"run": "client"}  # a pod of the namespace that is not the release's


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # the chart writes matchLabels only
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_matches(peer: dict[str, Any], labels: dict[str, str]) -> bool:
    """One NetworkPolicyPeer against a pod of the release namespace."""
    assert set(peer) <= {"podSelector", "namespaceSelector"}, peer
    return _selects(peer.get("podSelector", {}), labels)  # a namespaceSelector {} is any


def _allows(
    policies: list[dict[str, Any]], kind: str, pod: dict[str, str], peer: dict[str, str], port: int
) -> bool:
    """What NetworkPolicy semantics say of one direction (Ingress: ``pod`` receiving from
    ``peer``; Egress: ``pod`` sending to it): free unless a policy selects the pod for that
    direction, then allowed by any rule of those policies naming the port and the peer."""
    chosen = [p["spec"] for p in policies if _selects(p["spec"]["podSelector"], pod)]
    chosen = [p for p in chosen if kind in p["policyTypes"]]
    if not chosen:
        return True
    side = "from" if kind == "Ingress" else "to"
    for rule in (r for p in chosen for r in p.get(kind.lower(), [])):
        ports = [p["port"] for p in rule.get("ports", [])]
        peers = rule.get(side)
        if (not ports or port in ports) and (
            not peers or any(_peer_matches(x, peer) for x in peers)
        ):
            return True
    return False


def test_network_policies_open_only_the_paths_each_role_needs(cluster: Cluster) -> None:
    docs = render(cluster, "-f", str(SIMULATOR))
    policies = list(by_kind(docs, "NetworkPolicy").values())
    pods = {}
    for spec_docs in (d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job", "Pod")):
        meta = (
            spec_docs["metadata"]
            if spec_docs["kind"] == "Pod"
            else spec_docs["spec"]["template"]["metadata"]
        )
        pods[meta["labels"]["app.kubernetes.io/component"]] = meta["labels"]
    assert set(pods) == {
        "orders",
        "forwarder",
        "simulator",
        "redis",
        "postgresql",
        "operator",
        "migrations",
        "uninstall",
        "test",
    }
    # every pod of the release is denied everything but what a policy names
    deny = by_kind(docs, "NetworkPolicy")["shop-trackrelay-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny
    assert all(_selects(deny["podSelector"], labels) for labels in pods.values())
    opened = {
        (src, dst, port)
        for src, src_labels in {**pods, "outsider": OUTSIDER}.items()
        for dst, ports in LISTENERS.items()
        for port in ports
        if _allows(policies, "Egress", src_labels, pods[dst], port)
        and _allows(policies, "Ingress", pods[dst], src_labels, port)
    }
    metrics = {
        (src, dst, port)
        for src in {**pods, "outsider": 1}
        for dst, port in [("orders", 9102), ("forwarder", 9100), ("simulator", 8100)]
        if src in ("outsider", "operator", "forwarder") or dst != "simulator"
    }
    needed = {
        ("orders", "redis", 6379),
        ("orders", "postgresql", 5432),
        ("forwarder", "redis", 6379),
        ("forwarder", "simulator", 8100),
        ("operator", "redis", 6379),
        ("operator", "simulator", 8100),
        ("migrations", "postgresql", 5432),
        ("outsider", "orders", 8000),
        ("test", "orders", 8000),
    }
    scraped = {
        (src, dst, port)
        for (src, dst, port) in metrics
        if _allows(
            policies, "Egress", OUTSIDER if src == "outsider" else pods[src], pods[dst], port
        )
    }
    assert opened == needed | scraped, (sorted(opened - needed - scraped), sorted(needed - opened))
    # the outsider, a pod that is not the release's, scrapes metrics but reaches no store
    assert ("outsider", "orders", 9102) in opened
    assert not {
        (s, d, p) for (s, d, p) in opened if s == "outsider" and d in ("redis", "postgresql")
    }
    assert not by_kind(
        render(cluster, "-f", str(SIMULATOR), "--set", "networkPolicy.enabled=false"),
        "NetworkPolicy",
    )


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--set", "operator.enabled=false"],
        ["--set", "relay.separate=true"],
        ["-f", str(ALL_OPTIONS)],
    ],
    ids=["default", "no-operator", "relay-apart", "all-options"],
)
def test_every_pod_that_holds_a_token_may_reach_the_api_server(
    cluster: Cluster, extra: list[str]
) -> None:
    """A pod given a service-account token calls the API server (the live ConfigMap, the
    operator's objects, the uninstall hook's pipeline): some policy selecting it opens the
    API server's ports; a pod without one is opened no such path."""
    docs = render(cluster, "-f", str(SIMULATOR), *extra)
    policies = [p["spec"] for p in by_kind(docs, "NetworkPolicy").values()]
    api_ports = {443, 6443}
    for name, spec in pod_specs(docs).items():
        d = next(d for d in docs if f"{d['kind']}/{d['metadata']['name']}" == name)
        meta = d["metadata"] if d["kind"] == "Pod" else d["spec"]["template"]["metadata"]
        selecting = [p for p in policies if _selects(p["podSelector"], meta["labels"])]
        assert selecting, f"{name} is selected by no policy"
        opened = {
            port["port"]
            for p in selecting
            for rule in p.get("egress", [])
            if not rule.get("to")
            for port in rule.get("ports", [])
        }
        holds_token = spec.get("automountServiceAccountToken", True) is not False
        assert (api_ports <= opened) == holds_token, (name, holds_token, sorted(opened))


def test_network_policies_follow_external_stores_and_analytics(cluster: Cluster) -> None:
    """An external database and analytics: egress on their URLs' ports (any address unless
    narrowed), and no policy for pods the release does not run."""
    docs = render(
        cluster,
        "-f",
        str(ALL_OPTIONS),
        "--set",
        "networkPolicy.databaseTo[0].ipBlock.cidr=10.9.0.0/16",
    )
    policies = by_kind(docs, "NetworkPolicy")
    assert "shop-trackrelay-postgresql" not in policies

    def egress(component: str) -> list[tuple[list[int], Any]]:
        rules = policies[f"shop-trackrelay-{component}"]["spec"]["egress"]
        return [([p["port"] for p in r["ports"]], r.get("to")) for r in rules]

    assert ([5432], [{"ipBlock": {"cidr": "10.9.0.0/16"}}]) in egress("relay")
    assert ([5432], [{"ipBlock": {"cidr": "10.9.0.0/16"}}]) in egress("orders")
    operator = egress("operator")
    assert ([9090], None) in operator  # the pipeline's Prometheus (on the default port)
    assert ([8100], None) in operator  # analytics.healthUrl's port
    assert ([443, 6443], None) in operator  # the API server


def test_tls_makes_the_stores_tls_only_and_every_client_verify_them_with_the_ca_alone(
    cluster: Cluster,
) -> None:
    docs = render(cluster, "-f", str(TLS))
    sets = by_kind(docs, "StatefulSet")
    # Redis: no plain-text port, the certificate and key from the Secret, the rest unchanged
    conf = by_kind(docs, "ConfigMap")["shop-trackrelay-redis"]["data"]["redis.conf"].splitlines()
    server = "/etc/trackrelay-redis-tls"
    for line in ("port 0", "tls-port 6379", "appendonly yes", "maxmemory-policy noeviction"):
        assert line in conf
    assert f"tls-cert-file {server}/tls.crt" in conf and f"tls-key-file {server}/tls.key" in conf
    assert "port 6379" not in conf and "tls-auth-clients no" in conf
    redis_pod = sets["shop-trackrelay-redis"]["spec"]["template"]["spec"]
    probe = " ".join(redis_pod["containers"][0]["readinessProbe"]["exec"]["command"])
    assert f"redis-cli --tls --cacert {server}/ca.crt -p 6379 ping" in probe
    # PostgreSQL: ssl on, its key root's and 0640 for the group the pod's fsGroup gives it
    pg_pod = sets["shop-trackrelay-postgresql"]["spec"]["template"]["spec"]
    command = " ".join(pg_pod["containers"][0]["command"])
    server = "/etc/trackrelay-postgresql-tls"
    assert (
        f"-c ssl=on -c ssl_cert_file={server}/tls.crt -c ssl_key_file={server}/tls.key" in command
    )
    probe = " ".join(pg_pod["containers"][0]["readinessProbe"]["exec"]["command"])
    assert "PGSSLMODE=require pg_isready" in probe
    assert pg_pod["securityContext"]["fsGroup"] == 999
    assert pg_pod["containers"][0]["securityContext"]["runAsGroup"] == 999
    for pod, secret, path in (
        (redis_pod, "shop-redis-tls", "/etc/trackrelay-redis-tls"),
        (pg_pod, "shop-postgresql-tls", server),
    ):
        volume = next(v for v in pod["volumes"] if v["name"] == "tls")
        assert volume["secret"] == {"secretName": secret, "defaultMode": 0o640}
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["tls"] == {"name": "tls", "mountPath": path, "readOnly": True}
    hba = by_kind(docs, "ConfigMap")["shop-trackrelay-postgresql"]["data"]["pg_hba.conf"]
    rows = [line.split()[0] for line in hba.splitlines() if line.strip()]
    assert rows[0] == "local" and set(rows[1:]) == {"hostssl"}, hba
    # every client: the CA of each store it uses, ca.crt alone, where its URL says
    cas = {"redis": "shop-redis-tls", "postgresql": "shop-postgresql-tls"}
    mounted = {}
    for name, spec in pod_specs(docs).items():
        if name.startswith("StatefulSet/"):
            continue
        volumes = [
            v
            for v in spec.get("volumes", [])
            if v.get("secret", {}).get("secretName") in cas.values()
        ]
        for v in volumes:
            assert v["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}], name
        assert "tls.key" not in json.dumps(spec) and "tls.crt" not in json.dumps(spec), name
        mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0].get("volumeMounts", [])}
        mounted[name] = {v["name"]: mounts[v["name"]] for v in volumes}
    redis_ca = {"redis-ca": "/etc/trackrelay/tls/redis"}
    pg_ca = {"postgresql-ca": "/etc/trackrelay/tls/postgresql"}
    assert {n: m for n, m in mounted.items() if m} == {
        "Deployment/shop-trackrelay-orders": redis_ca | pg_ca,
        "Deployment/shop-trackrelay-relay": redis_ca | pg_ca,
        "Deployment/shop-trackrelay-forwarder": redis_ca,
        "Deployment/shop-trackrelay-operator": redis_ca,
        "Job/shop-trackrelay-migrate-1": pg_ca,
    }
    # the URLs: TLS, the names the certificates carry, verified against the mounted CA
    secrets = by_kind(docs, "Secret")
    redis_urls = {
        k: v for k, v in secrets["shop-trackrelay-redis"]["stringData"].items() if k.endswith("url")
    }
    assert sorted(redis_urls) == ["forwarder-url", "operator-url", "relay-url", "url"]
    for url in redis_urls.values():
        assert re.fullmatch(
            r"rediss://[a-z]*:[^@]+@shop-trackrelay-redis\.shop\.svc:6379/0"
            r"\?ssl_ca_certs=/etc/trackrelay/tls/redis/ca\.crt",
            url,
        ), url
    pg_url = secrets["shop-trackrelay-database"]["stringData"]["url"]
    assert re.fullmatch(
        r"postgresql://trackrelay:[^@]+@shop-trackrelay-postgresql\.shop\.svc:5432/trackrelay"
        r"\?sslmode=verify-full&sslrootcert=/etc/trackrelay/tls/postgresql/ca\.crt",
        pg_url,
    ), pg_url
    # one store on, the other as it was
    only_redis = render(cluster, "-f", str(SIMULATOR), "--set", "redis.tls.secretName=r")
    database = by_kind(only_redis, "Secret")["shop-trackrelay-database"]["stringData"]["url"]
    assert "ssl" not in database and "hostssl" not in json.dumps(only_redis)


def test_tls_is_off_by_default(cluster: Cluster) -> None:
    docs = render(cluster, "-f", str(SIMULATOR))
    text = json.dumps(docs)
    for word in ("rediss://", "ssl", "tls-port", "--tls", "hostssl", "/etc/trackrelay/tls"):
        assert word not in text, word
    conf = by_kind(docs, "ConfigMap")["shop-trackrelay-redis"]["data"]["redis.conf"]
    assert "port 6379" in conf.splitlines()


SERIES_SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:trackrelay|kube)_[a-z0-9_]+)", expr))


# -- against the API server ------------------------------------------------------------


@pytest.mark.parametrize(
    "values", [SIMULATOR, ALL_OPTIONS, TLS], ids=["simulator", "all-options", "tls"]
)
def test_the_api_server_accepts_every_object_in_strict_validation(
    cluster: Cluster, values: Path
) -> None:
    for path in sorted((CHART / "crds").glob("*.yaml")):
        applied = cluster.plane.kubectl("apply", "-f", str(path))
        assert applied.returncode == 0, applied.stderr
    ns = f"chart-{uuid.uuid4().hex[:6]}"
    assert cluster.plane.kubectl("create", "namespace", ns).returncode == 0
    # pods (the helm test pod) need the namespace's default service account, which
    # the controller-manager creates a moment later, or this does first
    cluster.plane.kubectl("create", "serviceaccount", "default", "-n", ns)
    rendered = render(cluster, "-f", str(values), namespace=ns)
    docs = [d for d in rendered if d["kind"] not in NOT_ON_THIS_SERVER]
    checked = cluster.plane.kubectl(
        "apply",
        "-n",
        ns,
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        stdin=yaml.safe_dump_all(docs),
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.count("(server dry run)") == len(docs)


@pytest.mark.parametrize(
    "values", [SIMULATOR, ALL_OPTIONS, TLS], ids=["simulator", "all-options", "tls"]
)
def test_every_pod_meets_pod_security_restricted_on_the_api_server(
    cluster: Cluster, values: Path
) -> None:
    """The API server's own PodSecurity admission, at level "restricted", finds nothing
    to refuse in any pod or pod template the chart renders (it warns for templates and
    refuses pods: both show here), and pods that need no API keep no token."""
    for path in sorted((CHART / "crds").glob("*.yaml")):
        applied = cluster.plane.kubectl("apply", "-f", str(path))
        assert applied.returncode == 0, applied.stderr
    ns = f"pss-{uuid.uuid4().hex[:6]}"
    assert cluster.plane.kubectl("create", "namespace", ns).returncode == 0
    labels = [f"pod-security.kubernetes.io/{mode}=restricted" for mode in ("enforce", "warn")]
    assert cluster.plane.kubectl("label", "namespace", ns, *labels).returncode == 0
    cluster.plane.kubectl("create", "serviceaccount", "default", "-n", ns)
    rendered = render(cluster, "-f", str(values), namespace=ns)
    docs = [d for d in rendered if d["kind"] not in NOT_ON_THIS_SERVER]
    checked = cluster.plane.kubectl(
        "apply", "-n", ns, "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(docs)
    )
    assert checked.returncode == 0, checked.stderr
    assert "PodSecurity" not in checked.stderr, checked.stderr
    for d in docs:
        if d["kind"] == "StatefulSet":  # the stores never call the API
            assert d["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_helm_install_creates_everything_and_uninstall_keeps_only_the_crd(
    cluster: Cluster,
) -> None:
    ns = f"shop-{uuid.uuid4().hex[:6]}"
    installed = cluster.plane.helm(
        "install",
        "shop",
        str(CHART),
        "--namespace",
        ns,
        "--create-namespace",
        "-f",
        str(SIMULATOR),
        "--no-hooks",
    )
    assert installed.returncode == 0, installed.stderr
    assert "kubectl -n " + ns + " get analyticspipelines" in installed.stdout  # NOTES.txt
    assert "an ingress controller elsewhere needs an entry there" in installed.stdout
    manifest = helm(cluster, "get", "manifest", "shop", "--namespace", ns)
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    assert len(docs) >= 20
    for d in docs:
        scope = [] if d["kind"] in ("ClusterRole", "ClusterRoleBinding") else ["-n", ns]
        got = cluster.plane.kubectl("get", d["kind"], d["metadata"]["name"], *scope)
        assert got.returncode == 0, (d["kind"], d["metadata"]["name"], got.stderr)
    # the operator's service account, namespaced: what the manifests allow, in this
    # namespace only, and of the Secrets only the release's own
    who = f"system:serviceaccount:{ns}:shop-trackrelay-operator"
    assert disallowed_answers(cluster.plane.kubectl, who, ns, namespaced=True) == {}
    for verb, resource, where, expected in [
        ("get", "secrets/shop-trackrelay-redis", ns, "yes"),
        ("get", "secrets/shop-trackrelay-database", ns, "no"),
        ("get", "secrets/shop-trackrelay-redis", "default", "no"),
        ("get", "analyticspipelines.trackrelay.io", "default", "no"),
        ("patch", "configmaps", "default", "no"),
        ("list", "namespaces", ns, "no"),
        ("list", "customresourcedefinitions.apiextensions.k8s.io", ns, "no"),
    ]:
        r = cluster.plane.kubectl("auth", "can-i", verb, resource, "-n", where, "--as", who)
        assert r.stdout.strip() == expected, (verb, resource, where, r.stdout, r.stderr)
    # the workloads' service account reads the live ConfigMap, and nothing else
    workload = f"system:serviceaccount:{ns}:shop-trackrelay-workload"
    for verb, resource, expected in [
        ("watch", "configmaps", "yes"),
        ("get", "configmaps", "yes"),
        ("patch", "configmaps", "no"),
        ("get", "secrets", "no"),
        ("list", "pods", "no"),
    ]:
        r = cluster.plane.kubectl("auth", "can-i", verb, resource, "-n", ns, "--as", workload)
        assert r.stdout.strip() == expected, (verb, resource, r.stdout, r.stderr)
    # uninstall: the CRD stays, the release's objects go
    # (no node runs the pre-delete hook Job here; tests/e2e runs it)
    uninstalled = cluster.plane.helm("uninstall", "shop", "--namespace", ns, "--wait", "--no-hooks")
    assert uninstalled.returncode == 0, uninstalled.stderr
    assert cluster.plane.kubectl("get", "crd", "analyticspipelines.trackrelay.io").returncode == 0
    left = cluster.plane.kubectl(
        "get",
        "deployments,statefulsets,services,jobs,poddisruptionbudgets,configmaps,secrets,"
        "serviceaccounts,roles,rolebindings,analyticspipelines",
        "-n",
        ns,
        "-l",
        "app.kubernetes.io/instance=shop",
        "-o",
        "name",
    )
    assert left.returncode == 0, left.stderr
    assert left.stdout.split() == []
    for kind in ("clusterrole", "clusterrolebinding"):
        gone = cluster.plane.kubectl("get", kind, "shop-trackrelay-operator")
        assert gone.returncode != 0
