//! Named shared-memory regions: one file per region in a hugetlbfs mount (or `/dev/shm`),
//! mapped `MAP_SHARED` so every process that opens the same name sees the same bytes.
//!
//! # Contract
//!
//! - **Names.** A region called `tables` lives in the file `sluice-tables` of its directory.
//!   Names are 1 to [`MAX_NAME_LEN`] bytes of `[A-Za-z0-9._-]` and do not start with `.`;
//!   anything else is [`HugepageError::InvalidName`].
//! - **Where.** [`Backing::Auto`] prefers hugetlbfs: mounts whose page size is the default
//!   hugepage size first, then the others from small to large, skipping read-only mounts and
//!   those whose pool has too few available pages. When none can hold the region (none mounted,
//!   too few free pages, or the kernel refuses with `ENOMEM`/`ENOSPC`/`EINVAL`/`EACCES`), it
//!   logs a `tracing::warn!` with the reasons and uses [`SHM_DIR`]. [`Backing::Hugetlbfs`] and
//!   [`Backing::Shm`] force one side; a forced hugetlbfs that cannot be had is
//!   [`HugepageError::NoUsableHugetlbfs`], never a silent fallback. `open` searches the same
//!   places in the same order.
//! - **Size.** The size is rounded up to the backing's page size; [`Region::len`] is the
//!   rounded size, which is also the file size. Both are positive multiples of the page size.
//! - **Alignment.** The mapping starts on a page boundary of its backing (at least 4 KiB on
//!   `/dev/shm`, the hugepage size on hugetlbfs), so any `#[repr(C)]` type with alignment up
//!   to 4096 can be placed at offset 0.
//! - **Atomic publication.** `create` builds the file under a temporary name, sizes it,
//!   maps it with `MAP_POPULATE` (on hugetlbfs this reserves every page or fails with
//!   `ENOMEM`), allocates every page (`fallocate`), and only then links it
//!   to its final name (failing with [`HugepageError::AlreadyExists`] if the name was taken
//!   meanwhile). So a region that can be opened always has its full size and zeroed memory,
//!   and running out of hugepages shows up as an error from `create`, not as a `SIGBUS` on a
//!   later access. A crash inside `create` can leave a `.sluice-<name>.<pid>.<n>.tmp` file.
//! - **Lifetime.** Dropping a [`Region`] unmaps it; the named file stays, so a restarted
//!   process re-attaches with `open`. [`Region::unlink`] / [`Region::remove`] delete the name;
//!   mappings stay valid until dropped.
//! - **Concurrency.** Other processes write the same memory at any time. Byte slices
//!   ([`Region::as_slice`], [`Region::as_mut_slice`]) are only sound for bytes no other party
//!   writes while the slice lives (for example during initialisation, before the region is
//!   announced). Shared state must go through atomics placed in the region via
//!   [`Region::as_ptr`]. Nobody may truncate a region file while it is mapped; doing so makes
//!   accesses past the new end raise `SIGBUS`.
//! - Files are created with mode `0600`: the creator's user (root for Sluice) only.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapMut, MmapOptions};

use crate::PageSize;
use crate::error::{HugepageError, Result, is_permission_errno};
use crate::status::{HugepageStatus, HugetlbfsMount};

/// The fallback directory: a tmpfs on every Linux system.
pub const SHM_DIR: &str = "/dev/shm";

/// The prefix of every region file name.
pub const FILE_PREFIX: &str = "sluice-";

/// The longest accepted region name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Where a region may live: the caller's choice, in the spirit of firecracker's
/// `HugePageConfig`.
///
/// Unlike that enum it owns no `mmap_flags()`: a file on hugetlbfs gets huge pages from the
/// file system, so the mapping needs no `MAP_HUGETLB`; every region is mapped
/// `MAP_SHARED | MAP_POPULATE` whatever its backing. Size validation is rounding to
/// [`PageSize`] rather than rejecting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backing {
    /// hugetlbfs when a mount can hold the region, else `/dev/shm` with a warning.
    #[default]
    Auto,
    /// hugetlbfs only; an error when no mount can hold the region.
    Hugetlbfs,
    /// `/dev/shm` only (ordinary pages).
    Shm,
}

// === impl Backing ===

