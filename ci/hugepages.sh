#!/usr/bin/env bash
# Reserve at least N 2 MB hugepages (default 640) and mount hugetlbfs at /dev/hugepages.
# Idempotent; needs root. Falls short gracefully: the kernel may grant fewer pages.
set -euo pipefail
want=${1:-640}
have=$(cat /proc/sys/vm/nr_hugepages)
if [ "$have" -lt "$want" ]; then
  echo "$want" > /proc/sys/vm/nr_hugepages
fi
mkdir -p /dev/hugepages
mountpoint -q /dev/hugepages || mount -t hugetlbfs nodev /dev/hugepages
got=$(cat /proc/sys/vm/nr_hugepages)
[ "$got" -ge "$want" ] || echo "hugepages: asked for $want, the kernel granted $got" >&2
