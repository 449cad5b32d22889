"""The e2e tier: a kind cluster whose node runs real pods (``make test-e2e``).

Every test here is marked ``e2e``; ``make test`` leaves them out and
``make test-e2e`` runs only them. The session fixture brings the cluster up with
``tests/e2e/kind-cluster.sh up`` (building, once, whatever the cache lacks) and
fails, naming the cause, when it cannot: a test that was asked for never skips.
"""

from __future__ import annotations

import pytest

from tests.support.kind import KindCluster, script


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)
    # deleting the cluster comes after every test that uses it
    items.sort(key=lambda item: item.path.name == "test_teardown.py")


@pytest.fixture(scope="session")
def kind_cluster() -> KindCluster:
    script("up")
    return KindCluster.from_script()
