//! Shared helpers of the integration tests.

#![allow(dead_code)] // Each test binary uses a different subset.

use sluice_hugepages::{HugepageStatus, HugetlbfsMount, PoolStats, Region};

/// The env var that lets a machine without hugepages pass the hugetlbfs tests.
pub const ALLOW_NO_HUGEPAGES: &str = "SLUICE_ALLOW_NO_HUGEPAGES";

/// A writable hugetlbfs mount whose pool has at least `min_pages` available pages and no
/// overcommit headroom (so "too many pages" is a real shortage), or `None` when
/// `SLUICE_ALLOW_NO_HUGEPAGES=1` accepts a machine without one.
///
/// # Panics
///
/// When there is no such mount and the variable is not set: CI reserves pages and mounts
/// `/dev/hugepages` before the tests, so a missing mount is a failure, never a silent skip.
pub fn usable_hugetlbfs(min_pages: u64) -> Option<(HugetlbfsMount, PoolStats)> {
    let status = HugepageStatus::read().expect("read hugepage status");
    let found = status.mounts.iter().filter(|m| !m.read_only).find_map(|m| {
        let pool = status.pool(m.page_size)?;
        (pool.available() >= min_pages && pool.overcommit == 0).then(|| (m.clone(), *pool))
    });
    if found.is_none() {
        assert!(
            std::env::var(ALLOW_NO_HUGEPAGES).is_ok_and(|v| v == "1"),
            "no writable hugetlbfs mount with {min_pages} available pages; status: {status:#?}\n\
             As root: echo 64 > /proc/sys/vm/nr_hugepages; mkdir -p /dev/hugepages; \
             mount -t hugetlbfs nodev /dev/hugepages — or set {ALLOW_NO_HUGEPAGES}=1 to skip"
        );
        eprintln!("note: no usable hugetlbfs; hugetlbfs case skipped ({ALLOW_NO_HUGEPAGES}=1)");
    }
    found
}

/// A region name unique to this test and process.
pub fn unique_name(tag: &str) -> String {
    format!("it-{tag}-{}", std::process::id())
}

/// Removes a region name from every location when dropped, pass or fail.
#[derive(Debug)]
pub struct RemoveOnDrop(pub String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(e) = Region::remove(&self.0) {
            eprintln!("cleanup of region {:?} failed: {e}", self.0);
        }
    }
}
