#!/usr/bin/env bash
# Throughput, process to process over net_memif (issue #8, first slice): `pktgen` (bench/src/bin/
# pktgen.rs) is the memif server and sends 64-byte TCP frames to a VIP; the forwarder under test
# is the memif client on the other end and sends them back over the same link; pktgen counts what
# comes back (by the TSC stamp in each frame) and takes its latency. In one run, same link, same
# traffic, one forwarding core each:
#   (a) dpdk-testpmd --forward-mode=io --port-topology=loop: the ceiling of this I/O path;
#   (b) sluice-dataplane, one worker, with sluice-control publishing one service (the VIP,
#       3 backends) into a fresh table region: DSR (MACs rewritten towards the backend), then NAT
#       (DNAT to the backend, SNAT to the node; conntrack + reverse entry per flow).
# Prints a table of Mpps and the ratio to testpmd and appends it, with the machine description,
# to bench/RESULTS.md. Every process it starts is stopped by PID, and every region, socket and
# file it made is removed, pass or fail.
#
# Usage: bench/throughput.sh [SECONDS] [FLOWS] [ROUNDS]   (root; reserves hugepages if needed)
#   SECONDS per measurement (default 5, after a 1 s warm-up), FLOWS distinct 5-tuples (1000),
#   ROUNDS of (testpmd, DSR, NAT) in turn (3); the table shows each forwarder's median round
#   and lists every round, because a shared machine's figures swing from run to run.
#   CARGO_TARGET_DIR is honoured; SLUICE_BENCH_RESULTS names another file to append to. Cores: pktgen and every EAL main lcore on CPU 0, the
#   forwarding core on CPU 1 (a 2-core machine has no more).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
FLOWS=${2:-1000}
ROUNDS=${3:-3}
RESULTS=${SLUICE_BENCH_RESULTS:-bench/RESULTS.md}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
GEN_CORE=0
FWD_CORE=1

[ "$(id -u)" = 0 ] || { echo "throughput: needs root (hugepages)" >&2; exit 1; }
command -v dpdk-testpmd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends dpdk-dev >/dev/null
ci/hugepages.sh 640

echo "== building (release)" >&2
cargo build --release -q -p sluice-bench --bin pktgen
cargo build --release -q -p sluice-dataplane --bin sluice-dataplane
cargo build --release -q -p sluice-control --bin sluice-control
PKTGEN=$TARGET/release/pktgen
DATAPLANE=$TARGET/release/sluice-dataplane
CONTROL=$TARGET/release/sluice-control

TAG=tp$$
WORK=$(mktemp -d /tmp/sluice-throughput.XXXXXX)
SOCK=$WORK/memif.sock
FWD_MAC=02:53:4c:00:00:01
# memif rings of 2^14 slots instead of the default 2^10: two busy-polling processes on
# a shared 2-core machine are not always running at the same time, and a 1024-slot ring fills
# within one time slice of the other side (measured: testpmd ~1.1 Mpps with 1024, ~7 Mpps
# with 16384 on the same loaded machine).
MEMIF="id=0,socket=$SOCK,socket-abstract=no,rsize=14"
REGIONS=()
PIDS=()

alive() { # pid: running (a dead child stays a zombie until reaped, and kill -0 still succeeds)
  local st
  st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) && [ -n "$st" ] && [ "$st" != Z ]
}
stop_pid() { # pid: TERM, wait up to 5 s, then KILL; then forget it (its number may be reused)
  local pid=$1 i
  if kill -TERM "$pid" 2>/dev/null; then
    for i in $(seq 50); do
      alive "$pid" || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}
forget_pid() { # pid: drop it from PIDS (after it was reaped)
  local i rest=()
  for i in "${PIDS[@]}"; do [ "$i" = "$1" ] || rest+=("$i"); done
  PIDS=("${rest[@]}")
}
cleanup() {
  local r
  while [ ${#PIDS[@]} -gt 0 ]; do stop_pid "${PIDS[0]}"; done
  for r in "${REGIONS[@]}"; do
    rm -f "/dev/hugepages/sluice-$r" "/dev/shm/sluice-$r"
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + $$ % 20000))
}
load1() { cut -d' ' -f1 /proc/loadavg; }