impl Backing {
    /// True when hugetlbfs mounts may be used.
    #[must_use]
    pub const fn allows_hugetlbfs(self) -> bool {
        matches!(self, Self::Auto | Self::Hugetlbfs)
    }

    /// True when `/dev/shm` may be used.
    #[must_use]
    pub const fn allows_shm(self) -> bool {
        matches!(self, Self::Auto | Self::Shm)
    }
}

impl fmt::Display for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Hugetlbfs => "hugetlbfs",
            Self::Shm => "shm",
        })
    }
}

impl FromStr for Backing {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "hugetlbfs" | "huge" => Ok(Self::Hugetlbfs),
            "shm" => Ok(Self::Shm),
            _ => Err(format!(
                "unknown backing {s:?}: expected auto, hugetlbfs or shm"
            )),
        }
    }
}

/// Where an existing region lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionBacking {
    /// A file in a hugetlbfs mount.
    Hugetlbfs {
        /// The hugepage size of the mount.
        page_size: PageSize,
        /// The region file.
        path: PathBuf,
    },
    /// A file in `/dev/shm`, on ordinary pages.
    Shm {
        /// The region file.
        path: PathBuf,
    },
}

// === impl RegionBacking ===

impl RegionBacking {
    /// The region file.
    #[must_use]
    pub fn path(&self) -> &Path {
        match self {
            Self::Hugetlbfs { path, .. } | Self::Shm { path } => path,
        }
    }

    /// The page size backing the region (the machine's base page size for `/dev/shm`).
    #[must_use]
    pub fn page_size(&self) -> PageSize {
        match self {
            Self::Hugetlbfs { page_size, .. } => *page_size,
            Self::Shm { .. } => PageSize::base(),
        }
    }

    /// True for hugetlbfs.
    #[must_use]
    pub fn is_hugetlbfs(&self) -> bool {
        matches!(self, Self::Hugetlbfs { .. })
    }
}

/// A mapped named region. See the [module docs](self) for the contract.
#[derive(Debug)]
pub struct Region {
    name: String,
    map: MmapMut,
    backing: RegionBacking,
    /// `(st_dev, st_ino)` of the file, so `unlink` never deletes a successor of the same name.
    file_id: (u64, u64),
}

/// A directory that can hold region files.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Location {
    dir: PathBuf,
    /// `Some` for hugetlbfs (its page size), `None` for `/dev/shm`.
    huge: Option<PageSize>,
}

impl Location {
    fn shm() -> Self {
        Self {
            dir: PathBuf::from(SHM_DIR),
            huge: None,
        }
    }

    fn page_size(&self) -> PageSize {
        self.huge.unwrap_or_else(PageSize::base)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{FILE_PREFIX}{name}"))
    }

    fn backing(&self, path: PathBuf) -> RegionBacking {
        match self.huge {
            Some(page_size) => RegionBacking::Hugetlbfs { page_size, path },
            None => RegionBacking::Shm { path },
        }
    }
}

// === impl Region ===

impl Region {
    /// Creates region `name` of at least `size` bytes with [`Backing::Auto`].
    ///
    /// # Errors
    ///
    /// See [`Region::create_with`].
    pub fn create(name: &str, size: usize) -> Result<Self> {
        Self::create_with(name, size, Backing::Auto)
    }

    /// Creates region `name` of at least `size` bytes (rounded up to the page size) where
    /// `backing` allows. The memory is zeroed.
    ///
    /// # Errors
    ///
    /// [`HugepageError::InvalidName`], [`HugepageError::InvalidSize`] (zero or larger than
    /// the address space), [`HugepageError::AlreadyExists`] when the name exists in any place
    /// `backing` allows, [`HugepageError::NoUsableHugetlbfs`] when hugetlbfs is forced but
    /// cannot hold the region, [`HugepageError::Region`] / [`HugepageError::PermissionDenied`]
    /// when the file cannot be created, allocated or mapped.
    pub fn create_with(name: &str, size: usize, backing: Backing) -> Result<Self> {
        Self::validate_name(name)?;
        let size = checked_size(size)?;
        let (status, mut reasons) = hugetlbfs_state(name, backing)?;
        for location in &all_locations(status.as_ref(), backing) {
            let path = location.file(name);
            if path.symlink_metadata().is_ok() {
                return Err(HugepageError::AlreadyExists {
                    name: name.to_owned(),
                    path,
                });
            }
        }

        if backing.allows_hugetlbfs() {
            if let Some(status) = &status {
                let (candidates, rejected) = hugetlbfs_candidates(status, size);
                reasons.extend(rejected);
                for location in candidates {
                    match create_at(&location, name, size) {
                        Ok(region) => return Ok(region),
                        Err(e) if is_fallback_error(&e) => reasons.push(e.to_string()),
                        Err(e) => return Err(e),
                    }
                }
            }
            if reasons.is_empty() {
                reasons.push("no hugetlbfs mounted".to_owned());
            }
            let reason = reasons.join("; ");
            if !backing.allows_shm() {
                return Err(HugepageError::NoUsableHugetlbfs {
                    name: name.to_owned(),
                    reason,
                });
            }
            tracing::warn!(
                region = name,
                %reason,
                "no usable hugetlbfs mount; falling back to {SHM_DIR} (ordinary pages)"
            );
        }
        create_at(&Location::shm(), name, size)
    }

