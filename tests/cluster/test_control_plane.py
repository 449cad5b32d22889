"""The test harness itself: a real API server, CRD validation, controllers, helm."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster.conftest import Cluster, deployment

FIXTURES = Path(__file__).with_name("fixtures")


def _namespace(cluster: Cluster) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


IMAGE = "example.invalid/app:1"


def test_namespace_configmap_and_deployment_round_trip(cluster: Cluster) -> None:
    ns = _namespace(cluster)
    cluster.core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg"), data={"rate": "100"})
    )
    cluster.apps.create_namespaced_deployment(ns, deployment("web", 2, IMAGE))
    assert cluster.core.read_namespaced_config_map("cfg", ns).data == {"rate": "100"}
    dep = cluster.apps.read_namespaced_deployment("web", ns)
    assert dep.spec.replicas == 2
    assert dep.metadata is not None and dep.metadata.uid
    with pytest.raises(ApiException) as err:
        cluster.core.read_namespaced_config_map("absent", ns)
    assert err.value.status == 404


CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.trackrelay.io
spec:
  group: test.trackrelay.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              properties:
                size: {type: integer, minimum: 1, maximum: 10}
"""


def test_crd_with_structural_schema_rejects_a_bad_object(cluster: Cluster) -> None:
    ns = _namespace(cluster)
    applied = cluster.plane.kubectl("apply", "-f", "-", stdin=CRD)
    assert applied.returncode == 0, applied.stderr
    waited = cluster.plane.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.test.trackrelay.io", "--timeout=30s"
    )
    assert waited.returncode == 0, waited.stderr
    good = (
        "apiVersion: test.trackrelay.io/v1\nkind: Widget\nmetadata: {name: ok}\nspec: {size: 3}\n"
    )
    ok = cluster.plane.kubectl("apply", "-n", ns, "-f", "-", stdin=good)
    assert ok.returncode == 0, ok.stderr
    bad = good.replace("name: ok", "name: bad").replace("size: 3", "size: 99")
    refused = cluster.plane.kubectl("apply", "-n", ns, "-f", "-", stdin=bad)
    assert refused.returncode != 0
    assert 'The Widget "bad" is invalid' in refused.stderr
    assert "spec.size" in refused.stderr
    assert "should be less than or equal to 10" in refused.stderr
    objs: Any = cluster.custom.list_namespaced_custom_object(
        "test.trackrelay.io", "v1", ns, "widgets"
    )
    assert [o["metadata"]["name"] for o in objs["items"]] == ["ok"]


def test_deployment_gets_a_replicaset_from_the_controller_manager(controllers: Cluster) -> None:
    ns = _namespace(controllers)
    controllers.apps.create_namespaced_deployment(ns, deployment("worker", 2, IMAGE))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sets = controllers.apps.list_namespaced_replica_set(ns).items
        if sets:
            meta = sets[0].metadata
            assert meta is not None and meta.owner_references
            owner = meta.owner_references[0]
            assert (owner.kind, owner.name) == ("Deployment", "worker")
            assert sets[0].spec.replicas == 2
            return
        time.sleep(0.5)
    pytest.fail("kube-controller-manager created no ReplicaSet in 60s")


def test_helm_install_and_uninstall_a_chart(cluster: Cluster) -> None:
    ns = _namespace(cluster)
    installed = cluster.plane.helm(
        "install", "demo", str(FIXTURES / "tiny"), "-n", ns, "--set", "greeting=hi", "--wait"
    )
    assert installed.returncode == 0, installed.stderr
    assert "STATUS: deployed" in installed.stdout
    assert cluster.core.read_namespaced_config_map("demo-tiny", ns).data == {"greeting": "hi"}
    listed = cluster.plane.helm("list", "-n", ns, "-q")
    assert listed.stdout.split() == ["demo"]
    removed = cluster.plane.helm("uninstall", "demo", "-n", ns)
    assert removed.returncode == 0, removed.stderr
    with pytest.raises(ApiException) as err:
        cluster.core.read_namespaced_config_map("demo-tiny", ns)
    assert err.value.status == 404