# Starts pktgen as the memif server in the background; sets PKTGEN_PID.
start_pktgen() { # log
  "$PKTGEN" --lcore "$GEN_CORE" --vdev "net_memif0,role=server,$MEMIF" --mbufs 65535 \
    --dst-mac "$FWD_MAC" --flows "$FLOWS" --seconds "$SECS" --warmup 1 --size 64 >"$1" 2>"$1.err" &
  PKTGEN_PID=$!
  PIDS+=("$PKTGEN_PID")
}

# Waits for pktgen and sets RES to fields of its RESULT line: "tx_mpps rx_mpps loss_pct p50_us
# p99_us ring_full rx_rewritten rx_packets" (a failed run reads as nothing forwarded).
finish_pktgen() { # log
  local rc=0
  wait "$PKTGEN_PID" || rc=$?
  forget_pid "$PKTGEN_PID"
  [ "$rc" = 0 ] || echo "   pktgen exited with $rc: $(tail -n 3 "$1.err")" >&2
  RES=$(awk '/^RESULT / { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    print v["tx_mpps"], v["rx_mpps"], v["loss_pct"], v["p50_us"], v["p99_us"], v["ring_full"], v["rx_rewritten"], v["rx_packets"] }' "$1")
  [ -n "$RES" ] || RES="0 0 100 NaN NaN 0 0 0"
}

# Every measurement: one line "case rx tx loss p50 p99 ring_full rewritten rx_packets load".
MEAS=()
record() { # case load
  MEAS+=("$1 $RES $2")
  local rx
  read -r _ rx _ <<<"$RES"
  echo "   $1: forwarded $rx Mpps (pktgen: $RES; load $2)" >&2
}
# The table row of CASE: its median round by forwarded Mpps, plus every round's figure.
row() { # case name
  local med all ratio rw full
  med=$(printf '%s\n' "${MEAS[@]}" | awk -v c="$1" '$1 == c' | sort -k3,3g | awk '{ l[NR] = $0 } END { print l[int((NR + 1) / 2)] }')
  all=$(printf '%s\n' "${MEAS[@]}" | awk -v c="$1" '$1 == c { printf "%s%s", s, $3; s = " / " }')
  # shellcheck disable=SC2086 # fields of one measurement
  set -- $med
  local tx=$2 rx=$3 loss=$4 p50=$5 p99=$6 n_full=$7 rewritten=$8 rxp=$9 load=${10}
  if [ "$1" = testpmd ]; then TESTPMD_RX=$rx; fi
  ratio=$(awk -v a="$rx" -v b="$TESTPMD_RX" 'BEGIN { if (b > 0) printf "%.0f %%", 100 * a / b; else print "n/a" }')
  rw=$(awk -v a="$rewritten" -v b="$rxp" 'BEGIN { if (b > 0) printf "%.0f %%", 100 * a / b; else print "n/a" }')
  full=$(awk -v r="$n_full" 'BEGIN { printf "%.2f M", r / 1e6 }')
  echo "| $NAME | **$rx** | $all | $ratio | $tx | $full | $loss % | $p50 / $p99 | $rw | $load |"
}
TESTPMD_RX=0

# (a) testpmd io-forward, looping the one memif port back onto itself.
run_testpmd() {
  echo "== dpdk-testpmd io-fwd" >&2
  local log=$WORK/testpmd-pktgen.log pid l
  start_pktgen "$log"
  dpdk-testpmd -l "$GEN_CORE,$FWD_CORE" --in-memory -m 512 --no-pci --no-telemetry --log-level '*:warning' \
    --vdev "net_memif0,role=client,$MEMIF,mac=$FWD_MAC" -- \
    --forward-mode=io --port-topology=loop --auto-start --nb-cores=1 --stats-period 1 --total-num-mbufs=65536 \
    </dev/null >"$WORK/testpmd.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  l=$(load1)
  finish_pktgen "$log"
  stop_pid "$pid"
  grep -q 'Rx-pps' "$WORK/testpmd.log" || echo "   testpmd: $(tail -n 5 "$WORK/testpmd.log")" >&2
  record testpmd "$l"
}

