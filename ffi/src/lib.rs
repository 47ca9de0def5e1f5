//! Raw DPDK bindings for Sluice: bindgen output over Debian's `libdpdk-dev`, plus the
//! `sluice_rte_*` wrappers of DPDK's `static inline` functions (see `src/shim.h`).
//!
//! Supported DPDK: the 22.11 LTS (Debian 12's `libdpdk-dev`); the build warns on any other
//! release. [`DPDK_VERSION`] is the version found at build time.
//!
//! This crate holds no logic. The only Rust that calls it is `sluice_dataplane::io`, which wraps
//! every handle in a safe type.

#![allow(unsafe_code)]
#![allow(missing_docs, missing_debug_implementations)]
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    unsafe_op_in_unsafe_fn,
    improper_ctypes,
    rustdoc::all,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    clippy::ptr_as_ptr,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// The DPDK version this crate was built against (from pkg-config).
pub const DPDK_VERSION: &str = env!("SLUICE_DPDK_VERSION");
