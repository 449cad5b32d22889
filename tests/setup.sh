#!/usr/bin/env bash
# Make this machine able to run the test suites, once, and say what it did.
# `make test`, `make test-e2e` and `.ci/run` all call it; a second call finds
# everything in place and returns at once.
#
#   tests/setup.sh          what `make test` needs: redis-server, the PostgreSQL
#                           server, Chromium, promtool, Go, and the Kubernetes
#                           control-plane binaries (built once, cached)
#   tests/setup.sh --e2e    the same, plus what `make test-e2e` needs: podman with
#                           the runc runtime and this host's ulimits, mmdebstrap,
#                           gcc and libc6-dev; then one `podman run` proves that
#                           a privileged container starts here
#   tests/setup.sh --check  change nothing: list what is missing and exit 1 if anything is
#
# On Debian or Ubuntu as root, missing system packages are installed with
# apt-get. Anywhere else it stops before any test runs, naming each missing
# piece and the command that brings it: a missing prerequisite is an error,
# never a skipped test.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
e2e=false check=false
for arg in "$@"; do
  case $arg in
    --e2e) e2e=true ;;
    --check) check=true ;;
    *) echo "usage: tests/setup.sh [--e2e] [--check]" >&2; exit 2 ;;
  esac
done

log() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }
t_start=$(date +%s)

# ---- system packages: "what is checked | Debian package" -------------------
have_initdb() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }
missing=()
need() { local pkg=$1; shift; "$@" >/dev/null 2>&1 || missing+=("$pkg"); }
has() { command -v "$1"; }
need redis-server has redis-server
need postgresql have_initdb
need util-linux has runuser              # PostgreSQL runs as the postgres user under root
need chromium test -x /usr/lib/chromium/chromium   # the demo report's browser test
need prometheus sh -c 'command -v promtool && command -v prometheus'   # alert rules; health from metrics
if $e2e; then
  need podman has podman
  need netavark has netavark
  need aardvark-dns has aardvark-dns
  need iptables has iptables
  need runc test -x /usr/sbin/runc       # crun refuses this kind of host's hybrid cgroups
  need mmdebstrap has mmdebstrap
  need gcc has gcc                       # the static pause binary
  need libc6-dev test -f /usr/lib/x86_64-linux-gnu/libc.a
  need patch has patch                   # the NetworkPolicy engine's source (tests/e2e/netpol)
fi

debian_root() { [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null; }

if [ ${#missing[@]} -gt 0 ]; then
  if $check; then
    echo "setup: install with: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
  elif debian_root; then
    log "installing ${missing[*]} (apt-get) ..."
    t0=$(date +%s)
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts the packaged servers on install; the tests start their own.
    for svc in postgresql redis-server prometheus prometheus-node-exporter; do
      service "$svc" stop >/dev/null 2>&1 || true
    done
    log "installed in $(( $(date +%s) - t0 ))s"
    missing=()
  elif [ -f /etc/debian_version ]; then
    die "the tests need these Debian packages: ${missing[*]}
  run as root: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}
  then run this again"
  else
    die "the tests need: ${missing[*]} (Debian package names): Redis >= 6.2 (redis-server),
  the PostgreSQL server (initdb, pg_ctl), Chromium (/usr/lib/chromium/chromium),
  promtool and prometheus (Prometheus)$($e2e && echo ', and for e2e rootful podman with runc, mmdebstrap, gcc with a static libc')
  install them with this system's package manager, then run this again"
  fi
fi

if ! command -v go >/dev/null; then
  $check && { echo "setup: missing Go >= 1.25 (builds the control-plane binaries)"; exit 1; }
  die "Go >= 1.25 is not on PATH: it builds the Kubernetes control-plane binaries and reads
  skaffold's schema from its module (Debian: apt-get install golang-go, or https://go.dev/dl)"
fi

# ---- podman for the e2e tier -------------------------------------------------
conf=/etc/containers/containers.conf
podman_conf_ok() {
  grep -qs '^default_ulimits' "$conf" && grep -qsE '^runtime *= *"runc"' "$conf"
}
if $e2e && ! podman_conf_ok; then
  if $check; then
    missing+=("$conf: [engine] runtime = \"runc\" and [containers] default_ulimits")
  else
    [ "$(id -u)" = 0 ] || die "the e2e tier needs rootful podman: run as root"
    # Podman's default ulimits ask for more than this host allows (nofile, nproc),
    # which breaks `podman run --privileged`; Debian's default runtime, crun,
    # refuses hybrid cgroup v1/v2 hosts ("cgroups in hybrid mode not supported").
    if [ -s "$conf" ] && grep -qE '^\[(engine|containers)\]' "$conf"; then
      die "$conf already has [engine] or [containers] sections; make sure they hold
  [containers] default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]
  [engine] runtime = \"runc\""
    fi
    mkdir -p "$(dirname "$conf")"
    printf '%s\n' '[containers]' 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]' \
      '' '[engine]' 'runtime = "runc"' >> "$conf"
    log "podman: runtime runc and this host's ulimits written to $conf"
  fi
fi

if $check; then
  bindir=$("$here/cluster/control-plane.sh" --print)
  [ -f "$bindir/.stamp" ] || missing+=("the control-plane binaries in $bindir (make cluster-tools)")
  if [ ${#missing[@]} -gt 0 ]; then
    printf 'setup: missing: %s\n' "${missing[@]}"
    exit 1
  fi
  log "nothing missing"
  exit 0
fi

if $e2e; then
  # One privileged container, before anything is built: a root filesystem of one
  # static binary, so that no image (and no registry) is needed.
  probe=$(mktemp -d)
  trap 'rm -rf "$probe"' EXIT
  printf 'int main(void) { return 0; }\n' > "$probe/true.c"
  mkdir -p "$probe/root"
  gcc -static -Os -o "$probe/root/true" "$probe/true.c"
  if ! out=$(podman run --rm --privileged --network none --rootfs "$probe/root" /true 2>&1); then
    die "podman cannot start a privileged container here:
$out
  (podman info --format '{{.Host.OCIRuntime.Name}}' says: $(podman info --format '{{.Host.OCIRuntime.Name}}' 2>&1))"
  fi
  log "podman: a privileged container starts (runtime $(podman info --format '{{.Host.OCIRuntime.Name}}'))"
fi

# ---- the Kubernetes control plane of tests/cluster ---------------------------
bindir=$("$here/cluster/control-plane.sh" --print)
if [ ! -f "$bindir/.stamp" ]; then
  log "building the Kubernetes control-plane binaries once (etcd, kube-apiserver,"
  log "kube-controller-manager, kubectl, helm) into $bindir: about 8 minutes cold on 2 cores"
fi
"$here/cluster/control-plane.sh"
log "ready in $(( $(date +%s) - t_start ))s"