    /// Opens existing region `name`, searching every place ([`Backing::Auto`]).
    ///
    /// # Errors
    ///
    /// See [`Region::open_with`].
    pub fn open(name: &str) -> Result<Self> {
        Self::open_with(name, Backing::Auto)
    }

    /// Opens existing region `name` in the places `backing` allows (hugetlbfs mounts first),
    /// mapping the whole file.
    ///
    /// # Errors
    ///
    /// [`HugepageError::InvalidName`], [`HugepageError::NotFound`],
    /// [`HugepageError::SizeMismatch`] when the file is empty or not a multiple of its page
    /// size (it was not made by [`Region::create`]), [`HugepageError::Region`] /
    /// [`HugepageError::PermissionDenied`] when it cannot be opened or mapped.
    pub fn open_with(name: &str, backing: Backing) -> Result<Self> {
        Self::open_impl(name, None, backing)
    }

    /// [`Region::create`], or [`Region::open`] when the region already exists — in which
    /// case its size must equal `size` rounded up to its page size.
    ///
    /// # Errors
    ///
    /// See [`Region::create_or_open_with`].
    pub fn create_or_open(name: &str, size: usize) -> Result<Self> {
        Self::create_or_open_with(name, size, Backing::Auto)
    }

    /// [`Region::create_with`], or [`Region::open_with`] when the region already exists — in
    /// which case its size must equal `size` rounded up to its page size.
    ///
    /// # Errors
    ///
    /// As [`Region::create_with`] (except `AlreadyExists`), plus
    /// [`HugepageError::SizeMismatch`] when the existing region has another size.
    pub fn create_or_open_with(name: &str, size: usize, backing: Backing) -> Result<Self> {
        let expected = checked_size(size)?;
        // Another process may remove the region between our create and open; retry a little.
        let mut last = None;
        for _ in 0..3 {
            match Self::create_with(name, size, backing) {
                Err(HugepageError::AlreadyExists { .. }) => {}
                other => return other,
            }
            match Self::open_impl(name, Some(expected), backing) {
                Err(e @ HugepageError::NotFound { .. }) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| not_found(name, &[])))
    }

