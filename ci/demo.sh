#!/usr/bin/env bash
# The README's run command: Sluice's main job on the embedded default.
#
# Installs what is missing (apt packages, hugepages), builds Sluice in release mode, then
# `sluice-demo` builds a namespace testbed (a client, an LB node, three backends running real
# HTTP servers), starts sluice-control (ci/demo/control.toml: a static config, two VIPs) and
# sluice-dataplane (ci/demo/dataplane.toml: DPDK net_af_packet on the LB node's veth), sends
# real connections from the client to the VIPs, checks every byte, and prints how they spread
# over the backends, then shows `sluicectl status`, the backends with their counters and a few
# metrics. Everything it creates is removed on exit, pass or fail. Needs root.
#
# SLUICE_DEMO_CONNECTIONS sets connections per VIP (default 300).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> installing what is missing and reserving hugepages"
ci/setup.sh
echo "==> building Sluice (release)"
cargo build --release -q --locked -p sluice-dataplane --bin sluice-dataplane
cargo build --release -q --locked -p sluice-control --bins
cargo build --release -q --locked -p sluice-testbed --bins
exec target/release/sluice-demo ci/demo/control.toml ci/demo/dataplane.toml "${SLUICE_DEMO_CONNECTIONS:-300}"
