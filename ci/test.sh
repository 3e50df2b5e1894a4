#!/usr/bin/env bash
# Runs every test: installs the apt packages the tests need, builds, runs
# the unit and netns integration suites, then checks nothing was left
# behind. Needs root (network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "ci/test.sh: the tests create network namespaces and must run as root" >&2
  exit 1
fi
ci/deps.sh

before=$(ip netns list | wc -l)
cargo build --workspace --all-targets
cargo test --workspace -- --test-threads="${TEST_THREADS:-4}"
after=$(ip netns list | wc -l)
if [ "$after" -gt "$before" ]; then
  echo "ci/test.sh: the tests left $((after - before)) network namespace(s) behind:" >&2
  ip netns list >&2
  exit 1
fi
