#!/usr/bin/env bash
# Build the Kubernetes control-plane binaries used by the cluster tests
# (etcd, kube-apiserver, kube-controller-manager, kubectl, helm) from the Go
# module proxy, once, into a cache outside the repository.
#
#   tests/cluster/control-plane.sh          build unless the stamp is present
#   tests/cluster/control-plane.sh --print  print the bin directory and exit
#   tests/cluster/control-plane.sh --release  print the pinned Kubernetes release
#   tests/cluster/control-plane.sh --node-binaries DIR
#       build the node components (kubelet, kubeadm, kube-scheduler,
#       kube-proxy) from the same pins into DIR (used by tests/e2e/)
#
# Versions are pinned by tests/cluster/tools/{k8s,helm}/go.mod and go.sum.
set -euo pipefail

K8S_RELEASE=v1.35.4
HELM_RELEASE=v3.19.0
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${TRACKRELAY_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trackrelay/k8s}
bin="$cache_root/$K8S_RELEASE-helm-$HELM_RELEASE/bin"
stamp="$bin/.stamp"
want="k8s=$K8S_RELEASE helm=$HELM_RELEASE sum=$(cat "$here"/tools/k8s/go.sum "$here"/tools/helm/go.sum | sha256sum | cut -c1-16)"

if [ "${1:-}" = "--print" ]; then echo "$bin"; exit 0; fi
if [ "${1:-}" = "--release" ]; then echo "$K8S_RELEASE"; exit 0; fi

# one build at a time: a second caller waits, then finds the stamp
mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9
if [ "${1:-}" != "--node-binaries" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "control-plane: cached binaries in $bin (delete $stamp to rebuild)"
  exit 0
fi

command -v go >/dev/null || { echo "control-plane: 'go' is not on PATH; install Go >= 1.25" >&2; exit 1; }
export CGO_ENABLED=0 GOFLAGS=-mod=mod
ldflags="-s -w"
k8s_ldflags="$ldflags -X k8s.io/component-base/version.gitVersion=$K8S_RELEASE -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=35 -X k8s.io/client-go/pkg/version.gitVersion=$K8S_RELEASE"

build() { # name, module dir, package, extra ldflags[, output dir]
  local name=$1 dir=$2 pkg=$3 flags=$4 out=${5:-$bin} t0
  t0=$(date +%s)
  echo "control-plane: building $name ($pkg) ..."
  (cd "$here/tools/$dir" && go build -trimpath -ldflags "$flags" -o "$out/$name.tmp" "$pkg")
  mv "$out/$name.tmp" "$out/$name"
  echo "control-plane: built $name in $(( $(date +%s) - t0 ))s"
}

if [ "${1:-}" = "--node-binaries" ]; then
  out=${2:?usage: control-plane.sh --node-binaries DIR}
  mkdir -p "$out"
  for name in kubelet kubeadm kube-scheduler kube-proxy; do
    build "$name" k8s "k8s.io/kubernetes/cmd/$name" "$k8s_ldflags" "$out"
  done
  exit 0
fi

mkdir -p "$bin"
total0=$(date +%s)
build etcd k8s ./cmd/etcd "$ldflags"
build kube-apiserver k8s k8s.io/kubernetes/cmd/kube-apiserver "$k8s_ldflags"
build kube-controller-manager k8s k8s.io/kubernetes/cmd/kube-controller-manager "$k8s_ldflags"
build kubectl k8s k8s.io/kubernetes/cmd/kubectl "$k8s_ldflags"
build helm helm helm.sh/helm/v3/cmd/helm "$ldflags -X helm.sh/helm/v3/internal/version.version=$HELM_RELEASE"
echo "$want" > "$stamp"
echo "control-plane: all binaries built in $(( $(date +%s) - total0 ))s into $bin"