    /// Deletes region `name` from every place it exists (hugetlbfs mounts and `/dev/shm`).
    /// Existing mappings stay valid. Returns whether anything was removed.
    ///
    /// # Errors
    ///
    /// [`HugepageError::InvalidName`], or [`HugepageError::Region`] /
    /// [`HugepageError::PermissionDenied`] when a file exists but cannot be removed.
    pub fn remove(name: &str) -> Result<bool> {
        Self::validate_name(name)?;
        let status = HugepageStatus::read()
            .inspect_err(|e| {
                tracing::debug!(error = %e, "cannot list hugetlbfs mounts; removing from {SHM_DIR} only");
            })
            .ok();
        let mut removed = false;
        for location in all_locations(status.as_ref(), Backing::Auto) {
            let path = location.file(name);
            match fs::remove_file(&path) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(region_error("remove", path, e)),
            }
        }
        Ok(removed)
    }

    /// Checks a region name: 1 to [`MAX_NAME_LEN`] bytes of `[A-Za-z0-9._-]`, not starting
    /// with `.`.
    ///
    /// # Errors
    ///
    /// [`HugepageError::InvalidName`] saying which rule was broken.
    pub fn validate_name(name: &str) -> Result<()> {
        let reason = if name.is_empty() {
            Some("empty")
        } else if name.len() > MAX_NAME_LEN {
            Some("longer than 128 bytes")
        } else if name.starts_with('.') {
            Some("starts with '.'")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(HugepageError::InvalidName {
                name: name.to_owned(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Deletes this region's file, if it is still the file this region maps (a region
    /// re-created under the same name by someone else is left alone). The mapping stays
    /// valid. Returns whether the file was removed.
    ///
    /// # Errors
    ///
    /// [`HugepageError::Region`] / [`HugepageError::PermissionDenied`] when the file exists
    /// but cannot be inspected or removed.
    pub fn unlink(&self) -> Result<bool> {
        let path = self.backing.path();
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(region_error("remove", path.to_owned(), e)),
        };
        if (meta.dev(), meta.ino()) != self.file_id {
            tracing::debug!(path = %path.display(), "region file was replaced; not removing it");
            return Ok(false);
        }
        match fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(region_error("remove", path.to_owned(), e)),
        }
    }

    /// The region's name (without the file prefix).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the region lives.
    #[must_use]
    pub fn backing(&self) -> &RegionBacking {
        &self.backing
    }

    /// The page size backing the region; the mapping's start and length are multiples of it.
    #[must_use]
    pub fn page_size(&self) -> PageSize {
        self.backing.page_size()
    }

    /// The mapped length in bytes: the requested size rounded up to the page size.
    #[inline]
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Always false: regions are never empty. Present for API symmetry with slices.
    #[inline]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The base address of the mapping, valid for [`Region::len`] bytes while `self` lives,
    /// aligned to [`Region::page_size`] (at least 4096).
    ///
    /// This is what the dataplane's mapped-table code casts to its `#[repr(C)]` types: reads
    /// and atomic operations through it are fine from `&self`. Non-atomic writes through it
    /// need the same exclusivity as [`Region::as_mut_ptr`], and no byte slice from this region
    /// may be alive while memory it covers is written.
    #[inline]
    #[must_use]
    pub fn as_ptr(&self) -> *const u8 {
        self.map.as_ptr()
    }

    /// The base address for writing; see [`Region::as_ptr`].
    #[inline]
    #[must_use]
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// The region as bytes. Only sound for bytes no other process or thread writes while the
    /// slice lives; see the module docs.
    #[inline]
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        &self.map
    }

    /// The region as mutable bytes, e.g. to initialise it before announcing it to readers.
    /// Only sound for bytes no other process reads or writes meanwhile.
    #[inline]
    #[must_use]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.map
    }

    fn open_impl(name: &str, expected: Option<u64>, backing: Backing) -> Result<Self> {
        Self::validate_name(name)?;
        let (status, _) = hugetlbfs_state(name, backing)?;
        let locations = all_locations(status.as_ref(), backing);
        for location in &locations {
            if let Some(region) = open_at(location, name, expected)? {
                return Ok(region);
            }
        }
        Err(not_found(name, &locations))
    }
}

/// Reads the hugepage status when `backing` allows hugetlbfs. In [`Backing::Auto`] a failure
/// to read it is a fallback reason (returned in the list), not an error.
fn hugetlbfs_state(name: &str, backing: Backing) -> Result<(Option<HugepageStatus>, Vec<String>)> {
    if !backing.allows_hugetlbfs() {
        return Ok((None, Vec::new()));
    }
    match HugepageStatus::read() {
        Ok(status) => Ok((Some(status), Vec::new())),
        Err(e) if backing.allows_shm() => {
            Ok((None, vec![format!("cannot read hugepage status: {e}")]))
        }
        Err(e) => Err(HugepageError::NoUsableHugetlbfs {
            name: name.to_owned(),
            reason: format!("cannot read hugepage status: {e}"),
        }),
    }
}

/// Every place `backing` allows, hugetlbfs mounts first, for lookups and existence checks.
fn all_locations(status: Option<&HugepageStatus>, backing: Backing) -> Vec<Location> {
    let mut locations: Vec<Location> = status
        .map(|s| {
            dedup_mounts(&s.mounts)
                .into_iter()
                .map(location_of)
                .collect()
        })
        .unwrap_or_default();
    if backing.allows_shm() {
        locations.push(Location::shm());
    }
    locations
}

