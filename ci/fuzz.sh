#!/usr/bin/env bash
# Fuzzes every parser of outside input for a bounded time. Each target is
# the property tests of one parser's `mod fuzz` (see tests/src/fuzz.rs and
# fuzz/README.md); here they run fresh random cases until the target's
# share of the time is used, or PROPTEST_CASES cases per property, which
# comes first. Debug build: overflow checks and debug assertions are on.
#
# A failure is shrunk to a minimal input, printed, and its seed saved under
# <crate>/proptest-regressions/ (commit that file: every later `cargo
# test` replays it first); the script then exits 1. A target that hangs
# (a parser that loops) is stopped by a timeout and fails too.
#
# Usage: ci/fuzz.sh [--seconds N] [--cases N] [--target NAME]... [--list]
#   --seconds N    time for each target (default 24: 11 targets, ~5 minutes)
#   --cases N      at most N cases per property (default $PROPTEST_CASES or 20000)
#   --target NAME  only this target (repeatable)
#   --list         the targets, and exit
# FUZZ_THREADS sets how many properties run at once (default: nproc).
# Installs nothing beyond ci/deps.sh (which it runs first, like ci/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# name | cargo test arguments | test name filter
TARGETS=(
  "cni-conf|-p cni-plugin --bin flannel|spec::fuzz::"
  "cni-prev-result|-p cni-plugin --bin flannel|cmd::check::fuzz::"
  "cni-env|-p cni-plugin --bin flannel|env::fuzz::"
  "cni-stdin|-p cni-plugin --test fuzz_stdin|"
  "ipam|-p cni-plugin --bin flannel|ipam::fuzz::"
  "subnet-env|-p common --lib|subnet_env::fuzz::"
  "net-conf|-p flanneld --lib|netconf::fuzz::"
  "lease-value|-p flanneld --lib|lease::etcd::keys::fuzz::"
  "lease-file|-p flanneld --lib|lease::file::format::fuzz::"
  "subnet-key|-p flanneld --lib|lease::fuzz::"
  "mac|-p flanneld --lib|mac::fuzz::"
)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

seconds=24
cases=${PROPTEST_CASES:-20000}
only=()
while (($# > 0)); do
  case "$1" in
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --cases) cases=${2:?--cases needs a number}; shift 2 ;;
    --target) only+=("${2:?--target needs a name}"); shift 2 ;;
    --list) for t in "${TARGETS[@]}"; do echo "${t%%|*}"; done; exit 0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "ci/fuzz.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
for n in "$seconds" "$cases"; do
  [[ "$n" =~ ^[0-9]+$ ]] && ((n > 0)) || { echo "ci/fuzz.sh: $n is not a positive number" >&2; exit 2; }
done
selected=()
for t in "${TARGETS[@]}"; do
  name=${t%%|*}
  if ((${#only[@]} == 0)) || [[ " ${only[*]} " == *" $name "* ]]; then selected+=("$t"); fi
done
for o in "${only[@]+"${only[@]}"}"; do
  printf '%s\n' "${TARGETS[@]}" | grep -q "^$o|" || { echo "ci/fuzz.sh: no target $o (see --list)" >&2; exit 2; }
done

ci/deps.sh
threads=${FUZZ_THREADS:-$(nproc)}
export PROPTEST_CASES=$cases RUST_BACKTRACE=0
logs=$(mktemp -d "${TMPDIR:-/tmp}/flannel-fuzz.XXXXXX")
trap 'rm -rf "$logs"' EXIT

echo "ci/fuzz.sh: building the test binaries"
# One package at a time, as the targets run (features are resolved per
# package), so no target pays for a build inside its time.
for pkg in $(printf '%s\n' "${selected[@]}" | cut -d'|' -f2 | awk '{print $2}' | sort -u); do
  cargo test -p "$pkg" --no-run --quiet
done

printf '%-16s %5s %10s %8s  %s\n' target props cases seconds result
failed=()
for t in "${selected[@]}"; do
  IFS='|' read -r name args filter <<<"$t"
  read -ra cargs <<<"$args"
  log="$logs/$name.log"
  # Properties only: corpus_* tests replay files and take no time budget.
  props=$(cargo test "${cargs[@]}" --quiet -- "$filter" --list 2>/dev/null |
    grep ': test$' | grep -vc 'corpus_' || true)
  ((props > 0)) || { echo "ci/fuzz.sh: target $name has no property" >&2; exit 1; }
  per=$((seconds * threads / props))
  ((per > 0)) || per=1
  start=$(date +%s)
  status=0
  FLANNEL_FUZZ_SECONDS=$per timeout --kill-after=10 $((seconds * 2 + 120)) \
    cargo test "${cargs[@]}" --quiet -- "$filter" --test-threads="$threads" --show-output \
    >"$log" 2>&1 || status=$?
  took=$(($(date +%s) - start))
  total=$(grep -E '^fuzz [^ ]+: [0-9]+ cases' "$log" | awk '{s += $3} END {print s + 0}')
  case $status in
    0) result=ok ;;
    124 | 137) result="TIMEOUT (a parser hangs?)" ;;
    *) result=FAILED ;;
  esac
  printf '%-16s %5d %10d %8d  %s\n' "$name" "$props" "$total" "$took" "$result"
  if ((status != 0)); then
    failed+=("$name")
    echo "----- $name: output -----"
    grep -vE '^(fuzz [^ ]+: [0-9]+ cases|test .* \.\.\. ok)' "$log" | tail -n 80
    echo "-----"
  fi
done

if ((${#failed[@]} > 0)); then
  echo "ci/fuzz.sh: FAILED: ${failed[*]}" >&2
  echo "ci/fuzz.sh: commit the new seeds under */proptest-regressions/ with the fix" >&2
  exit 1
fi
echo "ci/fuzz.sh: all ${#selected[@]} targets passed"
