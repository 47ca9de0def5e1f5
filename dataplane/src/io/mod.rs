//! The safe DPDK wrapper (behind the `dpdk` feature): the only code besides `sluice-ffi` that
//! calls DPDK. Also home of the other mapped-memory code, built without DPDK too: the shared
//! table region, which `control` uses, and the hugepage-backed arrays and prefetch hint of
//! the per-worker conntrack table ([`mem`]).
//!
//! It exposes [`Eal`], [`Mempool`], [`Port`], [`RxQueue`], [`TxQueue`], [`Mbuf`] and
//! [`MbufBurst`]; everything above this module sees packet bytes as `&[u8]` / `&mut [u8]`.
//!
//! # Guarantees
//!
//! - Every EAL start passes `--no-pci` unless the caller gives an explicit PCI allow-list
//!   ([`EalConfig::to_eal_args`]), so no run ever takes the machine's own NIC by accident.
//! - An [`Mbuf`] owns its buffer and frees it on `Drop`; an [`MbufBurst`] frees whatever it still
//!   holds in bulk. [`TxQueue::tx_burst`] hands DPDK only the prefix it accepts and leaves the
//!   refused rest in the burst, so the caller frees *and counts* it: nothing leaks.
//! - Teardown order is enforced by reference counting, never by convention: queues hold their
//!   port, ports hold their mempools and the EAL, mempools hold the EAL. A port is stopped and
//!   closed when its last queue is gone; a mempool is freed only after that, and only when no
//!   mbuf of it is still out (otherwise it is deliberately leaked, with a warning, rather than
//!   freed under a live mbuf); `rte_eal_cleanup` runs last.
//! - `rte_eal_init` pins the calling thread to the main lcore; [`Eal::init`] restores the
//!   caller's previous CPU affinity, so threads spawned afterwards are not silently pinned.
//!
//! Workers are plain std threads pinned with `core_affinity`; they call [`register_thread`] so
//! DPDK gives them an lcore id and with it a mempool cache.
#![allow(unsafe_code)]

#[cfg(feature = "dpdk")]
mod eal;
#[cfg(feature = "dpdk")]
mod error;
#[cfg(feature = "dpdk")]
mod mbuf;
pub mod mem;
#[cfg(feature = "dpdk")]
mod mempool;
#[cfg(feature = "dpdk")]
mod port;
pub mod shm;
pub mod sockopt;

#[cfg(feature = "dpdk")]
pub use eal::{Eal, EalConfig, EalError, Memory, lcore_id, register_thread, tsc, tsc_hz};
#[cfg(feature = "dpdk")]
pub use error::DpdkError;
#[cfg(feature = "dpdk")]
pub use mbuf::{BURST, Mbuf, MbufBurst, MbufError};
#[cfg(feature = "dpdk")]
pub use mempool::{Mempool, MempoolConfig};
#[cfg(feature = "dpdk")]
pub use port::{
    LinkStatus, Port, PortConfig, PortError, PortId, PortInfo, PortStats, QueueId, RxQueue, TxQueue,
};
pub use shm::{Backing, ShmError};