# (b) sluice-dataplane in MODE, one worker, tables from sluice-control in a fresh region.
run_sluice() { # mode round
  local mode=$1 region=bench-$TAG-$1-$2 dir=$WORK/$1-$2 cpid dpid l i
  echo "== sluice-dataplane $mode" >&2
  mkdir -p "$dir"
  REGIONS+=("$region")
  cat >"$dir/control.toml" <<EOF
[node]
name = "bench"
ipv4 = "10.90.0.3"

[metrics]
listen = "127.0.0.1:$(free_port)"

[api]
socket = "$dir/control.sock"

[tables]
region = "$region"
max_services = 4
max_workers = 4
arena_mb = 4

[[services]]
name = "bench"
vip = "10.90.0.100"
port = 8080
protocol = "tcp"
mode = "$mode"
EOF
  for i in 1 2 3; do
    printf '\n[[services.backends]]\nname = "b%s"\naddress = "10.90.0.1%s"\nmac = "02:90:00:00:00:0%s"\n' \
      "$i" "$i" "$i" >>"$dir/control.toml"
  done
  cat >"$dir/dataplane.toml" <<EOF
tables = "$region"
tables_wait_s = 15

[eal]
memory = "hugepages"
memory_mb = 512
main_lcore = $GEN_CORE
log_level = "*:warning"
mbufs = 32767

[[ports]]
device = "net_memif0,role=client,$MEMIF,mac=$FWD_MAC"

[workers]
cores = [$FWD_CORE]
idle_sleep_max_us = 0

[node]
ipv4 = "10.90.0.3"

[conntrack]
capacity_per_worker = 262144
EOF
  RUST_LOG=warn taskset -c "$GEN_CORE" "$CONTROL" --config "$dir/control.toml" >"$dir/control.log" 2>&1 &
  cpid=$!
  PIDS+=("$cpid")
  start_pktgen "$dir/pktgen.log"
  RUST_LOG=warn "$DATAPLANE" --config "$dir/dataplane.toml" >"$dir/dataplane.log" 2>&1 &
  dpid=$!
  PIDS+=("$dpid")
  l=$(load1)
  finish_pktgen "$dir/pktgen.log"
  alive "$dpid" || echo "   sluice-dataplane died: $(tail -n 3 "$dir/dataplane.log")" >&2
  stop_pid "$dpid"
  stop_pid "$cpid"
  record "$mode" "$l"
}

LOAD_BEFORE=$(load1)
for r in $(seq "$ROUNDS"); do
  echo "== round $r of $ROUNDS" >&2
  run_testpmd
  run_sluice dsr "$r"
  run_sluice nat "$r"
done

{
  echo
  echo "### Throughput over net_memif — $(date -u +%Y-%m-%d) — commit $(git rev-parse --short HEAD 2>/dev/null || echo none)"
  echo
  echo "Machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, kernel $(uname -r), DPDK $(pkg-config --modversion libdpdk), hugepages 2 MB (\`--in-memory\`). 1-min load before the run: $LOAD_BEFORE."
  echo "Command: \`bench/throughput.sh $SECS $FLOWS $ROUNDS\` — pktgen (memif server, CPU $GEN_CORE) ↔ forwarder (memif client, one forwarding core on CPU $FWD_CORE), 64-byte TCP frames (ACK, no SYN), $FLOWS flows round-robin to one VIP, burst 32, memif rings of 16384, ${SECS} s after a 1 s warm-up; $ROUNDS rounds of the three in turn, median shown. 1-min load after the run: $(load1)."
  echo
  echo "| forwarder | forwarded (back at pktgen, Mpps), median | every round | / testpmd (medians) | pktgen TX accepted (Mpps) | TX found the ring full | loss | latency p50 / p99 (µs) | dst MAC rewritten | load (1 min) |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  NAME="dpdk-testpmd io-fwd (the ceiling)" row testpmd
  NAME="sluice-dataplane, DSR, 1 worker" row dsr
  NAME="sluice-dataplane, NAT, 1 worker" row nat
} | tee -a "$RESULTS"
