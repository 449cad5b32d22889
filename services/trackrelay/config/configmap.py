"""Live configuration from a Kubernetes ConfigMap, read through the API (a watch).

In a cluster the operator writes the budget and the shedding policy to a
ConfigMap; forwarders and relays watch it, so a change applies within a
second, not at the kubelet's volume refresh (a minute or more). Fail static:
when the API is unreachable, or the ConfigMap is deleted, the last data stays.

The ``kubernetes`` client is imported lazily (``pip install trackrelay[operator]``):
local mode reads Redis and never needs it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

BUDGET = "budget"
"""ConfigMap key: the shared budget in events/s (absent or empty: no limit)."""
SHEDDING = "shedding"
"""ConfigMap key: the shedding policy as JSON ``{"policy", "p"}``."""


def parse_ref(ref: str) -> tuple[str, str]:
    """``namespace/name``, or ``name`` in this pod's namespace; ``ValueError`` if neither."""
    if "/" in ref:
        namespace, _, name = ref.partition("/")
    else:
        if not _SA_NAMESPACE.exists():
            raise ValueError(
                f"live ConfigMap {ref!r}: give namespace/name (no pod namespace to default to)"
            )
        namespace, name = _SA_NAMESPACE.read_text().strip(), ref
    if not namespace or not name or "/" in name:
        raise ValueError(f"live ConfigMap {ref!r}: expected namespace/name")
    return namespace, name


def core_api() -> Any:
    """A CoreV1Api: in-cluster credentials in a pod, else ``$KUBECONFIG`` / ``~/.kube/config``."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        # KUBECONFIG as it is now (the client reads it once, at import).
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
    return client.CoreV1Api()


class ConfigMapWatch:
    """The latest ``data`` of one ConfigMap, kept current by a watch in a daemon thread."""

    def __init__(self, ref: str, api: Any = None) -> None:
        try:
            import kubernetes  # noqa: F401
        except ImportError:
            raise ValueError(
                "a live ConfigMap needs the Kubernetes client: pip install 'trackrelay[operator]'"
            ) from None
        self.namespace, self.name = parse_ref(ref)
        self._api = api
        self._lock = threading.Lock()
        self._data: dict[str, str] | None = None
        self.updated = 0.0
        """``time.monotonic()`` of the last change seen (0: never)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"configmap-{self.name}", daemon=True
        )

    @property
    def data(self) -> dict[str, str] | None:
        with self._lock:
            return None if self._data is None else dict(self._data)

    def _set(self, data: dict[str, str] | None) -> None:
        with self._lock:
            self._data = dict(data or {})
        self.updated = time.monotonic()

    def start(self) -> ConfigMapWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        failures = 0
        while not self._stop.is_set():
            try:
                api = self._api = self._api or core_api()
                cm = api.read_namespaced_config_map(self.name, self.namespace)
                self._set(cm.data)
                version = cm.metadata.resource_version
                w = watch.Watch()  # type: ignore[no-untyped-call]
                for event in w.stream(  # type: ignore[no-untyped-call]
                    api.list_namespaced_config_map,
                    self.namespace,
                    field_selector=f"metadata.name={self.name}",
                    resource_version=version,
                    timeout_seconds=30,
                ):
                    failures = 0
                    if self._stop.is_set():
                        w.stop()  # type: ignore[no-untyped-call]
                        break
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._set(event["object"].data)
            except ApiException as exc:
                failures += 1
                if exc.status == 404:
                    log.warning(
                        "live ConfigMap %s/%s not found; keeping the last configuration",
                        self.namespace,
                        self.name,
                    )
                else:
                    log.warning("live ConfigMap watch: %s %s", exc.status, exc.reason)
            except Exception as exc:  # API unreachable: fail static, retry
                failures += 1
                log.warning("live ConfigMap watch failed (%s); retrying", exc)
            self._stop.wait(min(5.0, 0.2 * 2 ** min(failures, 5)))
