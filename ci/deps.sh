#!/usr/bin/env bash
# Installs the system packages the build and the tests need (Debian/Ubuntu).
# Idempotent: runs `apt-get update` and `apt-get install` only when a package
# is missing.
set -euo pipefail

PACKAGES=(
  iproute2 iptables nftables iputils-ping containernetworking-plugins
  protobuf-compiler etcd-server etcd-client openssl
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "deps: all present (${PACKAGES[*]})"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
