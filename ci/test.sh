#!/usr/bin/env bash
# Runs every test: installs the apt packages the tests need, builds, runs
# the unit, netns integration and end-to-end suites, then checks nothing
# was left behind: no network namespace, no process of ours (a binary of
# this workspace, or anything naming a test temp dir or a netns-cluster
# dir; zombies, which only PID 1 can reap, excepted), no temp dir, no
# netns-cluster dir. Needs root (network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "ci/test.sh: the tests create network namespaces and must run as root" >&2
  exit 1
fi
ci/deps.sh

root=$(pwd -P)
tmp=${TMPDIR:-/tmp}
tmp=${tmp%/}
run_dir=/run/flannel-rs-netns-cluster

# Live processes of ours: "pid cmdline", one a line.
our_procs() {
  local d pid state exe cmd
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    state=$(sed 's/.*) //' "$d/stat" 2>/dev/null | cut -d' ' -f1) || continue
    [ -n "$state" ] && [ "$state" != Z ] || continue
    exe=$(readlink "$d/exe" 2>/dev/null) || exe=""
    cmd=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null) || continue
    case "$exe" in "$root"/target/*)
      echo "$pid $cmd"
      continue
      ;;
    esac
    case "$cmd" in *"$tmp"/ft[0-9]*-* | *"$run_dir"/*) echo "$pid $cmd" ;; esac
  done | sort
}
leftovers() {
  {
    ip netns list | sed 's/^/netns /'
    our_procs | sed 's/^/process /'
    ls -d "$tmp"/ft[0-9]*-* 2>/dev/null | sed 's/^/temp dir /' || true
    ls -d "$run_dir"/* 2>/dev/null | sed 's/^/netns-cluster dir /' || true
  } | sort
}

before=$(leftovers)

# The lint gate, before anything runs: formatting, then clippy on every
# target with every warning an error.
if command -v rustup >/dev/null 2>&1; then
  installed=$(rustup component list --installed 2>/dev/null || true)
  for component in rustfmt clippy; do
    case "$installed" in *"$component-"*) ;; *) rustup component add "$component" ;; esac
  done
fi
echo "ci/test.sh: lint: cargo fmt --all -- --check"
cargo fmt --all -- --check
echo "ci/test.sh: lint: cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "ci/test.sh: lint: passed"
ci/validate-manifests.sh

cargo build --workspace --all-targets
# The suites call the plugin as it is installed (release, static), not the
# debug build next to them: see cluster/src/cni.rs, plugin_under_test.
FLANNEL_CNI_PLUGIN=$(ci/build-plugin.sh)
export FLANNEL_CNI_PLUGIN
echo "ci/test.sh: plugin under test: $FLANNEL_CNI_PLUGIN"
# The image (flanneld, the plugin, nft) as an OCI archive, which
# tests/tests/e2e_image.rs runs under a private containerd; that test
# fails without it.
FLANNEL_IMAGE_ARCHIVE=$(ci/image.sh | tail -n1)
export FLANNEL_IMAGE_ARCHIVE
echo "ci/test.sh: image under test: $FLANNEL_IMAGE_ARCHIVE"
start=$(date +%s)
cargo test --workspace -- --test-threads="${TEST_THREADS:-4}"
# The plugin's own suites once more against its debug build, whose overflow
# checks and debug assertions the release binary does not have.
echo "ci/test.sh: the CNI plugin's suites against its debug build"
FLANNEL_CNI_PLUGIN="" cargo test -p cni-plugin --tests -- --test-threads="${TEST_THREADS:-4}"
echo "ci/test.sh: tests took $(($(date +%s) - start)) s"
# Allow a few seconds for stragglers to finish (the CNI DEL helpers, or an
# unrelated run that happened to overlap) before calling it a leak.
for _ in $(seq 50); do
  new=$(comm -13 <(echo "$before") <(leftovers))
  [ -z "$new" ] && break
  sleep 0.1
done
if [ -n "$new" ]; then
  echo "ci/test.sh: the tests left these behind:" >&2
  echo "$new" >&2
  exit 1
fi
echo "ci/test.sh: nothing left behind (namespaces, processes, temp dirs)"
