"""A real Kubernetes control plane for tests: etcd + kube-apiserver (+ controller-manager).

The binaries come from the cache that ``tests/cluster/control-plane.sh`` fills.
Certificates are generated per run (tests/support/certs.py): a CA, the API server's
serving cert, an admin client cert in ``system:masters``; and the service-account
signing key.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.certs import CertificateAuthority
from trackrelay.runtime.ports import free_port

REPO = Path(__file__).resolve().parents[2]
CONTROL_PLANE_SCRIPT = REPO / "tests" / "cluster" / "control-plane.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm")


def cache_bin_dir() -> Path:
    override = os.environ.get("TRACKRELAY_K8S_BIN")
    if override:
        return Path(override)
    out = subprocess.run(
        ["bash", str(CONTROL_PLANE_SCRIPT), "--print"], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def missing_binaries(bindir: Path) -> list[str]:
    return [b for b in BINARIES if not os.access(bindir / b, os.X_OK)]


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )


class ControlPlane:
    """etcd + kube-apiserver on free loopback ports, in ``workdir``."""

    def __init__(self, bindir: Path, workdir: Path) -> None:
        self.bindir = bindir
        self.workdir = workdir
        self.pki = workdir / "pki"
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.api_port = free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.kubeconfig = workdir / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        """Environment for kubectl/helm child processes: our binaries and kubeconfig."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bindir}:{os.environ.get('PATH', '')}",
            "HELM_CACHE_HOME": str(self.workdir / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(self.workdir / "helm" / "config"),
            "HELM_DATA_HOME": str(self.workdir / "helm" / "data"),
        }

    # --- certificates --------------------------------------------------------

    def make_pki(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        ca = CertificateAuthority("trackrelay-test-ca")
        (self.pki / "ca.crt").write_bytes(ca.cert)
        api = ca.issue(
            ["localhost", "kubernetes", "kubernetes.default.svc"],
            ["127.0.0.1", "10.0.0.1"],
            common_name="kube-apiserver",
        )
        (self.pki / "apiserver.crt").write_bytes(api.cert)
        (self.pki / "apiserver.key").write_bytes(api.key)
        admin = ca.issue(common_name="admin", organization="system:masters", client=True)
        (self.pki / "admin.crt").write_bytes(admin.cert)
        (self.pki / "admin.key").write_bytes(admin.key)

        sa_key = _key()
        _write_key(self.pki / "sa.key", sa_key)
        (self.pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self.kubeconfig.write_text(yaml.safe_dump(self._kubeconfig()))

    def _kubeconfig(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.pki / "ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate": str(self.pki / "admin.crt"),
                        "client-key": str(self.pki / "admin.key"),
                    },
                }
            ],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
            "current-context": "test",
        }

    # --- processes -------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [str(self.bindir / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self, timeout: float = 90.0) -> ControlPlane:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.make_pki()
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        self._spawn(
            "etcd",
            [
                "--name",
                "default",
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"default={peer}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )
        p = self.pki
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={client}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=0",
            ],
        )
        self._wait_ready(timeout)
        return self

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ctx = self._ssl_context()
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    tail = (self.workdir / f"{name}.log").read_text()[-3000:]
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.25)
        raise RuntimeError(f"kube-apiserver not ready after {timeout}s: {last}")

    def start_controller_manager(self) -> None:
        if "kube-controller-manager" in self.processes:
            return
        p = self.pki
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                f"--service-account-private-key-file={p / 'sa.key'}",
                f"--root-ca-file={p / 'ca.crt'}",
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                "--controllers=*,-nodeipam,-nodelifecycle,-service,-route,-cloud-node-lifecycle",
                "--v=0",
            ],
        )

    def kubectl(
        self, *args: str, check: bool = False, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bindir / "kubectl"), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            check=check,
            input=stdin,
            timeout=60,
        )

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bindir / "helm"), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.processes.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
