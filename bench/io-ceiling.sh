#!/usr/bin/env bash
# The I/O ceiling: raw RX→TX packets per second through Sluice's safe DPDK wrapper (`iofwd`)
# next to `dpdk-testpmd --forward-mode=io`, on the same virtual devices, in the same run, one
# forwarding core each. Appends a table (with the machine description) to bench/RESULTS.md.
#
# Usage: bench/io-ceiling.sh [SECONDS]      (root; reserves hugepages if needed)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
RESULTS=bench/RESULTS.md

[ "$(id -u)" = 0 ] || { echo "io-ceiling: needs root (hugepages, namespaces)" >&2; exit 1; }
command -v dpdk-testpmd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends dpdk-dev >/dev/null
ci/hugepages.sh 640

cargo build --release -q -p sluice-bench --bin iofwd
IOFWD=$PWD/target/release/iofwd

NS=sl-bench-$$
cleanup() {
  ip netns del "$NS" 2>/dev/null || true
  rm -f /run/sluice-bench-$$.sock
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add va type veth peer name vb
for i in va vb; do
  ip netns exec "$NS" sysctl -qw net.ipv6.conf.$i.disable_ipv6=1
  ip -n "$NS" link set $i up
done

EAL_COMMON=(--in-memory -m 512 --no-pci --no-telemetry --log-level '*:warning')

# testpmd: average of the last few per-second Rx-pps samples, summed over ports.
testpmd_mpps() { # ns-prefix tx_first vdevs...
  local prefix=$1 txfirst=$2; shift 2
  local vdevs=() v
  for v in "$@"; do vdevs+=(--vdev "$v"); done
  local extra=()
  [ "$txfirst" = 1 ] && extra=(--tx-first)
  $prefix timeout -s INT $((SECS + 3)) dpdk-testpmd -l 0,1 "${EAL_COMMON[@]}" "${vdevs[@]}" -- \
    --forward-mode=io --auto-start --stats-period 1 --nb-cores=1 "${extra[@]}" 2>&1 |
    awk -v ports=$# '/Rx-pps:/ { s[n++] = $2 }
      END { k = 0; t = 0; for (i = n - 1; i >= 0 && k < 3 * ports; i--) { t += s[i]; k++ }
            if (k == 0) { print "0"; exit } printf "%.3f\n", t / (k / ports) / 1e6 }' || true
}

iofwd_mpps() { # ns-prefix tx_first vdevs...
  local prefix=$1 txfirst=$2; shift 2
  local vdevs=() v
  for v in "$@"; do vdevs+=(--vdev "$v"); done
  local extra=()
  [ "$txfirst" = 1 ] && extra=(--tx-first 4)
  $prefix "$IOFWD" --lcore 1 --seconds "$SECS" "${vdevs[@]}" "${extra[@]}" 2>/dev/null |
    sed -n 's/^RESULT .*mpps=\([0-9.]*\).*/\1/p' || true
}

ROWS=()
run_case() { # name prefix tx_first vdevs...
  local name=$1 prefix=$2 txfirst=$3; shift 3
  echo "== $name" >&2
  local tp sl
  tp=$(testpmd_mpps "$prefix" "$txfirst" "$@")
  sl=$(iofwd_mpps "$prefix" "$txfirst" "$@")
  local ratio
  ratio=$(awk -v a="$sl" -v b="$tp" 'BEGIN { if (b > 0) printf "%.0f %%", 100 * a / b; else print "n/a" }')
  echo "   testpmd io-fwd: $tp Mpps   sluice iofwd: $sl Mpps   ($ratio)" >&2
  ROWS+=("| $name | $tp | $sl | $ratio |")
}

run_case "net_null × 2 (PMD allocates on RX, frees on TX)" "" 0 net_null0 net_null1
run_case "net_af_packet on a veth pair (in a namespace), 128 frames looping" "ip netns exec $NS" 1 \
  net_af_packet0,iface=va net_af_packet1,iface=vb
run_case "net_memif server ↔ client (one process), 128 frames looping" "" 1 \
  "net_memif0,role=server,id=0,socket=/run/sluice-bench-$$.sock" \
  "net_memif1,role=client,id=0,socket=/run/sluice-bench-$$.sock"

{
  echo
  echo "### I/O ceiling — $(date -u +%Y-%m-%d) — commit $(git rev-parse --short HEAD 2>/dev/null || echo none)"
  echo
  echo "Machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, kernel $(uname -r), DPDK $(pkg-config --modversion libdpdk), hugepages 2 MB (\`--in-memory\`)."
  echo "Command: \`bench/io-ceiling.sh $SECS\` — one forwarding lcore each, 64-byte frames, burst 32, ports paired 0↔1, ${SECS} s after warm-up."
  echo
  echo "| I/O path | dpdk-testpmd io-fwd (Mpps) | sluice iofwd (Mpps) | sluice / testpmd |"
  echo "|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} | tee -a "$RESULTS"
