#!/usr/bin/env bash
# Installs the system packages the build, the tests, the demo and the
# benchmarks read (Debian/Ubuntu), then checks that every file they read is
# really there. Idempotent: runs `apt-get update` and `apt-get install` only
# when a package is missing.
#
# The list below is by file, not by package: each line is a file (or a tool
# on PATH) something in this repository reads, and the Debian package that
# ships it (found with `dpkg -S <file>`). Installing with
# --no-install-recommends means nothing arrives by accident, so a file that
# is read but not listed fails here, on every machine, instead of only on a
# fresh one.
set -euo pipefail

# what is read                                       package            who reads it
REQUIRED=(
  "protoc                                             protobuf-compiler"   # etcd-client's build script
  "/usr/include/google/protobuf/descriptor.proto      libprotobuf-dev"     # etcd-client's build script (protoc -I)
  "cc                                                 gcc"                 # rustc's linker, -sys crates
  "/usr/lib/x86_64-linux-gnu/libc.a                   libc6-dev"           # ci/build-plugin.sh's static glibc fallback
  "readelf                                            binutils"            # ci/build-plugin.sh: the static check
  "ip                                                 iproute2"            # tests, demo: look at what the product did
  "bridge                                             iproute2"            # tests: fdb dumps
  "nft                                                nftables"            # flanneld --ip-masq, the plugin's ipMasq, tests
  "iptables                                           iptables"            # the reference plugins' ipMasq (bench, tests)
  "iptables-save                                      iptables"            # tests: portmap
  "ping                                               iputils-ping"        # tests, demo: reachability
  "etcd                                               etcd-server"         # tests: the etcd store
  "etcdctl                                            etcd-client"         # tests: the etcd store
  "openssl                                            openssl"             # tests: etcd and kube API stand-in TLS certificates
  "strace                                             strace"              # tests: a flanneld's netlink writes (e2e_kube)
  "/usr/bin/python3                                   python3-minimal"     # ci/validate-manifests.sh: kubernetes-validate's venv
  "/usr/lib/python3.11/ensurepip/__init__.py          python3.11-venv"     # ci/validate-manifests.sh: python3 -m venv
  "/usr/lib/cni/bridge                                containernetworking-plugins" # tests, bench: the reference
  "/usr/lib/cni/host-local                            containernetworking-plugins" # tests, bench: the reference
  "/usr/lib/cni/portmap                               containernetworking-plugins" # tests: chained portmap
  "musl-gcc                                           musl-tools"          # ci/image.sh: ring's C for the musl flanneld
  "buildah                                            buildah"             # ci/image.sh: builds the image
  "apt-get                                            apt"                 # ci/image.sh: apt-get download nftables and its libraries
  "apt-cache                                          apt"                 # ci/image.sh: nftables' dependencies
  "dpkg-deb                                           dpkg"                # ci/image.sh: unpacks them
  "containerd                                         containerd"          # tests: e2e_image runs the image
  "ctr                                                containerd"          # tests: e2e_image imports and runs it
  "runc                                               runc"                # tests: containerd's runtime (e2e_image)
)

# The libc.a path is per architecture.
multiarch=$(gcc -print-multiarch 2>/dev/null || true)
[ -n "$multiarch" ] || multiarch="$(uname -m)-linux-gnu"

# Fields of one REQUIRED line: "what package".
entries() {
  local line
  for line in "${REQUIRED[@]}"; do
    read -r what pkg <<<"$line"
    echo "${what//x86_64-linux-gnu/$multiarch} $pkg"
  done
}

present() {
  case "$1" in
    /*) [ -e "$1" ] ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
while read -r what pkg; do
  if ! installed "$pkg" || ! present "$what"; then
    case " ${missing[*]-} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
  fi
done < <(entries)

if ((${#missing[@]} > 0)); then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # A package that is installed but lost a file (removed by hand) comes
  # back with --reinstall.
  $SUDO apt-get install -y -qq --no-install-recommends --reinstall "${missing[@]}" >/dev/null
fi

# The check: every file read is there, whatever the package database says.
failed=0
while read -r what pkg; do
  if ! present "$what"; then
    echo "deps: missing $what (Debian package $pkg)" >&2
    failed=1
  fi
done < <(entries)
if ((failed)); then
  exit 1
fi
echo "deps: all present ($(entries | awk '{print $2}' | sort -u | tr '\n' ' '| sed 's/ $//'))"