/// Mounts with duplicate paths removed, keeping the last (topmost) one of each path.
fn dedup_mounts(mounts: &[HugetlbfsMount]) -> Vec<&HugetlbfsMount> {
    let mut out: Vec<&HugetlbfsMount> = Vec::new();
    for m in mounts {
        out.retain(|o| o.path != m.path);
        out.push(m);
    }
    out
}

fn location_of(m: &HugetlbfsMount) -> Location {
    Location {
        dir: m.path.clone(),
        huge: Some(m.page_size),
    }
}

/// The hugetlbfs mounts that could hold `size` bytes, best first (the default page size, then
/// ascending page size, then mount-table order), and why the others were rejected.
fn hugetlbfs_candidates(status: &HugepageStatus, size: u64) -> (Vec<Location>, Vec<String>) {
    let default = status.default_page_size();
    let mut candidates = Vec::new();
    let mut rejected = Vec::new();
    for m in dedup_mounts(&status.mounts) {
        let path = m.path.display();
        if m.read_only {
            rejected.push(format!("{path}: mounted read-only"));
            continue;
        }
        let needed = m.page_size.pages_for(size).unwrap_or(u64::MAX);
        // A pool missing from sysfs is odd but not proof of shortage: let the kernel decide.
        if let Some(pool) = status.pool(m.page_size) {
            let available = pool.available();
            if available < needed {
                rejected.push(format!(
                    "{path}: needs {needed} {} pages, {available} available",
                    m.page_size
                ));
                continue;
            }
        }
        candidates.push(location_of(m));
    }
    candidates.sort_by_key(|l| (l.huge != default, l.huge));
    (candidates, rejected)
}

/// Errors that mean "this hugetlbfs mount cannot hold the region" rather than a bug or a
/// name clash: out of pages, refused by the file system, not writable.
fn is_fallback_error(e: &HugepageError) -> bool {
    match e {
        HugepageError::PermissionDenied { .. } => true,
        HugepageError::Region { source, .. } => matches!(
            source.raw_os_error(),
            Some(libc::ENOMEM | libc::ENOSPC | libc::EINVAL | libc::EFBIG | libc::EOPNOTSUPP)
        ),
        _ => false,
    }
}

fn checked_size(size: usize) -> Result<u64> {
    if size == 0 {
        return Err(HugepageError::InvalidSize {
            size: 0,
            reason: "a region cannot be empty",
        });
    }
    u64::try_from(size).map_err(|_| HugepageError::InvalidSize {
        size: u64::MAX,
        reason: "larger than a file can be",
    })
}

fn region_error(action: &'static str, path: PathBuf, source: io::Error) -> HugepageError {
    if is_permission_errno(&source) {
        HugepageError::PermissionDenied {
            action: "access a region file",
            path,
            source,
        }
    } else {
        HugepageError::Region {
            action,
            path,
            source,
        }
    }
}

fn not_found(name: &str, locations: &[Location]) -> HugepageError {
    let searched: Vec<String> = locations
        .iter()
        .map(|l| l.dir.display().to_string())
        .collect();
    HugepageError::NotFound {
        name: name.to_owned(),
        searched: searched.join(", "),
    }
}

