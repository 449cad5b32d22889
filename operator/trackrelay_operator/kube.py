"""Every Kubernetes call the operator makes, in one adapter (the official client, sync).

The handlers call these through ``asyncio.to_thread``. What the operator
touches, and so what its RBAC (``manifests/rbac/operator.yaml``) allows: the
pipelines and their status, the ConfigMap it manages, the Secret with the
Redis URL (read), the forwarder Deployment's scale subresource, HPAs (read, to
leave an HPA-managed Deployment alone) and Events.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
from typing import Any

from trackrelay.config.configmap import BUDGET, SHEDDING
from trackrelay.control.shedding import Shedding, live_form
from trackrelay_operator.spec import GROUP, PLURAL, VERSION

MANAGED_BY = "trackrelay-operator"


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339(at: float) -> str:
    """A Unix time as Kubernetes writes times (UTC, whole seconds)."""
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kube:
    def __init__(self, api_client: Any = None) -> None:
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
            api_client = client.ApiClient()
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.autoscaling = client.AutoscalingV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self._client = client

    # -- reads ------------------------------------------------------------------------

    def redis_url(self, namespace: str, secret: str, key: str) -> str:
        """The queue's Redis URL from a Secret; ``LookupError`` saying what is missing."""
        from kubernetes.client.exceptions import ApiException

        try:
            s = self.core.read_namespaced_secret(secret, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise LookupError(f"Secret {namespace}/{secret} not found") from None
            if exc.status == 403:  # a namespaced operator reads only the Secrets it was given
                raise LookupError(
                    f"Secret {namespace}/{secret}: 403 Forbidden, the operator may not read"
                    " it (grant get on it; with the chart: operator.secretNames)"
                ) from None
            raise
        raw = (s.data or {}).get(key)
        if raw is None:
            raise LookupError(f"Secret {namespace}/{secret} has no key {key!r}")
        return base64.b64decode(raw).decode()

    def hpa_for(self, namespace: str, deployment: str) -> str | None:
        """The HorizontalPodAutoscaler that scales this Deployment, if any."""
        for hpa in self.autoscaling.list_namespaced_horizontal_pod_autoscaler(namespace).items:
            ref = hpa.spec.scale_target_ref
            if ref.kind == "Deployment" and ref.name == deployment and hpa.metadata is not None:
                return str(hpa.metadata.name)
        return None

    def replicas(self, namespace: str, deployment: str) -> int:
        scale = self.apps.read_namespaced_deployment_scale(deployment, namespace)
        return int(scale.spec.replicas or 0) if scale.spec is not None else 0

    def configmap_data(self, namespace: str, name: str) -> dict[str, str] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            cm = self.core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(cm.data or {})

    # -- writes -----------------------------------------------------------------------

    def scale(self, namespace: str, deployment: str, replicas: int) -> None:
        self.apps.patch_namespaced_deployment_scale(
            deployment, namespace, {"spec": {"replicas": replicas}}
        )

    def ensure_configmap(
        self, namespace: str, name: str, initial: dict[str, str], owner: dict[str, Any]
    ) -> dict[str, str]:
        """The ConfigMap's data, created with ``initial`` if it does not exist.

        An existing ConfigMap keeps its values: after an operator restart the
        forwarders go on with their last configuration (fail static).
        """
        data = self.configmap_data(namespace, name)
        if data is not None:
            return data
        meta = self._client.V1ObjectMeta(
            name=name,
            labels={"app.kubernetes.io/managed-by": MANAGED_BY},
            owner_references=[
                self._client.V1OwnerReference(
                    api_version=f"{GROUP}/{VERSION}",
                    kind=owner["kind"],
                    name=owner["metadata"]["name"],
                    uid=owner["metadata"]["uid"],
                )
            ],
        )
        self.core.create_namespaced_config_map(
            namespace, self._client.V1ConfigMap(metadata=meta, data=initial)
        )
        return dict(initial)

    def write_configmap(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.core.patch_namespaced_config_map(name, namespace, {"data": data})

    def pipelines(self, namespace: str, selector: str) -> list[str]:
        listed: Any = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, label_selector=selector
        )
        return sorted(item["metadata"]["name"] for item in listed["items"])

    def delete_pipeline(self, namespace: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def release_finalizer(self, namespace: str, name: str, finalizer: str) -> bool:
        """Remove ``finalizer`` from a pipeline (kopf's, added for the daemon); False if absent."""
        from kubernetes.client.exceptions import ApiException

        try:
            obj: Any = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
            finalizers = list(obj["metadata"].get("finalizers") or [])
            if finalizer not in finalizers:
                return False
            rest = [f for f in finalizers if f != finalizer]
            version = obj["metadata"]["resourceVersion"]  # a change meanwhile: 409, not a loss
            body = {"metadata": {"finalizers": rest, "resourceVersion": version}}
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, body
            )
        except ApiException as exc:
            if exc.status in (404, 409, 422):  # gone, or changed meanwhile: nothing to hold
                return False
            raise
        return True

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status}
        )

    def event(self, owner: dict[str, Any], reason: str, message: str, kind: str = "Normal") -> str:
        """A new core/v1 Event on the pipeline (``kubectl describe`` shows it): its name."""
        meta = owner["metadata"]
        stamp = datetime.datetime.now(datetime.UTC)
        body = self._client.CoreV1Event(
            metadata=self._client.V1ObjectMeta(generate_name=f"{meta['name']}."),
            involved_object=self._client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}",
                kind=owner["kind"],
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta["uid"],
            ),
            reason=reason,
            message=message[:1024],
            type=kind,
            first_timestamp=stamp,
            last_timestamp=stamp,
            count=1,
            source=self._client.V1EventSource(component=MANAGED_BY),
            reporting_component=MANAGED_BY,
        )
        made = self.core.create_namespaced_event(meta["namespace"], body)
        return str(made.metadata.name)

    def bump_event(self, namespace: str, name: str, message: str, count: int) -> bool:
        """The Event ``name`` told again: its count, last time and message; False when
        it is gone (Events expire)."""
        from kubernetes.client.exceptions import ApiException

        body = {"count": count, "lastTimestamp": now_rfc3339(), "message": message[:1024]}
        try:
            self.core.patch_namespaced_event(name, namespace, body)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True


def live_data(budget: float, shedding: Shedding) -> dict[str, str]:
    """The ConfigMap data forwarders and relays read (``trackrelay.config.live``): the same
    decision gives the same data, so an unchanged decision is not written again."""
    return {
        BUDGET: f"{budget:g}",
        SHEDDING: json.dumps(live_form(shedding)),
    }
