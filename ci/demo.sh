#!/usr/bin/env bash
# The demo: a flannel-rs cluster of 3 nodes x 2 pods, every node and pod a
# network namespace on this machine. Installs its apt packages (ci/deps.sh),
# builds release, brings the cluster up with the netns-cluster tool (a real
# flanneld per node on the embedded lease store -- or with --store etcd on
# an etcd, with --store kube on the Kubernetes API: a stand-in API server
# handing out podCIDRs, see the README -- pods attached by the real
# flannel CNI plugin), prints the table, the pod-to-pod reachability matrix
# (every pod to every other, by ping and by TCP), the kernel check, then
# tears it all down -- unless --keep (then: target/release/netns-cluster
# status|matrix|exec|down). Needs root; touches nothing in the machine's
# own network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: sudo ci/demo.sh [--keep] [--store file|etcd|kube]"; }
die() {
  echo "ci/demo.sh: $*" >&2
  exit 1
}

keep=0
store=file
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=1 ;;
    --store)
      [ $# -ge 2 ] || {
        usage >&2
        exit 2
      }
      store=$2
      shift
      ;;
    --store=*) store=${1#--store=} ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
  shift
done
case "$store" in
  file) store_desc="embedded lease store" ;;
  etcd) store_desc="etcd lease store (etcd in the underlay namespace)" ;;
  kube) store_desc="Kubernetes API lease store (the API server stand-in in the underlay namespace)" ;;
  *)
    usage >&2
    exit 2
    ;;
esac

[ "$(id -u)" -eq 0 ] || die "must run as root (it creates network namespaces): sudo ci/demo.sh"

if command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
  ci/deps.sh || die "installing the apt packages failed (see above)"
else
  echo "ci/demo.sh: no apt-get here; make sure iproute2, iputils-ping and nftables are installed" >&2
fi
for tool in ip bridge ping nft; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "'$tool' not found: apt-get install iproute2 iputils-ping nftables (or run ci/deps.sh)"
done

# sudo resets PATH: also look for the invoking user's rustup cargo.
cargo=$(command -v cargo 2>/dev/null || true)
if [ -z "$cargo" ] && [ -n "${SUDO_USER:-}" ]; then
  home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
  [ -x "$home/.cargo/bin/cargo" ] && cargo="$home/.cargo/bin/cargo"
fi
[ -n "$cargo" ] || die "cargo not found: install Rust (https://rustup.rs), then run sudo ci/demo.sh again"

echo "==> building (release)"
"$cargo" build --release --quiet -p flanneld -p cni-plugin -p flannel-tools ||
  die "the build failed (see above)"

nc=${CARGO_TARGET_DIR:-target}/release/netns-cluster
name=demo
start=$(date +%s%N)
teardown() {
  if [ "$keep" -eq 0 ]; then
    echo "==> tearing down"
    "$nc" down --name "$name"
  else
    echo "==> kept: $nc status|matrix|exec NODE|POD -- CMD|down  (cluster '$name')"
  fi
}

if [ -e "/run/flannel-rs-netns-cluster/$name" ] || ip netns list | grep -q "^nc-$name-"; then
  echo "==> removing the '$name' cluster an earlier run left"
  "$nc" down --name "$name"
fi

echo "==> up: 3 nodes x 2 pods, $store_desc"
trap teardown EXIT
"$nc" up --name "$name" --nodes 3 --pods-per-node 2 --store "$store"
echo
echo "==> reachability: every pod to every other pod, across and within nodes"
ok=0
"$nc" matrix --name "$name" --tcp || ok=1
echo
echo "==> status: each node's flannel.1 routes, neighbours and FDB against the leases"
"$nc" status --name "$name" || ok=1
trap - EXIT
teardown
echo "==> demo took $(((($(date +%s%N) - start) / 1000000))) ms after the build"
if [ "$ok" -ne 0 ]; then
  die "some pods could not reach each other, or a node's kernel state did not match (see above)"
fi
