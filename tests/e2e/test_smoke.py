"""Smoke test of the e2e cluster: real pods from images built here, scaled, served, named.

Traffic goes only to the cluster's own pods and services, from inside a pod;
the one lookup of an outside name is answered (refused) by the cluster's DNS.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kind import KindCluster, wait_for

ECHO_DIR = Path(__file__).parent / "images" / "echo"


@pytest.fixture(scope="module")
def echo_image(kind_cluster: KindCluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Build the echo image on the slim base (no pull), save it, ``kind load image-archive`` it."""
    tag = f"localhost/trackrelay/e2e-echo:{secrets.token_hex(4)}"
    kind_cluster.run(
        "podman",
        "build",
        "--pull=never",
        "--build-arg",
        f"BASE_IMAGE={kind_cluster.slim_image}",
        "-t",
        tag,
        str(ECHO_DIR),
        timeout=300,
    )
    archive = tmp_path_factory.mktemp("images") / "echo.tar"
    kind_cluster.run("podman", "save", "-q", "-o", str(archive), tag, timeout=300)
    kind_cluster.kind("load", "image-archive", str(archive), "--name", kind_cluster.name)
    kind_cluster.run("podman", "rmi", tag, check=False)
    return tag


@pytest.fixture(scope="module")
def namespace(kind_cluster: KindCluster) -> Iterator[str]:
    ns = f"e2e-smoke-{secrets.token_hex(3)}"
    kind_cluster.kubectl("create", "namespace", ns)
    yield ns
    kind_cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def echo_objects(image: str) -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/name": "echo"}
    container = {
        "name": "echo",
        "image": image,
        # loaded into the node with kind load; a pull would need a registry
        "imagePullPolicy": "Never",
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1},
        "livenessProbe": {"httpGet": {"path": "/live", "port": "http"}, "periodSeconds": 5},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65534,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "echo", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "echo", "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    return [deployment, service]


def ready_pods(cluster: KindCluster, ns: str) -> list[dict[str, Any]]:
    return cluster.ready_pods(ns, "app.kubernetes.io/name=echo")


def ready_endpoints(cluster: KindCluster, ns: str) -> list[dict[str, Any]]:
    slices = cluster.get("endpointslices", "-n", ns, "-l", "kubernetes.io/service-name=echo")
    return [
        e
        for s in slices["items"]
        for e in s.get("endpoints") or []
        if (e.get("conditions") or {}).get("ready")
    ]


def in_pod(cluster: KindCluster, ns: str, pod: str, program: str) -> Any:
    """Run a Python program in a pod (through the API server and the kubelet); parse its JSON."""
    done = cluster.kubectl("exec", "-n", ns, pod, "--", "python3", "-c", program, timeout=120)
    return json.loads(done.stdout)


def test_the_cluster_runs_on_images_built_here(kind_cluster: KindCluster) -> None:
    nodes = kind_cluster.get("nodes")["items"]
    assert len(nodes) == 1
    ready = {c["type"]: c["status"] for c in nodes[0]["status"]["conditions"]}
    assert ready["Ready"] == "True"
    system = kind_cluster.get("pods", "-n", "kube-system")["items"]
    phases = {p["metadata"]["name"]: p["status"]["phase"] for p in system}
    assert phases and all(phase == "Running" for phase in phases.values()), phases
    for component in ("kube-apiserver", "etcd", "kube-proxy", "coredns", "kube-network-policies"):
        assert any(name.startswith(component) for name in phases), (component, phases)
    # nothing was ever pulled: every image was preloaded or loaded
    events = kind_cluster.get("events", "-A")["items"]
    pulls = [
        e["message"]
        for e in events
        if e.get("reason") == "Pulling" or "ImagePull" in e.get("message", "")
    ]
    assert pulls == []
    # CoreDNS answers for the cluster only
    corefile = kind_cluster.get("configmap", "coredns", "-n", "kube-system")["data"]["Corefile"]
    assert "kubernetes cluster.local" in corefile
    assert "forward" not in corefile


