//! The one error type of this crate.
//!
//! Every variant carries what a caller needs to act on it: the path involved, the errno as a
//! `#[source]`, and for permission problems a hint that the action needs root
//! (`CAP_SYS_ADMIN`). [`HugepageError::is_permission_denied`] lets a CLI map those to their
//! own exit code.

use std::io;
use std::path::PathBuf;

use crate::PageSize;

/// What can go wrong while inspecting, reserving, mounting or mapping hugepage memory.
#[derive(Debug, thiserror::Error)]
pub enum HugepageError {
    /// Reading or writing a kernel interface file (`/proc/meminfo`, `/proc/self/mounts`,
    /// `/sys/kernel/mm/hugepages/...`) failed for a reason other than permissions.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },

    /// A kernel interface file held text this crate could not parse.
    #[error("cannot parse {what}: {reason} (in {text:?})")]
    Parse {
        /// Which file or field was being parsed.
        what: String,
        /// The offending text (one line or value).
        text: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The action needs privileges this process lacks (root or `CAP_SYS_ADMIN`).
    #[error("permission denied: {action} ({path}): {source}; this needs root (CAP_SYS_ADMIN)")]
    PermissionDenied {
        /// What was being attempted, e.g. "reserve hugepages" or "mount hugetlbfs".
        action: &'static str,
        /// The file or mount point involved.
        path: PathBuf,
        /// The underlying OS error (`EACCES`, `EPERM` or `EROFS`).
        #[source]
        source: io::Error,
    },

    /// A page size string such as `2M` or `1G` could not be parsed.
    #[error("invalid page size {0:?}: expected a power of two such as 4K, 2M or 1G")]
    InvalidPageSize(String),

    /// The kernel has no hugepage pool of this size (no `hugepages-<N>kB` directory in sysfs).
    #[error("the kernel has no {0} hugepage pool")]
    UnsupportedPageSize(PageSize),

    /// `mount(2)` of hugetlbfs failed for a reason other than permissions.
    #[error("cannot mount hugetlbfs ({page_size}) at {dir}: {source}")]
    Mount {
        /// The intended mount point.
        dir: PathBuf,
        /// The page size that was asked for.
        page_size: PageSize,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },

    /// The mount point is already used by another file system, or by a hugetlbfs mount with a
    /// different page size; mounting over it would hide what is there.
    #[error("{dir} is already a mount point ({existing}); not mounting over it")]
    MountPointBusy {
        /// The intended mount point.
        dir: PathBuf,
        /// A description of what is mounted there now.
        existing: String,
    },

    /// A region name is empty, too long, or contains characters other than
    /// `[A-Za-z0-9._-]` (or starts with `.`).
    #[error("invalid region name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A region size is zero or too large to map on this machine.
    #[error("invalid region size {size}: {reason}")]
    InvalidSize {
        /// The requested size in bytes.
        size: u64,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// `create` found a region of that name already in place; use `create_or_open` to attach
    /// to it instead.
    #[error("region {name:?} already exists at {path}")]
    AlreadyExists {
        /// The region name.
        name: String,
        /// Where the existing file lives.
        path: PathBuf,
    },

    /// `open` found no region of that name in any allowed location.
    #[error("region {name:?} not found (looked in {searched})")]
    NotFound {
        /// The region name.
        name: String,
        /// The directories searched, comma separated.
        searched: String,
    },

    /// An existing region file does not have the size the caller expects, or its size is not a
    /// positive multiple of its page size (a file this crate did not create).
    #[error("region {name:?} at {path} is {found} bytes, expected {expected}")]
    SizeMismatch {
        /// The region name.
        name: String,
        /// The region file.
        path: PathBuf,
        /// The size the caller asked for, rounded up to the page size (or, when the file is
        /// not page-aligned, the next page multiple).
        expected: u64,
        /// The file's actual size.
        found: u64,
    },

    /// [`crate::Backing::Hugetlbfs`] was forced but no hugetlbfs mount can hold the region.
    #[error("no usable hugetlbfs mount for region {name:?}: {reason}")]
    NoUsableHugetlbfs {
        /// The region name.
        name: String,
        /// Why each candidate was rejected.
        reason: String,
    },

    /// Creating, sizing or mapping a region file failed.
    #[error("cannot {action} region file {path}: {source}")]
    Region {
        /// The step that failed: "create", "size", "allocate", "map", "link" or "remove".
        action: &'static str,
        /// The region file.
        path: PathBuf,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
}

impl HugepageError {
    /// True when the failure is a missing privilege, so retrying as root may help.
    #[must_use]
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Self::PermissionDenied { .. })
    }

    /// Maps an I/O error on `path` to [`HugepageError::PermissionDenied`] when the errno says
    /// so, else to [`HugepageError::Io`].
    pub(crate) fn from_io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> Self {
        let path = path.into();
        if is_permission_errno(&source) {
            Self::PermissionDenied {
                action,
                path,
                source,
            }
        } else {
            Self::Io { path, source }
        }
    }
}

/// `EACCES`, `EPERM` and `EROFS` all mean "not allowed here".
pub(crate) fn is_permission_errno(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EACCES | libc::EPERM | libc::EROFS)
    )
}

/// Shorthand for this crate's results.
pub type Result<T, E = HugepageError> = std::result::Result<T, E>;
