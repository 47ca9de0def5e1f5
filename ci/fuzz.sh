#!/usr/bin/env bash
# Fuzz targets (fuzz/, cargo-fuzz layout).
#   ci/fuzz.sh build          build every target (what CI runs)
#   ci/fuzz.sh run T [SECS]   fuzz target T for SECS seconds (default 60) on its kept corpus
# cargo-fuzz needs a nightly toolchain; without one, `build` falls back to compiling the
# targets on stable (`cargo check`), which still catches API drift.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d fuzz ] || { echo "no fuzz/ directory yet"; exit 0; }
have_nightly() { cargo +nightly --version >/dev/null 2>&1; }
ensure_cargo_fuzz() {
  cargo fuzz --version >/dev/null 2>&1 || cargo install --locked cargo-fuzz
}
case "${1:-build}" in
  build)
    if have_nightly && ensure_cargo_fuzz; then
      (cd fuzz && cargo +nightly fuzz build)
    else
      echo "fuzz: no nightly toolchain; checking the targets on stable instead"
      # The targets' bodies live in the crates under `cfg(fuzzing)`, which cargo-fuzz sets.
      RUSTFLAGS="${RUSTFLAGS:-} --cfg fuzzing" cargo check --manifest-path fuzz/Cargo.toml --bins
    fi
    ;;
  run)
    t=${2:?target}
    secs=${3:-60}
    ensure_cargo_fuzz
    mkdir -p "fuzz/corpus/$t"
    (cd fuzz && cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs")
    ;;
  *) echo "usage: ci/fuzz.sh build | run TARGET [SECS]" >&2; exit 2 ;;
esac
