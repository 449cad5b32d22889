"""A session-wide real Kubernetes API server for tests marked ``cluster``.

Every test here is marked ``cluster``; the run stops before any test, naming
``make cluster-tools``, when the cache lacks the binaries (tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client, config

from tests.support.kube import ControlPlane, cache_bin_dir


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/cluster/" in str(item.path):
            item.add_marker(pytest.mark.cluster)


class Cluster:
    """What a test gets: the control plane and a configured ``kubernetes`` client."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.kubeconfig = plane.kubeconfig
        self.api = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(plane.kubeconfig)
        )
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.ext = client.ApiextensionsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    plane = ControlPlane(cache_bin_dir(), tmp_path_factory.mktemp("k8s"))
    try:
        plane.start()
        yield Cluster(plane)
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def controllers(cluster: Cluster) -> Cluster:
    """The same cluster with kube-controller-manager running (Deployments get ReplicaSets)."""
    cluster.plane.start_controller_manager()
    return cluster


def deployment(name: str, replicas: int, image: str) -> client.V1Deployment:
    """A Deployment of one container, its pods labelled ``app: name`` (this control plane
    runs no kubelet: the pods are only ever scheduled on paper)."""
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="app", image=image)]),
            ),
        ),
    )
