#!/usr/bin/env bash
# Installs everything Sluice's build, tests, benches and demo need on a fresh Debian 12 machine
# (as root), and reserves hugepages. Idempotent: a second run installs nothing.
set -euo pipefail

PACKAGES=(
  pkg-config libdpdk-dev dpdk dpdk-dev     # DPDK 22.11 headers, PMDs, dpdk-testpmd
  libclang1-14 libclang-common-14-dev      # bindgen (clang's builtin headers live in -common)
  iproute2 procps util-linux ethtool       # ip netns / veth, sysctl, unshare / setpriv, offloads
  python3 curl                             # small test helpers; the demo reads /metrics
)

if [ "$(id -u)" != 0 ]; then
  echo "ci/setup.sh: must run as root (apt, hugepages, network namespaces)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ci/setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

"$(dirname "$0")/hugepages.sh" "${SLUICE_HUGEPAGES:-640}"
