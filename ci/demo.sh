#!/usr/bin/env bash
# The README's run command: Sluice's main job on the embedded default.
#
# Foundation stage (the load-balancing demo arrives with the control daemon): it builds the
# workspace's tools, reserves hugepages, builds a small namespace testbed (a veth pair inside a
# namespace of its own) and moves real frames through Sluice's DPDK I/O layer: first over the
# veth pair via net_af_packet, then over DPDK's in-memory net_null ports, printing packets per
# second. Everything it creates is removed on exit, pass or fail. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SLUICE_DEMO_SECONDS:-3}

echo "==> installing what is missing and reserving hugepages"
ci/setup.sh
echo "==> building (release)"
cargo build --release -q -p sluice-bench --bin iofwd
cargo build --release -q -p sluice-hugepages --bin sluice-hugepages
BIN=$PWD/target/release

echo "==> hugepages"
"$BIN/sluice-hugepages" status

NS=sl-demo-$$
cleanup() { ip netns del "$NS" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add va type veth peer name vb
for i in va vb; do
  ip netns exec "$NS" sysctl -qw "net.ipv6.conf.$i.disable_ipv6=1"
  ip -n "$NS" link set "$i" up
done
echo "==> testbed: namespace $NS with veth pair va <-> vb"

run() { # title, prefix, args...
  local title=$1 prefix=$2; shift 2
  local line
  line=$($prefix "$BIN/iofwd" --lcore 1 --seconds "$SECS" "$@" 2>/dev/null | grep '^RESULT' || true)
  if [ -z "$line" ]; then
    echo "demo: $title produced no result" >&2
    exit 1
  fi
  local mpps pkts
  mpps=$(sed -n 's/.*mpps=\([0-9.]*\).*/\1/p' <<<"$line")
  pkts=$(sed -n 's/.*packets=\([0-9]*\).*/\1/p' <<<"$line")
  printf '  %-52s %12s packets  %8s Mpps\n' "$title" "$pkts" "$mpps"
}

echo "==> forwarding through Sluice's DPDK I/O layer for ${SECS}s per case (one core)"
run "veth pair va<->vb via net_af_packet (128 frames)" "ip netns exec $NS" \
  --vdev net_af_packet0,iface=va --vdev net_af_packet1,iface=vb --tx-first 4
run "DPDK net_null ports (in-memory, no kernel)" "" --vdev net_null0 --vdev net_null1
echo "==> done; namespace $NS removed"
