#!/usr/bin/env bash
# The README's test command: runs every Sluice check and test on a fresh Debian 12 machine as
# root. Installs its own dependencies (ci/setup.sh), then: formatting, clippy with warnings as
# errors (with and without the DPDK feature), the unsafe-code boundary, every test (including
# the namespace and multi-process ones), and a build of the fuzz targets. Exits non-zero on
# any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step prints how long the one before it took, so a slow CI run shows where its time went.
last=$SECONDS
step() {
  printf '\n==> %s (previous step: %ss, total: %ss)\n' "$*" "$((SECONDS - last))" "$SECONDS"
  last=$SECONDS
}

step "setup (packages, hugepages)"
ci/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "clippy (all targets, DPDK on)"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "clippy (dataplane without DPDK, as control uses it)"
cargo clippy -p sluice-dataplane --no-default-features --lib --locked -- -D warnings

step "unsafe only where allowed"
ci/check-unsafe.sh

step "fuzz targets build"
ci/fuzz.sh build

step "tests"
mkdir -p target
# A watchdog well inside CI's 90 minutes: a hung test fails this step with its name still on
# screen (the harness reports tests running for over 60 s) instead of timing the whole run out.
limit=${SLUICE_TEST_TIMEOUT:-2700}
set +e
timeout --kill-after=30 "$limit" \
  cargo test --workspace --locked --no-fail-fast -- --include-ignored 2>&1 | tee target/test.log
status=${PIPESTATUS[0]}
case $status in 124 | 137) echo "tests: stopped after $limit s (a test hung?)" ;; esac
set -e
passed=$(grep -o '[0-9]* passed' target/test.log | awk '{s += $1} END {print s + 0}')
failed=$(grep -o '[0-9]* failed' target/test.log | awk '{s += $1} END {print s + 0}')
echo
echo "tests: $passed passed, $failed failed (test step: $((SECONDS - last)) s, total: $SECONDS s)"
exit "$status"
