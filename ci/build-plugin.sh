#!/usr/bin/env bash
# Builds the CNI plugin as it is installed and prints the binary's path on
# stdout (everything else goes to stderr):
#
#   release, statically linked against musl   target/<arch>-unknown-linux-musl/release/flannel
#   or, without the musl target, glibc static  target/<arch>-unknown-linux-gnu/release/flannel
#
# Static, because the plugin is copied onto nodes (by an init container or a
# package) whose libc it cannot know, as the reference plugins are. musl,
# because a runtime execs the plugin for every pod and glibc's start-up
# probes the CPU with a few dozen CPUID instructions, each a VM exit on a
# virtual machine: about 0.3 ms of every call on the development VM (see
# the README's benchmark). The musl build uses dlmalloc (cni-plugin's
# Cargo.toml says why).
#
# The musl target is added with rustup when missing; where that cannot be
# done (no rustup, no network), the glibc static build is made instead and
# a warning says so. `--target` keeps static linking off build scripts and
# proc-macros. Extra arguments go to cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

arch=$(rustc -vV | sed -n 's/^host: \([^-]*\)-.*/\1/p')
musl="$arch-unknown-linux-musl"
gnu="$arch-unknown-linux-gnu"

have_musl() { rustup target list --installed 2>/dev/null | grep -qx "$musl"; }

if command -v rustup >/dev/null 2>&1 && ! have_musl; then
  echo "ci/build-plugin.sh: adding the Rust target $musl" >&2
  timeout 600 rustup target add "$musl" >&2 || true
fi

if have_musl; then
  target=$musl
  cargo build --release -p cni-plugin --target "$target" "$@" >&2
else
  echo "ci/build-plugin.sh: warning: Rust target $musl unavailable; building a static glibc binary (slower to start)" >&2
  target=$gnu
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release -p cni-plugin --target "$target" "$@" >&2
fi

bin="target/$target/release/flannel"
# A dynamic binary lists its libraries as "libc.so.6 => /lib/...".
if ldd "$bin" 2>&1 | grep -q '=>'; then
  echo "ci/build-plugin.sh: $bin came out dynamically linked" >&2
  exit 1
fi
echo "$(pwd -P)/$bin"