/// A temporary file removed on drop (the half-built region of a failed `create`).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Builds the region file under a temporary name, allocates and maps it, then links it to its
/// final name. See "Atomic publication" in the module docs.
fn create_at(location: &Location, name: &str, size: u64) -> Result<Region> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let page_size = location.page_size();
    let len = page_size.round_up(size).ok_or(HugepageError::InvalidSize {
        size,
        reason: "overflows when rounded up to the page size",
    })?;
    let map_len = usize::try_from(len).map_err(|_| HugepageError::InvalidSize {
        size,
        reason: "larger than the address space",
    })?;
    let path = location.file(name);
    let tmp = TempFile(location.dir.join(format!(
        ".{FILE_PREFIX}{name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )));

    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp.0)
        .map_err(|e| region_error("create", tmp.0.clone(), e))?;
    // hugetlbfs only accepts sizes that are multiples of its page size; `len` is one.
    file.set_len(len)
        .map_err(|e| region_error("size", tmp.0.clone(), e))?;
    // Map first: on hugetlbfs a shared mapping reserves all its pages at once, so a shortage
    // is an immediate ENOMEM that takes nothing from other users of the pool. fallocate then
    // makes sure every page really exists (a cgroup limit can still refuse one), which
    // MAP_POPULATE alone would not report.
    let map = map_file(&file, map_len).map_err(|e| region_error("map", tmp.0.clone(), e))?;
    allocate(&file, len).map_err(|e| region_error("allocate", tmp.0.clone(), e))?;
    fs::hard_link(&tmp.0, &path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            HugepageError::AlreadyExists {
                name: name.to_owned(),
                path: path.clone(),
            }
        } else {
            region_error("link", path.clone(), e)
        }
    })?;
    drop(tmp);
    let meta = file
        .metadata()
        .map_err(|e| region_error("inspect", path.clone(), e))?;
    tracing::debug!(region = name, path = %path.display(), len, %page_size, "created region");
    Ok(Region {
        name: name.to_owned(),
        map,
        backing: location.backing(path),
        file_id: (meta.dev(), meta.ino()),
    })
}

