#!/usr/bin/env bash
# A one-node kind cluster whose every image is built on this machine: no
# container registry is ever contacted.
#
#   tests/e2e/kind-cluster.sh build    build (once, cached) the tools, images and node image
#   tests/e2e/kind-cluster.sh up       build, then create the cluster unless it is running
#   tests/e2e/kind-cluster.sh down     delete the cluster and its podman network
#   tests/e2e/kind-cluster.sh app-images   build trackrelay's image (../../Dockerfile), and
#                                      PostgreSQL, Redis and Prometheus images, from Debian;
#                                      load them into the running cluster with `kind load image-archive`
#   tests/e2e/kind-cluster.sh env      print KUBECONFIG=..., KIND=..., PATH additions (for eval)
#   tests/e2e/kind-cluster.sh --print  print the cache directory
#
# What is built, from where:
#   - kind, crictl, the CNI plugins and CoreDNS: `go install` from the Go module proxy;
#   - kubelet, kubeadm, kube-scheduler, kube-proxy: tests/cluster/control-plane.sh
#     --node-binaries, from the same k8s.io/kubernetes pins as the control plane
#     of the cluster tests (whose etcd, kube-apiserver, kube-controller-manager
#     and kubectl are reused);
#   - pause: Kubernetes' own pause.c from the pinned module, with gcc;
#   - kube-network-policies, the NetworkPolicy engine: its module's source with
#     netpol/nfqueue-xt-target.patch, `go build`, as a one-binary image that `up` loads
#     and runs as a DaemonSet (netpol/engine.yaml);
#   - two Debian root filesystems with mmdebstrap: the node's (systemd,
#     containerd, runc, iptables, ...; what kind's base image holds) and a slim
#     one (python3, iptables) under kube-proxy and the test images;
#   - the base image (rootfs + kind's base files + crictl + CNI plugins), then
#     the node image (base + Kubernetes binaries + every image kubeadm needs,
#     imported into containerd at boot, so nothing is pulled).
#
# Runs as root with podman (kind's podman provider). The cache lives outside the
# repository: ${TRACKRELAY_E2E_CACHE:-~/.cache/trackrelay/e2e}/<release>-kind-<version>.
set -euo pipefail

KIND_VERSION=v0.33.0
CRICTL_VERSION=v1.37.0
CNI_VERSION=v1.10.0
COREDNS_VERSION=v1.13.1
# the NetworkPolicy engine (kindnet's is the same code, built into kindnetd)
KNP_VERSION=v0.8.0
DEBIAN_SUITE=bookworm
# what kubeadm v1.35 asks for (`kubeadm config images list`); containerd 1.6's
# default sandbox image is pause:3.10, kind's config pins that too.
ETCD_TAG=3.6.6-0
PAUSE_TAGS="3.10.1 3.10"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
control_plane="$repo/tests/cluster/control-plane.sh"
K8S_RELEASE=$("$control_plane" --release)
cache="${TRACKRELAY_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trackrelay/e2e}/$K8S_RELEASE-kind-$KIND_VERSION"
bin="$cache/bin"
CLUSTER=${TRACKRELAY_E2E_CLUSTER:-trackrelay-e2e}
BASE_IMAGE=localhost/trackrelay/kind-base:$KIND_VERSION
NODE_IMAGE=localhost/trackrelay/kind-node:$K8S_RELEASE
SLIM_IMAGE=localhost/trackrelay/debian-slim:$DEBIAN_SUITE
kubeconfig="$cache/kubeconfig"
export KIND_EXPERIMENTAL_PROVIDER=podman
# a network of our own, so that `down` never removes a network someone else uses
export KIND_EXPERIMENTAL_PODMAN_NETWORK=$CLUSTER

log() { echo "e2e-cluster: $*"; }
die() { echo "e2e-cluster: error: $*" >&2; exit 1; }
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }

# A step runs unless its stamp holds the same inputs (versions and this script).
script_sum=$(cat "${BASH_SOURCE[0]}" "$here/kind.yaml" | sha256sum | cut -c1-16)
done_already() { [ -f "$cache/.stamp-$1" ] && [ "$(cat "$cache/.stamp-$1")" = "$2" ]; }
mark_done() { echo "$2" > "$cache/.stamp-$1"; }

