//! Growing a hugepage pool and mounting hugetlbfs. Both need root (`CAP_SYS_ADMIN`); without
//! it they fail with [`HugepageError::PermissionDenied`] and change nothing.
//!
//! Contract:
//! - [`reserve`] never shrinks a pool: other programs on the machine (another DPDK process,
//!   another Sluice) may be using its pages. It writes `nr_hugepages` only when the pool is
//!   smaller than asked, then reads back what the kernel actually granted, which can be less
//!   (fragmented memory); [`Reservation::is_complete`] says whether it was enough.
//! - [`mount_hugetlbfs`] is idempotent: an existing hugetlbfs mount with the same page size
//!   at the same place is returned as is. It refuses to mount over anything else.

use std::ffi::CString;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use crate::PageSize;
use crate::error::{HugepageError, Result, is_permission_errno};
use crate::status::{
    HugetlbfsMount, SysPaths, parse_mount_table, parse_mounts, read_pool, read_text,
};

/// The outcome of [`reserve`]: what was asked and what the kernel granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The page size of the pool.
    pub page_size: PageSize,
    /// The pool size the caller asked for, in pages.
    pub requested: u64,
    /// The pool size before the call.
    pub before: u64,
    /// The pool size after the call (`nr_hugepages` read back): what the kernel granted.
    pub granted: u64,
    /// Free pages in the pool after the call.
    pub free: u64,
}

impl Reservation {
    /// True when the pool now holds at least the requested number of pages.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.granted >= self.requested
    }
}

/// Makes sure the persistent pool of `page_size` pages holds at least `count` pages, and
/// reports what the kernel granted. Never shrinks the pool.
///
/// # Errors
///
/// [`HugepageError::UnsupportedPageSize`] when the kernel has no such pool,
/// [`HugepageError::PermissionDenied`] when not root, [`HugepageError::Io`] when the kernel
/// rejects the write.
pub fn reserve(page_size: PageSize, count: u64) -> Result<Reservation> {
    reserve_at(&SysPaths::default(), page_size, count)
}

/// [`reserve`] against the interfaces at `paths` (tests point it at a fixture tree).
///
/// # Errors
///
/// As [`reserve`].
pub fn reserve_at(paths: &SysPaths, page_size: PageSize, count: u64) -> Result<Reservation> {
    let before = read_pool(paths, page_size)?;
    if before.total < count {
        let path = paths.pool_dir(page_size).join("nr_hugepages");
        let write = || -> io::Result<()> {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&path)?;
            file.write_all(format!("{count}\n").as_bytes())
        };
        write().map_err(|e| HugepageError::from_io("reserve hugepages", &path, e))?;
    }
    let after = read_pool(paths, page_size)?;
    let reservation = Reservation {
        page_size,
        requested: count,
        before: before.total,
        granted: after.total,
        free: after.free,
    };
    if !reservation.is_complete() {
        tracing::warn!(
            %page_size,
            requested = count,
            granted = after.total,
            "the kernel granted fewer hugepages than requested"
        );
    }
    Ok(reservation)
}

/// Mounts hugetlbfs with `page_size` pages at `dir` (creating the directory), unless such a
/// mount is already there, and returns the mount as the kernel reports it.
///
/// # Errors
///
/// [`HugepageError::MountPointBusy`] when `dir` is already a mount point of something else,
/// [`HugepageError::UnsupportedPageSize`] when the kernel has no pool of that size,
/// [`HugepageError::PermissionDenied`] when not root, [`HugepageError::Mount`] for any other
/// `mount(2)` failure.
pub fn mount_hugetlbfs(dir: &Path, page_size: PageSize) -> Result<HugetlbfsMount> {
    let paths = SysPaths::default();
    read_pool(&paths, page_size)?;
    if let Some(existing) = find_mount(&paths, dir)? {
        return match existing {
            Existing::Hugetlbfs(m) if m.page_size == page_size => Ok(m),
            Existing::Hugetlbfs(m) => Err(HugepageError::MountPointBusy {
                dir: dir.to_owned(),
                existing: format!("hugetlbfs with {} pages", m.page_size),
            }),
            Existing::Other(fstype) => Err(HugepageError::MountPointBusy {
                dir: dir.to_owned(),
                existing: fstype,
            }),
        };
    }
    fs::create_dir_all(dir)
        .map_err(|e| HugepageError::from_io("create hugetlbfs mount point", dir, e))?;
    let mount_error = |source: io::Error| {
        if is_permission_errno(&source) {
            HugepageError::PermissionDenied {
                action: "mount hugetlbfs",
                path: dir.to_owned(),
                source,
            }
        } else {
            HugepageError::Mount {
                dir: dir.to_owned(),
                page_size,
                source,
            }
        }
    };
    let target = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| mount_error(io::Error::from(io::ErrorKind::InvalidInput)))?;
    let data = CString::new(format!("pagesize={}", page_size.bytes()))
        .map_err(|_| mount_error(io::Error::from(io::ErrorKind::InvalidInput)))?;
    // SAFETY: all four strings are NUL-terminated and outlive the call; hugetlbfs reads `data`
    // as a NUL-terminated option string; mount(2) touches no other caller memory.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"hugetlbfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast::<libc::c_void>(),
        )
    };
    if rc != 0 {
        return Err(mount_error(io::Error::last_os_error()));
    }
    match find_mount(&paths, dir)? {
        Some(Existing::Hugetlbfs(m)) => {
            tracing::info!(dir = %m.path.display(), page_size = %m.page_size, "mounted hugetlbfs");
            Ok(m)
        }
        _ => Err(mount_error(io::Error::other(
            "mount succeeded but is not in /proc/self/mounts",
        ))),
    }
}

