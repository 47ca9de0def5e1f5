//! Shared helpers for Sluice's benchmarks.

pub mod pktgen;
