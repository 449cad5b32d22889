"""Runs last in the e2e tier (conftest orders it): deleting the cluster leaves nothing."""

from __future__ import annotations

from tests.support.kind import KindCluster, script


def test_deleting_the_cluster_leaves_no_container_or_network(kind_cluster: KindCluster) -> None:
    assert kind_cluster.node_containers() == [f"{kind_cluster.name}-control-plane"]
    assert kind_cluster.network_exists()
    script("down")
    assert kind_cluster.node_containers() == []
    assert not kind_cluster.network_exists()
    clusters = kind_cluster.kind("get", "clusters").stdout.split()
    assert kind_cluster.name not in clusters