enum Existing {
    Hugetlbfs(HugetlbfsMount),
    Other(String),
}

/// The topmost mount at `dir`, if `dir` is a mount point.
fn find_mount(paths: &SysPaths, dir: &Path) -> Result<Option<Existing>> {
    let Ok(dir) = dir.canonicalize() else {
        return Ok(None); // Does not exist yet, so nothing is mounted there.
    };
    let text = read_text(&paths.mounts)?;
    let default = crate::status::parse_meminfo(&read_text(&paths.meminfo)?)?.default_page_size;
    // Later lines are mounted on top of earlier ones at the same point.
    let Some(top) = parse_mount_table(&text)?
        .into_iter()
        .rev()
        .find(|m| m.path == dir)
    else {
        return Ok(None);
    };
    if top.fstype != "hugetlbfs" {
        return Ok(Some(Existing::Other(top.fstype)));
    }
    let top_path: PathBuf = top.path;
    let mount = parse_mounts(&text, default)?
        .into_iter()
        .rev()
        .find(|m| m.path == top_path);
    Ok(mount.map(Existing::Hugetlbfs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::tests::FakeSys;

    #[test]
    fn grows_but_never_shrinks() {
        let fake = FakeSys::new("reserve");
        fake.add_pool(PageSize::SIZE_2M, [8, 8, 0, 0, 0]);
        let nr = fake.paths.pool_dir(PageSize::SIZE_2M).join("nr_hugepages");

        let r = reserve_at(&fake.paths, PageSize::SIZE_2M, 32).unwrap();
        assert_eq!((r.requested, r.before, r.granted), (32, 8, 32));
        assert!(r.is_complete());
        assert_eq!(fs::read_to_string(&nr).unwrap(), "32\n");

        // Asking for fewer leaves the pool alone.
        fs::write(&nr, "40\n").unwrap();
        let r = reserve_at(&fake.paths, PageSize::SIZE_2M, 16).unwrap();
        assert_eq!((r.before, r.granted), (40, 40));
        assert_eq!(fs::read_to_string(&nr).unwrap(), "40\n");

        assert!(matches!(
            reserve_at(&fake.paths, PageSize::SIZE_1G, 1),
            Err(HugepageError::UnsupportedPageSize(_))
        ));
    }

    #[test]
    fn partial_grant_is_not_complete() {
        // A fixture file cannot clamp a write the way the kernel does, so only the verdict is
        // checked here; the CLI test on a real machine covers the read-back.
        let r = Reservation {
            page_size: PageSize::SIZE_2M,
            requested: 64,
            before: 0,
            granted: 10,
            free: 10,
        };
        assert!(!r.is_complete());
    }

    #[test]
    fn mounting_an_existing_mount_is_a_no_op() {
        let Ok(status) = crate::HugepageStatus::read() else {
            return;
        };
        // Only meaningful where a hugetlbfs mount exists (CI mounts /dev/hugepages).
        // Only the topmost mount of each path is visible; check those.
        let topmost = status
            .mounts
            .iter()
            .enumerate()
            .filter(|(i, m)| {
                !status.mounts[i + 1..]
                    .iter()
                    .any(|later| later.path == m.path)
            })
            .map(|(_, m)| m);
        for m in topmost.filter(|m| !m.read_only) {
            let again = mount_hugetlbfs(&m.path, m.page_size).unwrap();
            assert_eq!(again.path, m.path);
            assert_eq!(again.page_size, m.page_size);
        }
    }

    #[test]
    fn refuses_to_mount_over_another_file_system() {
        // /proc is always a mount point of type proc.
        let err = mount_hugetlbfs(Path::new("/proc"), PageSize::SIZE_2M);
        match err {
            Err(HugepageError::MountPointBusy { existing, .. }) => assert_eq!(existing, "proc"),
            // A kernel without 2M pages fails earlier, which is fine too.
            Err(HugepageError::UnsupportedPageSize(_)) => {}
            other => panic!("expected MountPointBusy, got {other:?}"),
        }
    }
}