preflight() {
  [ "$(id -u)" = 0 ] || die "run as root: kind's podman provider needs rootful podman"
  local tool
  for tool in podman mmdebstrap gcc go patch; do
    command -v "$tool" >/dev/null || die "'$tool' is not installed: run tests/setup.sh --e2e"
  done
  # kind mounts /lib/modules into the node; this kernel may have none
  mkdir -p /lib/modules
  # podman's default ulimits exceed this host's (nofile, nproc), and crun refuses
  # its hybrid cgroups: tests/setup.sh --e2e writes both settings and proves them
  local conf=/etc/containers/containers.conf
  grep -qs '^default_ulimits' "$conf" && grep -qsE '^runtime *= *"runc"' "$conf" ||
    die "$conf lacks podman's runc runtime or this host's ulimits: run tests/setup.sh --e2e"
}

build_tools() {
  local want="kind=$KIND_VERSION crictl=$CRICTL_VERSION cni=$CNI_VERSION coredns=$COREDNS_VERSION"
  done_already tools "$want" && return
  local t0; t0=$(date +%s)
  log "building kind, crictl, CNI plugins and CoreDNS from the Go module proxy ..."
  mkdir -p "$bin/cni"
  (
    export CGO_ENABLED=0 GOFLAGS=-trimpath
    GOBIN="$bin" go install "sigs.k8s.io/kind@$KIND_VERSION"
    GOBIN="$bin" go install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
    GOBIN="$bin" go install "github.com/coredns/coredns@$COREDNS_VERSION"
    local p
    for p in ptp host-local loopback portmap; do
      case $p in host-local) path=ipam/host-local ;; portmap) path=meta/portmap ;; *) path=main/$p ;; esac
      GOBIN="$bin/cni" go install "github.com/containernetworking/plugins/plugins/$path@$CNI_VERSION"
    done
  )
  mark_done tools "$want"
  log "tools built in $(elapsed "$t0")"
}

build_kubernetes() {
  local want; want="$K8S_RELEASE $(sha256sum "$repo/tests/cluster/tools/k8s/go.sum" | cut -c1-16)"
  "$control_plane"  # etcd, kube-apiserver, kube-controller-manager, kubectl (cached)
  done_already kubernetes "$want" && return
  local t0; t0=$(date +%s)
  log "building kubelet, kubeadm, kube-scheduler, kube-proxy $K8S_RELEASE ..."
  "$control_plane" --node-binaries "$bin/k8s"
  mark_done kubernetes "$want"
  log "Kubernetes node binaries built in $(elapsed "$t0")"
}

build_pause() {
  done_already pause "$K8S_RELEASE" && return
  local src; src="$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_RELEASE/build/pause/linux/pause.c"
  [ -f "$src" ] || (cd "$repo/tests/cluster/tools/k8s" && GOFLAGS=-mod=mod go mod download k8s.io/kubernetes)
  gcc -Os -Wall -Werror -static -DVERSION="v3.10.1-trackrelay" -o "$bin/pause" "$src"
  mark_done pause "$K8S_RELEASE"
  log "pause built from $src"
}

