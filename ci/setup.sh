#!/usr/bin/env bash
# Installs everything Sluice's build, tests, benches and demo need on a fresh Debian 12 machine
# (as root), and reserves hugepages. Idempotent: a second run installs nothing.
set -euo pipefail

PACKAGES=(
  pkg-config libdpdk-dev dpdk dpdk-dev     # DPDK 22.11 headers, PMDs, dpdk-testpmd
  libclang1-14 libclang-common-14-dev      # bindgen (clang's builtin headers live in -common)
  iproute2 procps util-linux ethtool       # ip netns / veth, sysctl, unshare / setpriv, offloads
  python3 curl                             # small test helpers; the demo reads /metrics
  bird2 gobgpd                             # routers for the BGP interop tests (control/tests/bgp_*)
)
# Daemons whose packages would start them as system services; the tests run their own copies
# inside network namespaces, so none may be left running on the host.
SERVICES=(bird gobgpd)

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
  # Keep postinst scripts from starting services (bird2, gobgpd): a policy-rc.d that denies
  # every start, only for this install and only if the machine has none of its own.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
  fi
  trap '[ "$own_policy" = 1 ] && rm -f "$policy"' EXIT
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  [ "$own_policy" = 1 ] && rm -f "$policy"
  trap - EXIT
  # Under systemd the units are also enabled for the next boot: disable them, and stop any
  # copy that started anyway.
  if [ -d /run/systemd/system ]; then
    for svc in "${SERVICES[@]}"; do
      systemctl disable --now "$svc.service" >/dev/null 2>&1 || true
    done
  fi
fi

"$(dirname "$0")/hugepages.sh" "${SLUICE_HUGEPAGES:-640}"
