#!/usr/bin/env bash
# Builds the CNI plugin as it is installed and prints the binary's path on
# stdout (everything else goes to stderr):
#
#   release, statically linked against musl   <target dir>/<arch>-unknown-linux-musl/release/flannel
#   or, without the musl target, glibc static  <target dir>/<host triple>/release/flannel
#
# Static, because the plugin is copied onto nodes (by an init container or a
# package) whose libc it cannot know, as the reference plugins are. musl,
# because a runtime execs the plugin for every pod and glibc's start-up
# probes the CPU with a few dozen CPUID instructions, each a VM exit on a
# virtual machine: about 0.3 ms of every call on the development VM (see
# the README's benchmark). The musl build uses dlmalloc (cni-plugin's
# Cargo.toml says why).
#
# The musl target is added with rustup when the toolchain lacks it; where
# that cannot be done (no rustup, no network), or with
# FLANNEL_PLUGIN_LIBC=glibc, the glibc static build is made instead, and a
# line on stderr says so. `--target` keeps static linking off build scripts
# and proc-macros.
set -euo pipefail
unset CDPATH
cd "$(dirname -- "$0")/.."

die() {
  echo "ci/build-plugin.sh: $*" >&2
  exit 1
}

host=$(rustc -vV | sed -n 's/^host: //p')
[ -n "$host" ] || die "cannot tell the host triple from 'rustc -vV'"
case "$host" in
  *-musl*) musl=$host ;;
  *-gnu*) musl=${host/-gnu/-musl} ;; # x86_64-unknown-linux-gnu -> ...-musl
  *) die "unsupported host $host (a Linux gnu or musl triple is needed)" ;;
esac

# The target's standard library is there (rustup or not).
have_target() {
  local dir
  dir=$(rustc --print target-libdir --target "$1" 2>/dev/null) || return 1
  compgen -G "$dir/libstd-*.rlib" >/dev/null
}

target=$musl
if [ "${FLANNEL_PLUGIN_LIBC:-musl}" = glibc ]; then
  target=$host
elif ! have_target "$musl"; then
  if command -v rustup >/dev/null 2>&1; then
    echo "ci/build-plugin.sh: adding the Rust target $musl" >&2
    timeout 300 rustup target add "$musl" >&2 || true
  fi
  if ! have_target "$musl"; then
    echo "ci/build-plugin.sh: warning: Rust target $musl unavailable; building a static glibc binary (slower to start)" >&2
    target=$host
  fi
fi

if [ "$target" = "$musl" ]; then
  cargo build --release -p cni-plugin --target "$target" >&2
else
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release -p cni-plugin --target "$target" >&2
fi

# Where cargo put it: honours CARGO_TARGET_DIR and build.target-dir.
meta=$(cargo metadata --no-deps --format-version 1)
target_dir=$(sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p' <<<"$meta")
[ -n "$target_dir" ] || die "cannot find the target directory in 'cargo metadata'"
bin="$target_dir/$target/release/flannel"
[ -x "$bin" ] || die "$bin is missing after the build"

# A dynamically linked binary names its libraries in NEEDED entries.
dynamic=$(LC_ALL=C readelf -dW "$bin") || die "readelf -d $bin failed"
case "$dynamic" in
  *"(NEEDED)"*) die "$bin came out dynamically linked" ;;
esac
echo "$bin"
