#![allow(unsafe_code)]
//! Hugepage memory for Sluice: find, reserve and mount hugetlbfs, and map named shared
//! regions on hugepages, falling back to `/dev/shm` with a warning.
//!
//! This crate owns every syscall that touches hugepages in Sluice. It gives these guarantees:
//!
//! - [`HugepageStatus`]: a snapshot of the kernel's hugepage pools (per page size: total,
//!   free, reserved, surplus, overcommit), the `/proc/meminfo` lines, and the hugetlbfs mounts
//!   with their page sizes. Reading never changes anything. The parsers are pure and never
//!   panic on malformed text.
//! - [`reserve`] grows a pool (never shrinks it) and reports what the kernel granted;
//!   [`mount_hugetlbfs`] mounts hugetlbfs idempotently. Both need root and otherwise fail
//!   with [`HugepageError::PermissionDenied`].
//! - [`Region`]: a named, page-aligned `MAP_SHARED` mapping that other processes open by the
//!   same name; see the [`region`] module docs for the full contract (placement, rounding,
//!   atomic publication, no `SIGBUS` from hugepage shortage, concurrency rules).
//!
//! The dataplane's mapped-table code reaches region memory only through [`Region::as_ptr`] /
//! [`Region::as_mut_ptr`] and [`Region::len`]; the casting to its `#[repr(C)]` types is its
//! own (`dataplane/src/io/`). All `unsafe` here is: `mmap` (memmap2), `fallocate`, `mount`
//! and `sysconf`, one call per block.

mod error;
mod page_size;
pub mod region;
mod reserve;
mod status;

pub use error::{HugepageError, Result};
pub use page_size::PageSize;
pub use region::{Backing, Region, RegionBacking};
pub use reserve::{Reservation, mount_hugetlbfs, reserve, reserve_at};
pub use status::{
    HugepageStatus, HugetlbfsMount, Meminfo, PoolStats, SysPaths, parse_meminfo, parse_mounts,
    parse_pool_dir_name, parse_sysfs_count, read_pool,
};

/// Helpers for this crate's own unit tests.
#[cfg(test)]
mod test_support {
    use crate::{HugepageStatus, HugetlbfsMount, PoolStats};

    /// A writable hugetlbfs mount whose pool has free pages and no overcommit headroom, or
    /// `None` when `SLUICE_ALLOW_NO_HUGEPAGES=1` says a machine without one is acceptable.
    ///
    /// # Panics
    ///
    /// When there is no such mount and the variable is not set: CI reserves pages and mounts
    /// `/dev/hugepages` before the tests, so a missing mount is a failure, not a skip.
    pub(crate) fn usable_hugetlbfs() -> Option<(HugetlbfsMount, PoolStats)> {
        let status = HugepageStatus::read().expect("read hugepage status");
        let found = status.mounts.iter().filter(|m| !m.read_only).find_map(|m| {
            let pool = status.pool(m.page_size)?;
            (pool.available() > 0 && pool.overcommit == 0).then(|| (m.clone(), *pool))
        });
        if found.is_none() {
            assert!(
                std::env::var("SLUICE_ALLOW_NO_HUGEPAGES").is_ok_and(|v| v == "1"),
                "no writable hugetlbfs mount with free pages (and no overcommit). As root: \
                 echo 64 > /proc/sys/vm/nr_hugepages; mkdir -p /dev/hugepages; \
                 mount -t hugetlbfs nodev /dev/hugepages — or set SLUICE_ALLOW_NO_HUGEPAGES=1"
            );
            eprintln!(
                "note: no usable hugetlbfs; hugetlbfs checks skipped (SLUICE_ALLOW_NO_HUGEPAGES=1)"
            );
        }
        found
    }
}
