//! Packet buffer pools.

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use sluice_ffi as ffi;

use super::eal::{Eal, LEAKED};
use super::error::{DpdkError, ToResult};

/// `SOCKET_ID_ANY` from `rte_memory.h` (a macro bindgen does not export).
pub(crate) const SOCKET_ID_ANY: i32 = -1;

/// How to size a packet pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Unique pool name (DPDK memzone names are global to the process; at most 26 bytes).
    pub name: String,
    /// Number of mbufs. Best as 2^n − 1. Default 8191.
    pub size: u32,
    /// Per-lcore cache size. Default 256 (must be ≤ 512 and ≤ size / 1.5).
    pub cache_size: u32,
    /// Data room per mbuf in bytes, headroom included. Default 2176 (2048 + 128 headroom).
    pub data_room: u16,
    /// NUMA socket, or `None` for any.
    pub socket: Option<i32>,
}

impl MempoolConfig {
    /// A pool named `name` with the defaults.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            size: 8191,
            cache_size: 256,
            data_room: 2176,
            socket: None,
        }
    }
}

/// A DPDK packet mempool. Cheap to clone; freed when the last clone (held by ports and
/// callers) is dropped, and then only if no mbuf of it is still out.
#[derive(Clone)]
pub struct Mempool {
    inner: Arc<MempoolInner>,
}

struct MempoolInner {
    raw: NonNull<ffi::rte_mempool>,
    name: String,
    capacity: u32,
    _eal: Eal,
}

// SAFETY: DPDK mempools are multi-producer/multi-consumer safe by default (the ring ops used by
// rte_pktmbuf_pool_create); the pointer is only used through thread-safe DPDK calls.
unsafe impl Send for MempoolInner {}
// SAFETY: as above; shared access only goes through thread-safe DPDK calls.
unsafe impl Sync for MempoolInner {}

impl std::fmt::Debug for Mempool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mempool")
            .field("name", &self.inner.name)
            .field("in_use", &self.in_use())
            .field("available", &self.available())
            .finish()
    }
}

impl Mempool {
    /// Creates a packet pool.
    ///
    /// # Errors
    /// DPDK's error: `ENOMEM` when the EAL has too little memory, `EEXIST` for a taken name,
    /// `EINVAL` for a bad size/cache combination.
    pub fn new(eal: &Eal, config: &MempoolConfig) -> Result<Mempool, DpdkError> {
        let name = CString::new(config.name.as_str()).map_err(|_| DpdkError {
            call: "rte_pktmbuf_pool_create",
            errno: 22,
        })?;
        // SAFETY: `name` is a valid C string for the call (DPDK copies it); the EAL is started
        // (we hold an `Eal`); the numeric arguments are checked by DPDK.
        let raw = unsafe {
            ffi::rte_pktmbuf_pool_create(
                name.as_ptr(),
                config.size,
                config.cache_size,
                0,
                config.data_room,
                config.socket.unwrap_or(SOCKET_ID_ANY),
            )
        }
        .to_result("rte_pktmbuf_pool_create")?;
        Ok(Mempool {
            inner: Arc::new(MempoolInner {
                raw,
                name: config.name.clone(),
                capacity: config.size,
                _eal: eal.clone(),
            }),
        })
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Total mbufs in the pool.
    pub fn capacity(&self) -> u32 {
        self.inner.capacity
    }

    /// Mbufs currently allocated (out of the pool, including those sitting in port rings).
    pub fn in_use(&self) -> u32 {
        // SAFETY: `raw` is a live mempool (freed only when the last clone drops).
        unsafe { ffi::rte_mempool_in_use_count(self.inner.raw.as_ptr()) }
    }

    /// Mbufs free in the pool, per-lcore caches included.
    pub fn available(&self) -> u32 {
        // SAFETY: `raw` is a live mempool.
        unsafe { ffi::rte_mempool_avail_count(self.inner.raw.as_ptr()) }
    }

    /// The raw pool pointer, for the other io types.
    pub(crate) fn as_ptr(&self) -> *mut ffi::rte_mempool {
        self.inner.raw.as_ptr()
    }
}

impl Drop for MempoolInner {
    fn drop(&mut self) {
        // SAFETY: `raw` is a live mempool; no port holds it any more (ports hold a clone).
        let in_use = unsafe { ffi::rte_mempool_in_use_count(self.raw.as_ptr()) };
        if in_use == 0 {
            // SAFETY: no mbuf of this pool is out and nothing else references the pool.
            unsafe { ffi::rte_mempool_free(self.raw.as_ptr()) };
        } else {
            // Freeing now would leave live mbufs pointing into freed memory: leak instead.
            LEAKED.store(true, Ordering::SeqCst);
            tracing::warn!(pool = %self.name, in_use, "mempool dropped with mbufs still out; leaking it");
        }
    }
}
