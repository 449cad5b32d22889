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
