#!/usr/bin/env bash
# Benchmarks, one suite per run: `ci/bench.sh cni [cni-bench options]` or
# `ci/bench.sh kube [--nodes 5000] [--events 100]` or
# `ci/bench.sh scale [--nodes 1000,5000,10000] [--stores file,etcd,kube]`.
#   cni   flannel-rs's CNI plugin vs the reference bridge + host-local pair:
#         ADD/DEL latency (median, p99) and 64-pod bursts, 16 at a time;
#         `--ip-masq`: both sides masquerade every pod, plus what masquerade
#         adds to our ADD with 10 and 250 pods on the node.
#   kube  the Kubernetes store at scale: one flanneld against the API
#         stand-in holding N realistic Node objects (cold start, RSS, event
#         latency, the cost of a relist after a 410).
#   scale one flanneld against N fake peers on each store (file, etcd, the
#         kube stand-in): start -> subnet.env, start -> programmed beside
#         `ip -batch` of the same entries in the same run, RSS, resync CPU,
#         500+500 lease churn, and for etcd a relist after a compaction.
# Installs the apt packages it needs, builds release, runs as root. A missed
# target is reported, not failed; a failed plugin call fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

suite="${1:-}"
case "$suite" in
  cni | kube | scale) shift ;;
  *)
    echo "usage: ci/bench.sh cni [--dual-stack] [--ip-masq] [--pods N] [--bursts K] [--warmup W]" >&2
    echo "       ci/bench.sh kube [--nodes N] [--events K]" >&2
    echo "       ci/bench.sh scale [--nodes N,N...] [--stores file,etcd,kube] [--churn K]" >&2
    exit 2
    ;;
esac

if [ "$(id -u)" -ne 0 ]; then
  echo "ci/bench.sh: the benchmark creates network namespaces and must run as root" >&2
  exit 1
fi

if [ -x ci/deps.sh ]; then
  ci/deps.sh
else
  for need in /usr/sbin/ip /usr/lib/cni/bridge /usr/lib/cni/host-local; do
    if [ ! -x "$need" ]; then
      echo "ci/bench.sh: $need missing: apt-get install iproute2 containernetworking-plugins" >&2
      exit 1
    fi
  done
fi

if [ "$suite" = kube ]; then
  cargo build --release -p flannel-tools -p flanneld -p cni-plugin
  exec target/release/kube-scale "$@"
fi

if [ "$suite" = scale ]; then
  cargo build --release -p flannel-tools -p flanneld -p cni-plugin
  exec target/release/scale-bench "$@"
fi

cargo build --release -p flannel-tools
# The plugin as it is installed: static (see ci/build-plugin.sh).
plugin=$(ci/build-plugin.sh)
exec target/release/cni-bench --flannel "$plugin" "$@"
