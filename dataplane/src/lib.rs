//! Sluice's dataplane: everything a forwarding worker does to a packet, and the safe DPDK
//! wrapper (`io`, behind the default `dpdk` feature) that feeds it.
//!
//! Only `io` (and the shared-memory mapping) may use `unsafe`; everything else works on plain
//! `&[u8]` / `&mut [u8]` packet bytes so it is unit-testable, fuzzable and benchable without DPDK.

#![deny(unsafe_code)]

pub mod config;
pub mod conntrack;
pub mod flow;
pub mod io;
pub mod maglev;
pub mod pipeline;
pub mod tables;
pub mod wire;
#[cfg(feature = "dpdk")]
pub mod worker;
