"""A session-wide real Kubernetes API server for tests marked ``cluster``.

Skipped, with one reason, when ``make cluster-tools`` has not filled the cache.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client, config

from tests.support.kube import ControlPlane, cache_bin_dir, missing_binaries


def _skip_reason() -> str | None:
    bindir = cache_bin_dir()
    missing = missing_binaries(bindir)
    if missing:
        return (
            f"cluster tests skipped: {', '.join(missing)} not in {bindir} "
            "(run 'make cluster-tools' to build them)"
        )
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    cluster_items = [i for i in items if "tests/cluster/" in str(i.path)]
    for item in cluster_items:
        item.add_marker(pytest.mark.cluster)
    reason = _skip_reason() if cluster_items else None
    if reason:
        print(f"\n{reason}")
        for item in cluster_items:
            item.add_marker(pytest.mark.skip(reason=reason))


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