/// Opens `name` at `location`; `Ok(None)` when it does not exist there.
fn open_at(location: &Location, name: &str, expected: Option<u64>) -> Result<Option<Region>> {
    let path = location.file(name);
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(region_error("open", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| region_error("inspect", path.clone(), e))?;
    let found = meta.len();
    let page_size = location.page_size();
    let want = match expected {
        Some(size) => page_size.round_up(size),
        // Not made by `create`: report the smallest valid size near it.
        None if found == 0 || !page_size.is_aligned(found) => page_size.round_up(found.max(1)),
        None => Some(found),
    };
    if want != Some(found) {
        return Err(HugepageError::SizeMismatch {
            name: name.to_owned(),
            path,
            expected: want.unwrap_or(u64::MAX),
            found,
        });
    }
    let map_len = usize::try_from(found).map_err(|_| HugepageError::InvalidSize {
        size: found,
        reason: "larger than the address space",
    })?;
    let map = map_file(&file, map_len).map_err(|e| region_error("map", path.clone(), e))?;
    Ok(Some(Region {
        name: name.to_owned(),
        map,
        backing: location.backing(path),
        file_id: (meta.dev(), meta.ino()),
    }))
}

/// Allocates every page of the file now, so a shortage is an error here rather than `SIGBUS`
/// on first touch. File systems without `fallocate` fall back to `MAP_POPULATE` alone.
fn allocate(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: the fd is open for writing and owned by `file`, which outlives the call;
    // fallocate takes no pointers.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Maps all `len` bytes of `file` shared and read-write, prefaulted.
fn map_file(file: &File, len: usize) -> io::Result<MmapMut> {
    // SAFETY: memmap2 requires that the file is not truncated or otherwise resized while
    // mapped. Region files get their final size before they receive their name and this crate
    // never resizes them; outside truncation is excluded by the module contract. Concurrent
    // writes by other processes through their own mappings are the purpose of the region; the
    // crate never hands out a slice over memory that the contract lets others write.
    unsafe { MmapOptions::new().len(len).populate().map_mut(file) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Meminfo, PoolStats};

    fn mount(path: &str, page_size: PageSize, read_only: bool) -> HugetlbfsMount {
        HugetlbfsMount {
            path: PathBuf::from(path),
            page_size,
            read_only,
            options: String::new(),
        }
    }

    fn pool(page_size: PageSize, free: u64) -> PoolStats {
        PoolStats {
            page_size,
            total: free,
            free,
            reserved: 0,
            surplus: 0,
            overcommit: 0,
        }
    }

    #[test]
    fn candidates_prefer_default_size_and_skip_short_pools() {
        let status = HugepageStatus {
            meminfo: Meminfo {
                default_page_size: Some(PageSize::SIZE_2M),
                ..Meminfo::default()
            },
            pools: vec![pool(PageSize::SIZE_2M, 2), pool(PageSize::SIZE_1G, 1)],
            mounts: vec![
                mount("/mnt/g", PageSize::SIZE_1G, false),
                mount("/mnt/ro", PageSize::SIZE_2M, true),
                mount("/dev/hugepages", PageSize::SIZE_2M, false),
            ],
        };
        let (c, rejected) = hugetlbfs_candidates(&status, 3 << 20);
        let dirs: Vec<_> = c.iter().map(|l| l.dir.to_str().unwrap_or("")).collect();
        assert_eq!(dirs, ["/dev/hugepages", "/mnt/g"]);
        assert_eq!(rejected, ["/mnt/ro: mounted read-only"]);

        // 5 MiB needs 3 × 2M pages but only 2 are free: only the 1G mount is left.
        let (c, rejected) = hugetlbfs_candidates(&status, 5 << 20);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].huge, Some(PageSize::SIZE_1G));
        assert!(
            rejected
                .iter()
                .any(|r| r.contains("needs 3 2M pages, 2 available")),
            "{rejected:?}"
        );
    }

    #[test]
    fn duplicate_mount_paths_keep_the_topmost() {
        let mounts = [
            mount("/dev/hugepages", PageSize::SIZE_1G, false),
            mount("/mnt/x", PageSize::SIZE_2M, false),
            mount("/dev/hugepages", PageSize::SIZE_2M, false),
        ];
        let d = dedup_mounts(&mounts);
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].path, Path::new("/dev/hugepages"));
        assert_eq!(d[1].page_size, PageSize::SIZE_2M);
    }

    #[test]
    fn names_are_validated() {
        for good in [
            "tables",
            "a",
            "sluice.tables-v1_2",
            &"x".repeat(MAX_NAME_LEN),
        ] {
            assert!(Region::validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a/b",
            "/abs",
            ".hidden",
            "..",
            "sp ace",
            "nul\0",
            "ü",
            &"x".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(
                matches!(
                    Region::validate_name(bad),
                    Err(HugepageError::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            Region::create("a/b", 1),
            Err(HugepageError::InvalidName { .. })
        ));
        assert!(matches!(
            Region::open(""),
            Err(HugepageError::InvalidName { .. })
        ));
        assert!(matches!(
            Region::remove("../x"),
            Err(HugepageError::InvalidName { .. })
        ));
    }

    #[test]
    fn zero_size_is_rejected() {
        let err = Region::create_with("zero-size", 0, Backing::Shm).unwrap_err();
        assert!(
            matches!(err, HugepageError::InvalidSize { size: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn backing_parses_and_displays() {
        for b in [Backing::Auto, Backing::Hugetlbfs, Backing::Shm] {
            assert_eq!(b.to_string().parse::<Backing>(), Ok(b));
        }
        assert!("disk".parse::<Backing>().is_err());
        assert!(Backing::Auto.allows_hugetlbfs() && Backing::Auto.allows_shm());
        assert!(!Backing::Shm.allows_hugetlbfs() && !Backing::Hugetlbfs.allows_shm());
    }

    #[test]
    fn fallback_errors_are_resource_errors() {
        let region = |errno| HugepageError::Region {
            action: "map",
            path: PathBuf::new(),
            source: io::Error::from_raw_os_error(errno),
        };
        assert!(is_fallback_error(&region(libc::ENOMEM)));
        assert!(is_fallback_error(&region(libc::ENOSPC)));
        assert!(is_fallback_error(&region(libc::EINVAL)));
        assert!(!is_fallback_error(&region(libc::EIO)));
        assert!(!is_fallback_error(&HugepageError::AlreadyExists {
            name: String::new(),
            path: PathBuf::new()
        }));
    }

    /// Bypasses the free-page pre-check and asks a real hugetlbfs mount for more pages than it
    /// has: the shortage must come back as an error from `create_at`, with no SIGBUS and no
    /// file left behind.
    #[test]
    fn hugetlbfs_shortage_is_an_error_not_sigbus() {
        let Some((mount, pool)) = crate::test_support::usable_hugetlbfs() else {
            return;
        };
        let location = location_of(&mount);
        let name = format!("unit-shortage-{}", std::process::id());
        let too_big = (pool.available() + 8) * mount.page_size.bytes();
        let err = create_at(&location, &name, too_big).unwrap_err();
        eprintln!("shortage error: {err}");
        assert!(is_fallback_error(&err), "{err}");
        assert!(!location.file(&name).exists());
        let leftovers = fs::read_dir(&mount.path)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(&name))
            .count();
        assert_eq!(leftovers, 0, "temporary file removed");
    }
}
