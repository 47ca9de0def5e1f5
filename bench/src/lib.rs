//! Shared helpers for Sluice's benchmarks.
