#!/usr/bin/env bash
# Builds the container image with buildah (no Docker daemon, no registry)
# and writes it as an OCI archive:
#
#   $CARGO_TARGET_DIR/image/flannel-rs.oci.tar   reference localhost/flannel-rs:<workspace version>
#
# (localhost/, as Podman names local images, is the name the manifest
# deploy/kube-flannel-rs.yml runs: `ctr images import` keeps it as is.)
#
# The archive's path is the last line on stdout; everything else goes to
# stderr. Load it with `ctr images import`, `podman load` or
# `skopeo copy oci-archive:...`. deploy/Containerfile builds the same
# layout with Docker or Podman.
#
# The image, FROM scratch (no shell, no coreutils: the init containers use
# the plugin's install mode, `/flannel install-plugin|install-conflist`):
#
#   /flannel             the CNI plugin as ci/build-plugin.sh builds it (static, musl)
#   /opt/bin/flanneld    flanneld, release, static musl
#   /usr/sbin/nft        nft (flanneld --ip-masq runs `nft -f -`), with exactly
#                        the shared libraries it loads and the dynamic loader,
#                        taken from Debian's packages (apt-get download), not
#                        from this machine's filesystem
#
# buildah's storage (vfs driver) lives under $CARGO_TARGET_DIR/image/ and
# is removed afterwards; the host's default container storage is never used.
# Needs root (buildah's vfs storage) and the network (apt-get download).
set -euo pipefail
unset CDPATH
cd "$(dirname -- "$0")/.."

die() {
  echo "ci/image.sh: $*" >&2
  exit 1
}
say() { echo "ci/image.sh: $*" >&2; }

meta=$(cargo metadata --no-deps --format-version 1)
target_dir=$(sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p' <<<"$meta")
[ -n "$target_dir" ] || die "cannot find the target directory in 'cargo metadata'"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || die "cannot read the workspace version from Cargo.toml"
ref="localhost/flannel-rs:$version"

work="$target_dir/image"
archive="$work/flannel-rs.oci.tar"
storage="$work/storage"
rootfs="$work/rootfs"
debs="$work/debs"
mkdir -p "$work"

# --- the two Rust binaries --------------------------------------------------
plugin=$(ci/build-plugin.sh)
host=$(rustc -vV | sed -n 's/^host: //p')
musl=${host/-gnu/-musl}
# ring's build script compiles C for the musl target with musl-gcc.
cargo build --release -p flanneld --target "$musl" >&2
flanneld="$target_dir/$musl/release/flanneld"
[ -x "$flanneld" ] || die "$flanneld is missing after the build"
for bin in "$plugin" "$flanneld"; do
  case "$(LC_ALL=C readelf -dW "$bin")" in
    *"(NEEDED)"*) die "$bin came out dynamically linked" ;;
  esac
done

# --- nft and its libraries, from Debian's packages ---------------------------
# The packages: nftables and its Depends, recursively (Recommends and the
# rest left out), downloaded as .debs and unpacked into a staging dir.
rm -rf "$debs" "$rootfs"
mkdir -p "$debs/pkgs" "$debs/root"
mapfile -t pkgs < <(apt-cache depends --recurse --no-recommends --no-suggests \
  --no-conflicts --no-breaks --no-replaces --no-enhances nftables |
  grep -v '^ ' | grep -v '^<' | sort -u)
((${#pkgs[@]} > 0)) || die "apt-cache depends nftables listed nothing"
say "downloading ${pkgs[*]}"
(cd "$debs/pkgs" && apt-get download -qq -o APT::Sandbox::User=root "${pkgs[@]}" >&2) ||
  die "apt-get download ${pkgs[*]} failed (run 'apt-get update'?)"
for deb in "$debs"/pkgs/*.deb; do
  dpkg-deb -x "$deb" "$debs/root" || die "dpkg-deb -x $deb failed"
done
staged="$debs/root"
[ -x "$staged/usr/sbin/nft" ] || die "nftables' package has no usr/sbin/nft"

# The loader nft names (PT_INTERP) and the closure of its NEEDED
# libraries, resolved in the staging dir the way the loader would (no
# ld.so.cache in the image: its built-in directories).
libdirs=(lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu lib usr/lib)
multiarch=$(gcc -print-multiarch 2>/dev/null || true)
[ -z "$multiarch" ] || libdirs=("lib/$multiarch" "usr/lib/$multiarch" lib usr/lib)
interp=$(LC_ALL=C readelf -lW "$staged/usr/sbin/nft" |
  sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
[ -n "$interp" ] || die "cannot read nft's program interpreter"
files=(usr/sbin/nft "${interp#/}")
queue=(usr/sbin/nft)
while ((${#queue[@]} > 0)); do
  elf=${queue[0]}
  queue=("${queue[@]:1}")
  while read -r soname; do
    found=""
    for d in "${libdirs[@]}"; do
      if [ -e "$staged/$d/$soname" ]; then
        found="$d/$soname"
        break
      fi
    done
    [ -n "$found" ] || die "$soname (needed by $elf) is in none of the packages ${pkgs[*]}"
    case " ${files[*]} " in *" $found "*) continue ;; esac
    files+=("$found")
    queue+=("$found")
  done < <(LC_ALL=C readelf -dW "$staged/$elf" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
done

mkdir -p "$rootfs/opt/bin"
for f in "${files[@]}"; do
  mkdir -p "$rootfs/$(dirname "$f")"
  cp -L "$staged/$f" "$rootfs/$f" # symlinks (soname -> file) become the file
done
say "nft and its libraries: ${files[*]}"
install -m 0755 "$plugin" "$rootfs/flannel"
install -m 0755 "$flanneld" "$rootfs/opt/bin/flanneld"
# The mount point of the host's /run/flannel (subnet.env).
mkdir -p "$rootfs/run/flannel"

# --- the image ----------------------------------------------------------------
buildah() {
  command buildah --root "$storage/root" --runroot "$storage/run" --storage-driver vfs "$@"
}
cleanup() {
  if [ -d "$storage" ]; then
    buildah rm --all >/dev/null 2>&1 || true
    buildah rmi --all --force >/dev/null 2>&1 || true
    rm -rf "$storage"
  fi
  rm -rf "$debs"
}
trap cleanup EXIT
cleanup

ctr=$(buildah from scratch)
buildah copy "$ctr" "$rootfs" / >/dev/null
buildah config \
  --env PATH=/opt/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --cmd /opt/bin/flanneld \
  --label org.opencontainers.image.title=flannel-rs \
  --label "org.opencontainers.image.version=$version" \
  --label org.opencontainers.image.description="flannel-rs: flanneld and the flannel CNI plugin" \
  "$ctr"
rm -f "$archive"
buildah commit --quiet --format oci --disable-compression=false --rm "$ctr" "oci-archive:$archive:$ref" >/dev/null

rootfs_bytes=$(du -sb "$rootfs" | cut -f1)
archive_bytes=$(stat -c %s "$archive")
say "image $ref: archive $archive_bytes bytes, rootfs $rootfs_bytes bytes uncompressed"
echo "$archive"