def test_a_locally_built_image_loaded_with_kind_runs_as_a_pod(
    kind_cluster: KindCluster, echo_image: str, namespace: str
) -> None:
    node = f"{kind_cluster.name}-control-plane"
    images = kind_cluster.run("podman", "exec", node, "crictl", "images", "-o", "json").stdout
    tags = {t for i in json.loads(images)["images"] for t in i.get("repoTags") or []}
    assert echo_image in tags
    manifest = yaml.safe_dump_all(echo_objects(echo_image))
    kind_cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)
    pods = wait_for("the echo pod to be Ready", lambda: ready_pods(kind_cluster, namespace))
    assert len(pods) == 1
    pod = pods[0]
    assert pod["status"]["containerStatuses"][0]["image"].endswith(echo_image.split("/", 1)[1])
    # the security context holds: a non-root user and a read-only root filesystem
    seen = in_pod(
        kind_cluster,
        namespace,
        pod["metadata"]["name"],
        "import json, os\n"
        "try:\n    open('/srv/echo/x', 'w'); ro = False\n"
        "except OSError:\n    ro = True\n"
        "print(json.dumps({'uid': os.getuid(), 'read_only': ro}))",
    )
    assert seen == {"uid": 65534, "read_only": True}


def test_the_deployment_scales_to_three_ready_pods(
    kind_cluster: KindCluster, echo_image: str, namespace: str
) -> None:
    kind_cluster.kubectl("scale", "-n", namespace, "deployment/echo", "--replicas=3")
    pods = wait_for(
        "3 Ready echo pods", lambda: len(ready_pods(kind_cluster, namespace)) == 3 or None
    )
    assert pods
    deployment = kind_cluster.get("deployment", "echo", "-n", namespace)
    assert deployment["status"]["readyReplicas"] == 3
    ips = {p["status"]["podIP"] for p in ready_pods(kind_cluster, namespace)}
    assert len(ips) == 3


def test_the_service_routes_to_every_ready_pod(
    kind_cluster: KindCluster, echo_image: str, namespace: str
) -> None:
    pods = ready_pods(kind_cluster, namespace)
    names = sorted(p["metadata"]["name"] for p in pods)
    assert len(names) == 3
    endpoints = wait_for(
        "3 ready endpoints behind the Service",
        lambda: len(ready_endpoints(kind_cluster, namespace)) == 3,
    )
    assert endpoints

    # 90 fresh connections through the Service's name; kube-proxy spreads them. Its
    # rules follow the endpoints within a sync period, so a round may come early.
    def spread() -> list[str] | None:
        answered: list[str] = in_pod(
            kind_cluster,
            namespace,
            names[0],
            "import json, urllib.request\n"
            "seen = [json.load(urllib.request.urlopen('http://echo/hello', timeout=5))['pod']"
            " for _ in range(90)]\n"
            "print(json.dumps(seen))",
        )
        assert len(answered) == 90
        return answered if sorted(set(answered)) == names else None

    answered = wait_for("the Service to spread requests over all 3 pods", spread, timeout=60)
    assert set(answered) <= set(names)


def test_cluster_dns_resolves_services_and_forwards_nothing(
    kind_cluster: KindCluster, echo_image: str, namespace: str
) -> None:
    pod = ready_pods(kind_cluster, namespace)[0]["metadata"]["name"]
    echo_ip = kind_cluster.get("service", "echo", "-n", namespace)["spec"]["clusterIP"]
    api_ip = kind_cluster.get("service", "kubernetes", "-n", "default")["spec"]["clusterIP"]
    resolved = in_pod(
        kind_cluster,
        namespace,
        pod,
        "import json, socket\n"
        "def lookup(name):\n"
        "    try:\n        return socket.gethostbyname(name)\n"
        "    except OSError as e:\n        return 'error: %s' % e\n"
        f"print(json.dumps({{n: lookup(n) for n in ("
        f"'echo.{namespace}.svc.cluster.local', 'echo', 'kubernetes.default', "
        "'trackrelay-outside.example.')}))",
    )
    assert resolved[f"echo.{namespace}.svc.cluster.local"] == echo_ip
    assert resolved["echo"] == echo_ip
    assert resolved["kubernetes.default"] == api_ip
    # an outside name is not forwarded anywhere: the lookup fails inside the cluster
    assert resolved["trackrelay-outside.example."].startswith("error:")


def test_a_pod_that_dies_is_replaced_and_served_again(
    kind_cluster: KindCluster, echo_image: str, namespace: str
) -> None:
    before = {p["metadata"]["name"] for p in ready_pods(kind_cluster, namespace)}
    victim = sorted(before)[0]
    kind_cluster.kubectl("delete", "pod", "-n", namespace, victim, "--grace-period=0", "--force")

    def replaced() -> set[str] | None:
        names = {p["metadata"]["name"] for p in ready_pods(kind_cluster, namespace)}
        return names if len(names) == 3 and victim not in names else None

    after = wait_for("a replacement pod to be Ready", replaced)
    assert victim not in after and len(after - before) == 1