rootfs() { # name, variant, packages (comma separated)[, essential hook; $0 = name[, paths dpkg leaves out]]
  local name=$1 variant=$2 packages=$3 hook=${4:-} excludes=${5:-} out="$cache/rootfs-$1.tar"
  hook=${hook//\$0/$1}
  local want="$DEBIAN_SUITE $variant $packages${hook:+ $hook}${excludes:+ $excludes}"
  done_already "rootfs-$name" "$want" && return
  local t0; t0=$(date +%s)
  log "making the $name Debian root filesystem ($DEBIAN_SUITE, $variant) with mmdebstrap ..."
  local hooks=(--customize-hook='chroot "$1" apt-get clean')
  [ -n "$hook" ] && hooks+=(--essential-hook="$hook")
  local path paths; read -ra paths <<<"$excludes"  # split on spaces, never globbed
  for path in "${paths[@]}"; do hooks+=(--dpkgopt="path-exclude=$path"); done
  mmdebstrap --quiet --variant="$variant" --include="$packages" "${hooks[@]}" \
    "$DEBIAN_SUITE" "$cache/rootfs-$name.partial.tar"  # mmdebstrap picks the format by suffix
  mv "$cache/rootfs-$name.partial.tar" "$out"
  mark_done "rootfs-$name" "$want"
  log "$name root filesystem made in $(elapsed "$t0")"
}

# podman import of a directory, then `podman save` of the result into $cache/images
import_dir() { # dir, image, podman import --change args...
  local dir=$1 image=$2; shift 2
  tar -C "$dir" -cf "$dir.tar" .
  podman import -q "$@" "$dir.tar" "$image" >/dev/null
  rm -f "$dir.tar"
}
save_image() { # image, archive name
  mkdir -p "$cache/images"
  rm -f "$cache/images/$2.tar"
  podman save -q -o "$cache/images/$2.tar" "$1"
}

# one static binary and an /etc/passwd: the control-plane images
binary_image() { # image, binary, path in the image, entrypoint ("" for none)
  local image=$1 binary=$2 path=$3 entrypoint=$4 dir
  dir=$(mktemp -d "$cache/img.XXXXXX")
  mkdir -p "$dir/$(dirname "$path")" "$dir/tmp" "$dir/etc"
  chmod 1777 "$dir/tmp"
  install -m755 "$binary" "$dir/$path"
  echo "root:x:0:0:root:/root:/bin/sh" > "$dir/etc/passwd"
  echo "nobody:x:65534:65534:nobody:/nonexistent:/bin/sh" >> "$dir/etc/passwd"
  local change=(--change "ENV PATH=/usr/local/bin:/usr/bin:/bin")
  [ -n "$entrypoint" ] && change+=(--change "ENTRYPOINT $entrypoint")
  import_dir "$dir" "$image" "${change[@]}"
  rm -rf "$dir"
}

build_images() {
  local want="$script_sum $(cat "$cache"/.stamp-kubernetes "$cache"/.stamp-tools "$cache"/.stamp-rootfs-slim)"
  done_already images "$want" && return
  local t0 cp; t0=$(date +%s)
  cp=$("$control_plane" --print)
  log "building the images kubeadm needs ..."
  local tag
  for tag in $PAUSE_TAGS; do
    binary_image "registry.k8s.io/pause:$tag" "$bin/pause" /pause '["/pause"]'
    save_image "registry.k8s.io/pause:$tag" "pause-$tag"
  done
  binary_image "registry.k8s.io/kube-apiserver:$K8S_RELEASE" "$cp/kube-apiserver" /usr/local/bin/kube-apiserver ""
  save_image "registry.k8s.io/kube-apiserver:$K8S_RELEASE" kube-apiserver
  binary_image "registry.k8s.io/kube-controller-manager:$K8S_RELEASE" "$cp/kube-controller-manager" /usr/local/bin/kube-controller-manager ""
  save_image "registry.k8s.io/kube-controller-manager:$K8S_RELEASE" kube-controller-manager
  binary_image "registry.k8s.io/kube-scheduler:$K8S_RELEASE" "$bin/k8s/kube-scheduler" /usr/local/bin/kube-scheduler ""
  save_image "registry.k8s.io/kube-scheduler:$K8S_RELEASE" kube-scheduler
  binary_image "registry.k8s.io/etcd:$ETCD_TAG" "$cp/etcd" /usr/local/bin/etcd ""
  save_image "registry.k8s.io/etcd:$ETCD_TAG" etcd
  binary_image "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" "$bin/coredns" /coredns '["/coredns"]'
  save_image "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" coredns
  # the slim Debian image (python3, iptables) for tests, and kube-proxy on it
  podman import -q --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "$cache/rootfs-slim.tar" "$SLIM_IMAGE" >/dev/null
  local dir; dir=$(mktemp -d "$cache/img.XXXXXX")
  tar -C "$dir" -xf "$cache/rootfs-slim.tar"
  install -m755 "$bin/k8s/kube-proxy" "$dir/usr/local/bin/kube-proxy"
  import_dir "$dir" "registry.k8s.io/kube-proxy:$K8S_RELEASE" \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  rm -rf "$dir"
  save_image "registry.k8s.io/kube-proxy:$K8S_RELEASE" kube-proxy
  mark_done images "$want"
  log "images built in $(elapsed "$t0")"
}

build_node() {
  local want="$script_sum $(cat "$cache"/.stamp-images "$cache"/.stamp-rootfs-node)"
  if done_already node "$want" && podman image exists "$NODE_IMAGE"; then return; fi
  local t0 kind_files cp root; t0=$(date +%s)
  kind_files="$(go env GOMODCACHE)/sigs.k8s.io/kind@$KIND_VERSION/images/base/files"
  [ -d "$kind_files" ] || die "kind's base files are missing from the Go module cache: $kind_files"
  cp=$("$control_plane" --print)
  root="$cache/node-root"
  rm -rf "$root"; mkdir -p "$root"
  log "assembling the base image $BASE_IMAGE ..."
  tar -C "$root" -xf "$cache/rootfs-node.tar"
  # kind's base image: its entrypoint, units, containerd config and hooks
  cp -r "$kind_files/." "$root/"
  chmod 755 "$root/kind" "$root/kind/bin" "$root/kind/bin/"* "$root/usr/local/bin/"*
  # containerd and runc come from Debian, where kind's units look for them
  ln -sf /usr/bin/containerd "$root/usr/local/bin/containerd"
  ln -sf /usr/bin/containerd-shim-runc-v2 "$root/usr/local/bin/containerd-shim-runc-v2"
  ln -sf /usr/bin/ctr "$root/usr/local/bin/ctr"
  ln -sf /usr/sbin/runc "$root/usr/local/sbin/runc"
  install -m755 "$bin/crictl" "$root/usr/local/bin/"
  mkdir -p "$root/opt/cni/bin" "$root/etc/cni/net.d" "$root/etc/kubernetes/manifests"
  install -m755 "$bin"/cni/* "$root/opt/cni/bin/"
  # This machine has no CAP_SYS_RESOURCE anywhere, so no process may lower its
  # oom_score_adj; the kubelet asks -998 for every pod sandbox, which runc fails
  # with "can't get final child's PID from pipe: EOF". containerd's
  # restrict_oom_score_adj clamps the request (kind sets it for rootless).
  # cgroup v1 here: cgroupfs for containerd as for the kubelet (kind.yaml).
  sed -i -e 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' \
         -e 's/SystemdCgroup = true/SystemdCgroup = false/' \
    "$root/etc/containerd/config.toml"
  # one-node pod network: the ptp plugin and host-local addresses from the pod subnet
  cat > "$root/etc/cni/net.d/10-trackrelay-ptp.conflist" <<'CNI'
{"cniVersion": "0.3.1", "name": "trackrelay-ptp", "plugins": [
  {"type": "ptp", "ipMasq": false, "mtu": 1500,
   "ipam": {"type": "host-local", "dataDir": "/run/cni-ipam-state",
            "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": "10.244.0.0/24"}]]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
CNI
  chroot "$root" /bin/sh -ec '
    find /lib/systemd/system/sysinit.target.wants/ -name "systemd-tmpfiles-setup.service" -delete
    rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
          /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
          /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*
    echo "ReadKMsg=no" >> /etc/systemd/journald.conf
    ln -sf /usr/lib/systemd/systemd /sbin/init
    ctr oci spec \
      | jq ".hooks.createContainer[.hooks.createContainer | length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" \
      | jq "del(.process.rlimits)" > /etc/containerd/cri-base.json
    systemctl enable containerd.service undo-mount-hacks.service >/dev/null 2>&1
    systemctl mask systemd-binfmt.service >/dev/null 2>&1'
  local systemd_changes=(--change 'ENV container=docker' --change 'STOPSIGNAL SIGRTMIN+3'
                         --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]')
  import_dir "$root" "$BASE_IMAGE" "${systemd_changes[@]}"
  log "assembling the node image $NODE_IMAGE ..."
  install -m755 "$bin/k8s/kubelet" "$bin/k8s/kubeadm" "$cp/kubectl" "$root/usr/bin/"
  echo "$K8S_RELEASE" > "$root/kind/version"
  mkdir -p "$root/kind/images"
  cp "$cache"/images/*.tar "$root/kind/images/"
  # kind's node images hold their images in containerd's store; ours are
  # imported once, at the node's first boot, before the kubelet starts
  cat > "$root/etc/systemd/system/kind-images.service" <<'UNIT'
[Unit]
Description=Import the preloaded Kubernetes images into containerd
After=containerd.service
Requires=containerd.service
Before=kubelet.service
ConditionPathExists=!/var/lib/kind-images-imported
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -ec 'for f in /kind/images/*.tar; do ctr -n k8s.io images import --all-platforms "$f"; done; touch /var/lib/kind-images-imported'
[Install]
WantedBy=multi-user.target
UNIT
  chroot "$root" systemctl enable kubelet.service kind-images.service >/dev/null 2>&1
  import_dir "$root" "$NODE_IMAGE" "${systemd_changes[@]}"
  rm -rf "$root"
  mark_done node "$want"
  log "base and node images built in $(elapsed "$t0")"
}

build() {
  preflight
  mkdir -p "$cache" "$bin"
  local t0; t0=$(date +%s)
  build_tools
  build_kubernetes
  build_pause
  rootfs node minbase "systemd,dbus,containerd,runc,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,bash,ca-certificates,curl,jq,procps"
  rootfs slim minbase "python3,python3-venv,iptables,conntrack,ca-certificates"
  build_images
  build_node
  log "everything built or cached in $(elapsed "$t0") (cache: $cache)"
}

# The chart's images, for the e2e tier: trackrelay's own Dockerfile on the slim
# Debian image (the official Python image cannot be pulled here), and PostgreSQL
# and Redis from Debian's packages, each run as uid 999 like the official images;
# and Prometheus from Debian's package (uid 999 too), which the e2e runs in the
# cluster to scrape the simulator (tests/e2e/prometheus.yaml).
APP_TAG=e2e
TRACKRELAY_IMAGE=localhost/trackrelay/trackrelay:$APP_TAG
POSTGRES_IMAGE=localhost/trackrelay/postgres:15-bookworm
REDIS_IMAGE=localhost/trackrelay/redis:7-bookworm
PROMETHEUS_IMAGE=localhost/trackrelay/prometheus:2-bookworm
app_images() {
  build
  cluster_exists || die "cluster $CLUSTER is not running: run '$0 up' first"
  local t0; t0=$(date +%s)
  # the service user exists before its package installs, so the package keeps uid 999
  local uid999='echo "$0:x:999:999:$0:/var/lib/$0:/usr/sbin/nologin" >> "$1/etc/passwd"; echo "$0:x:999:" >> "$1/etc/group"'
  rootfs postgres minbase "postgresql-15" "$uid999"
  rootfs redis minbase "redis-server" "$uid999"
  # without the web console's JavaScript (218 MB of time zones), documentation and
  # translations: the e2e asks Prometheus' HTTP API only
  rootfs prometheus minbase "prometheus" "$uid999" \
    "/usr/share/javascript/* /usr/share/doc/* /usr/share/man/* /usr/share/locale/*"
  # SIGINT stops PostgreSQL at once (fast shutdown), as the official image's STOPSIGNAL
  # does; SIGTERM would wait for every pooled connection to close
  local bases; bases="$(cat "$cache"/.stamp-rootfs-postgres "$cache"/.stamp-rootfs-redis) stop-sigint"
  if ! done_already app-base "$bases"; then
    podman import -q --change "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/bin:/usr/bin:/bin" \
      --change "USER 999" --change "STOPSIGNAL SIGINT" \
      "$cache/rootfs-postgres.tar" "$POSTGRES_IMAGE" >/dev/null
    podman import -q --change "ENV PATH=/usr/local/bin:/usr/bin:/bin" --change "USER 999" \
      "$cache/rootfs-redis.tar" "$REDIS_IMAGE" >/dev/null
    save_image "$POSTGRES_IMAGE" app-postgres
    save_image "$REDIS_IMAGE" app-redis
    mark_done app-base "$bases"
  fi
  if ! done_already app-prometheus "$(cat "$cache"/.stamp-rootfs-prometheus)"; then
    # the Debian package's binary; its data and configuration are the pod's volumes
    podman import -q --change "ENV PATH=/usr/local/bin:/usr/bin:/bin" --change "USER 999" \
      --change "WORKDIR /var/lib/prometheus" --change 'ENTRYPOINT ["/usr/bin/prometheus"]' \
      "$cache/rootfs-prometheus.tar" "$PROMETHEUS_IMAGE" >/dev/null
    save_image "$PROMETHEUS_IMAGE" app-prometheus
    mark_done app-prometheus "$(cat "$cache"/.stamp-rootfs-prometheus)"
  fi
  log "building $TRACKRELAY_IMAGE from the Dockerfile on $SLIM_IMAGE ..."
  local secret=()
  # a TLS-intercepting proxy's CA, for pip inside the build (a build secret: not in the image)
  [ -f /etc/ssl/certs/ca-certificates.crt ] && secret=(--secret id=ca,src=/etc/ssl/certs/ca-certificates.crt)
  podman build -q --pull=never --build-arg "BASE_IMAGE=$SLIM_IMAGE" "${secret[@]}" \
    -t "$TRACKRELAY_IMAGE" "$repo" >/dev/null
  save_image "$TRACKRELAY_IMAGE" app-trackrelay
  local name
  for name in app-postgres app-redis app-prometheus app-trackrelay; do
    "$bin/kind" load image-archive "$cache/images/$name.tar" --name "$CLUSTER" >/dev/null
  done
  log "app images built and loaded in $(elapsed "$t0"): $TRACKRELAY_IMAGE $POSTGRES_IMAGE $REDIS_IMAGE $PROMETHEUS_IMAGE"
}

# kube-network-policies, the NetworkPolicy engine of the e2e cluster (the ptp CNI
# enforces none): its module's source with netpol/nfqueue-xt-target.patch (this
# kernel has no nft_queue), as a one-binary image, run as a DaemonSet.
KNP_PATCH="$here/netpol/nfqueue-xt-target.patch"
KNP_IMAGE=localhost/trackrelay/kube-network-policies:$KNP_VERSION-$(sha256sum "$KNP_PATCH" | cut -c1-12)
build_network_policies() {
  local patch=$KNP_PATCH
  local want; want="$KNP_VERSION $(sha256sum "$patch" | cut -c1-16)"
  if ! done_already knp "$want" || [ ! -x "$bin/kube-network-policies" ]; then
    local t0 src dir; t0=$(date +%s)
    log "building kube-network-policies $KNP_VERSION from the Go module proxy, patched ..."
    src=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kube-network-policies@$KNP_VERSION" |
          python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
    dir="$cache/knp-src"
    rm -rf "$dir"; cp -r "$src" "$dir"; chmod -R u+w "$dir"
    patch -s -d "$dir" -p1 < "$patch"
    (cd "$dir" && CGO_ENABLED=0 GOFLAGS="-trimpath -mod=mod" go build -ldflags=-s -o "$bin/kube-network-policies" ./cmd)
    rm -rf "$dir"
    mark_done knp "$want"
    log "kube-network-policies built in $(elapsed "$t0")"
  fi
  if ! done_already knp-image "$want" || ! podman image exists "$KNP_IMAGE"; then
    binary_image "$KNP_IMAGE" "$bin/kube-network-policies" /bin/netpol '["/bin/netpol"]'
    save_image "$KNP_IMAGE" knp
    mark_done knp-image "$want"
  fi
}

network_policies() {
  build_network_policies
  "$bin/kind" load image-archive "$cache/images/knp.tar" --name "$CLUSTER" >/dev/null
  sed "s#@IMAGE@#$KNP_IMAGE#" "$here/netpol/engine.yaml" | kubectl_ apply -f - >/dev/null
  kubectl_ -n kube-system rollout status daemonset/kube-network-policies --timeout=180s >/dev/null
  log "NetworkPolicies enforced by kube-network-policies $KNP_VERSION"
}

cluster_exists() { "$bin/kind" get clusters 2>/dev/null | grep -qx "$CLUSTER"; }

kubectl_() { "$("$control_plane" --print)/kubectl" --kubeconfig "$kubeconfig" "$@"; }

# CoreDNS answers for the cluster only: the forward plugin (to the node's
# resolv.conf, hence to the outside world) is removed, so no query leaves.
coredns_cluster_only() {
  local corefile
  corefile=$(kubectl_ -n kube-system get configmap coredns -o jsonpath='{.data.Corefile}')
  if ! grep -q 'forward ' <<<"$corefile"; then return; fi
  python3 - "$corefile" > "$cache/Corefile" <<'PY'
import re, sys
print(re.sub(r"\n\s*forward [^\n{]*(\{[^}]*\})?", "", sys.argv[1]))
PY
  kubectl_ -n kube-system create configmap coredns --from-file=Corefile="$cache/Corefile" \
    --dry-run=client -o yaml | kubectl_ replace -f - >/dev/null
  kubectl_ -n kube-system rollout restart deployment/coredns >/dev/null
}

up() {
  build
  if cluster_exists; then
    log "cluster $CLUSTER exists"
    podman start "$CLUSTER-control-plane" >/dev/null
  else
    local t0; t0=$(date +%s)
    log "creating cluster $CLUSTER from $NODE_IMAGE ..."
    "$bin/kind" create cluster --name "$CLUSTER" --image "$NODE_IMAGE" \
      --config "$here/kind.yaml" --kubeconfig "$kubeconfig" --wait 180s
    log "cluster created in $(elapsed "$t0")"
  fi
  "$bin/kind" get kubeconfig --name "$CLUSTER" > "$kubeconfig"
  coredns_cluster_only
  kubectl_ wait --for=condition=Ready node --all --timeout=180s >/dev/null
  kubectl_ -n kube-system rollout status deployment/coredns --timeout=180s >/dev/null
  network_policies
  log "cluster $CLUSTER ready; export KUBECONFIG=$kubeconfig"
}

down() {
  if [ -x "$bin/kind" ] && cluster_exists; then
    "$bin/kind" delete cluster --name "$CLUSTER"
  fi
  # kind leaves its network behind by design; this one is ours alone
  if podman network exists "$CLUSTER" 2>/dev/null; then podman network rm "$CLUSTER" >/dev/null; fi
  log "cluster $CLUSTER and network $CLUSTER removed"
}

case "${1:-}" in
  build) build ;;
  up) up ;;
  down) down ;;
  app-images) app_images ;;
  env)
    echo "KUBECONFIG=$kubeconfig"
    echo "KIND=$bin/kind"
    echo "KIND_CLUSTER=$CLUSTER"
    echo "KIND_NODE_IMAGE=$NODE_IMAGE"
    echo "E2E_SLIM_IMAGE=$SLIM_IMAGE"
    echo "E2E_CACHE=$cache"
    echo "E2E_TRACKRELAY_IMAGE=$TRACKRELAY_IMAGE"
    echo "E2E_POSTGRES_IMAGE=$POSTGRES_IMAGE"
    echo "E2E_REDIS_IMAGE=$REDIS_IMAGE"
    echo "E2E_PROMETHEUS_IMAGE=$PROMETHEUS_IMAGE"
    echo "KUBECTL=$("$control_plane" --print)/kubectl"
    echo "KIND_EXPERIMENTAL_PROVIDER=$KIND_EXPERIMENTAL_PROVIDER"
    echo "KIND_EXPERIMENTAL_PODMAN_NETWORK=$KIND_EXPERIMENTAL_PODMAN_NETWORK"
    ;;
  --print) echo "$cache" ;;
  *) echo "usage: $0 build|up|down|app-images|env|--print" >&2; exit 2 ;;
esac
