//! What the kernel says about hugepages: per-size pools from
//! `/sys/kernel/mm/hugepages/hugepages-<N>kB/`, the default size and global counters from
//! `/proc/meminfo`, and hugetlbfs mounts from `/proc/self/mounts`.
//!
//! Contract: the parsers are pure functions over text ([`parse_meminfo`], [`parse_mounts`],
//! [`parse_sysfs_count`], [`parse_pool_dir_name`]); they never panic, and reject malformed
//! values of the fields they need with [`HugepageError::Parse`] while ignoring lines they do
//! not need. [`HugepageStatus::read_from`] takes the file locations as [`SysPaths`], so it
//! can be pointed at a fixture tree. Reading is a snapshot: counts change as other processes
//! allocate pages.

use std::fs;
use std::path::{Path, PathBuf};

use crate::PageSize;
use crate::error::{HugepageError, Result};

/// Where the kernel's hugepage interfaces live. [`Default`] gives the real locations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysPaths {
    /// The directory holding one `hugepages-<N>kB` directory per supported page size.
    /// Default: `/sys/kernel/mm/hugepages`.
    pub hugepages_dir: PathBuf,
    /// Default: `/proc/meminfo`.
    pub meminfo: PathBuf,
    /// The mount table in `/proc/mounts` format. Default: `/proc/self/mounts`.
    pub mounts: PathBuf,
}

impl Default for SysPaths {
    fn default() -> Self {
        Self {
            hugepages_dir: PathBuf::from("/sys/kernel/mm/hugepages"),
            meminfo: PathBuf::from("/proc/meminfo"),
            mounts: PathBuf::from("/proc/self/mounts"),
        }
    }
}

impl SysPaths {
    /// The sysfs directory of the pool of `page_size` pages (it may not exist).
    #[must_use]
    pub fn pool_dir(&self, page_size: PageSize) -> PathBuf {
        self.hugepages_dir
            .join(format!("hugepages-{}kB", page_size.kib()))
    }
}

/// The hugepage lines of `/proc/meminfo`. They describe the default page size's pool only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meminfo {
    /// `HugePages_Total`: pages in the default-size pool.
    pub total: u64,
    /// `HugePages_Free`: pages not yet faulted in (reserved ones included).
    pub free: u64,
    /// `HugePages_Rsvd`: pages promised to mappings but not yet faulted in.
    pub reserved: u64,
    /// `HugePages_Surp`: pages above the persistent pool size (overcommit).
    pub surplus: u64,
    /// `Hugepagesize`: the default hugepage size; `None` when the kernel has no hugetlb.
    pub default_page_size: Option<PageSize>,
    /// `Hugetlb`: KiB of memory in all hugepage pools, when the kernel reports it.
    pub hugetlb_kib: Option<u64>,
}

/// One hugepage pool (one page size), from its sysfs directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// The page size of this pool.
    pub page_size: PageSize,
    /// `nr_hugepages`: the persistent pool size in pages.
    pub total: u64,
    /// `free_hugepages`: pages not faulted in (reserved ones included).
    pub free: u64,
    /// `resv_hugepages`: pages promised to existing mappings.
    pub reserved: u64,
    /// `surplus_hugepages`: overcommitted pages currently allocated.
    pub surplus: u64,
    /// `nr_overcommit_hugepages`: how many surplus pages the kernel may allocate on demand.
    pub overcommit: u64,
}

impl PoolStats {
    /// Pages a new mapping can still get: free and unreserved, plus the overcommit headroom.
    /// Overcommit pages come from the buddy allocator and may still fail to appear.
    #[must_use]
    pub fn available(&self) -> u64 {
        self.free
            .saturating_sub(self.reserved)
            .saturating_add(self.overcommit.saturating_sub(self.surplus))
    }

    /// Bytes in the persistent pool (`total × page size`), saturating.
    #[must_use]
    pub fn total_bytes(&self) -> u64 {
        self.total.saturating_mul(self.page_size.bytes())
    }
}

/// A hugetlbfs mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HugetlbfsMount {
    /// The mount point (octal escapes of `/proc/mounts` decoded).
    pub path: PathBuf,
    /// The page size of files in this mount: its `pagesize=` option, else the default
    /// hugepage size.
    pub page_size: PageSize,
    /// Mounted read-only (`ro`), so no region can be created there.
    pub read_only: bool,
    /// The raw, comma-separated mount options.
    pub options: String,
}

/// Everything this crate reads about hugepages, in one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HugepageStatus {
    /// The `/proc/meminfo` hugepage lines (the default page size's pool).
    pub meminfo: Meminfo,
    /// One entry per supported page size, ascending by size.
    pub pools: Vec<PoolStats>,
    /// hugetlbfs mounts in mount-table order.
    pub mounts: Vec<HugetlbfsMount>,
}

// === impl HugepageStatus ===

impl HugepageStatus {
    /// Reads the real kernel interfaces ([`SysPaths::default`]).
    ///
    /// # Errors
    ///
    /// [`HugepageError::Io`] / [`HugepageError::PermissionDenied`] when a file cannot be read,
    /// [`HugepageError::Parse`] when one holds unexpected text.
    pub fn read() -> Result<Self> {
        Self::read_from(&SysPaths::default())
    }

    /// Reads the interfaces at `paths`. A missing hugepages directory (a kernel built without
    /// hugetlb) yields no pools rather than an error.
    ///
    /// # Errors
    ///
    /// As [`HugepageStatus::read`].
    pub fn read_from(paths: &SysPaths) -> Result<Self> {
        let meminfo = parse_meminfo(&read_text(&paths.meminfo)?)?;
        let mounts = parse_mounts(&read_text(&paths.mounts)?, meminfo.default_page_size)?;
        let pools = read_pools(paths)?;
        Ok(Self {
            meminfo,
            pools,
            mounts,
        })
    }

    /// The default hugepage size (`Hugepagesize` in `/proc/meminfo`).
    #[must_use]
    pub fn default_page_size(&self) -> Option<PageSize> {
        self.meminfo.default_page_size
    }

    /// The pool of `page_size`, if the kernel supports that size.
    #[must_use]
    pub fn pool(&self, page_size: PageSize) -> Option<&PoolStats> {
        self.pools.iter().find(|p| p.page_size == page_size)
    }
}

/// Reads every `hugepages-<N>kB` pool under `paths.hugepages_dir`, ascending by page size.
fn read_pools(paths: &SysPaths) -> Result<Vec<PoolStats>> {
    let entries = match fs::read_dir(&paths.hugepages_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(HugepageError::from_io(
                "list hugepage pools",
                &paths.hugepages_dir,
                e,
            ));
        }
    };
    let mut pools = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| HugepageError::from_io("list hugepage pools", &paths.hugepages_dir, e))?;
        let Some(page_size) = entry.file_name().to_str().and_then(parse_pool_dir_name) else {
            continue;
        };
        pools.push(read_pool(paths, page_size)?);
    }
    pools.sort_by_key(|p| p.page_size);
    Ok(pools)
}

/// Reads the sysfs counters of the `page_size` pool.
///
/// # Errors
///
/// [`HugepageError::UnsupportedPageSize`] when the kernel has no such pool; otherwise as
/// [`HugepageStatus::read`].
pub fn read_pool(paths: &SysPaths, page_size: PageSize) -> Result<PoolStats> {
    let dir = paths.pool_dir(page_size);
    if !dir.is_dir() {
        return Err(HugepageError::UnsupportedPageSize(page_size));
    }
    let count = |file: &str| -> Result<u64> {
        let path = dir.join(file);
        parse_sysfs_count(&read_text(&path)?).map_err(|e| match e {
            HugepageError::Parse { text, reason, .. } => HugepageError::Parse {
                what: path.display().to_string(),
                text,
                reason,
            },
            other => other,
        })
    };
    // nr_overcommit_hugepages is absent on some old kernels; treat it as 0 then.
    let overcommit = match count("nr_overcommit_hugepages") {
        Err(HugepageError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => 0,
        other => other?,
    };
    Ok(PoolStats {
        page_size,
        total: count("nr_hugepages")?,
        free: count("free_hugepages")?,
        reserved: count("resv_hugepages")?,
        surplus: count("surplus_hugepages")?,
        overcommit,
    })
}

pub(crate) fn read_text(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| HugepageError::from_io("read", path, e))
}

/// Parses the hugepage lines of `/proc/meminfo`. Lines it does not need are ignored; absent
/// hugepage lines (no hugetlb in the kernel) leave zeros and `None`.
///
/// # Errors
///
/// [`HugepageError::Parse`] when a needed line has a malformed value.
pub fn parse_meminfo(text: &str) -> Result<Meminfo> {
    let mut info = Meminfo::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let count = || parse_count("/proc/meminfo", line, value);
        match key.trim() {
            "HugePages_Total" => info.total = count()?,
            "HugePages_Free" => info.free = count()?,
            "HugePages_Rsvd" => info.reserved = count()?,
            "HugePages_Surp" => info.surplus = count()?,
            "Hugepagesize" => {
                let kib = parse_kib(line, value)?;
                info.default_page_size = Some(PageSize::from_kib(kib).ok_or_else(|| {
                    parse_error("/proc/meminfo", line, "Hugepagesize is not a power of two")
                })?);
            }
            "Hugetlb" => info.hugetlb_kib = Some(parse_kib(line, value)?),
            _ => {}
        }
    }
    Ok(info)
}

/// `"2048 kB"` → 2048.
fn parse_kib(line: &str, value: &str) -> Result<u64> {
    let number = value
        .strip_suffix("kB")
        .ok_or_else(|| parse_error("/proc/meminfo", line, "expected a value in kB"))?;
    parse_count("/proc/meminfo", line, number.trim())
}

/// Parses one sysfs counter file such as `nr_hugepages` (a decimal number and a newline).
///
/// # Errors
///
/// [`HugepageError::Parse`] unless the text is a non-negative decimal integer.
pub fn parse_sysfs_count(text: &str) -> Result<u64> {
    parse_count("sysfs counter", text, text.trim())
}

fn parse_count(what: &str, line: &str, value: &str) -> Result<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(parse_error(what, line, "expected a non-negative integer"));
    }
    value
        .parse()
        .map_err(|_| parse_error(what, line, "integer out of range"))
}

fn parse_error(what: &str, text: &str, reason: &'static str) -> HugepageError {
    HugepageError::Parse {
        what: what.to_owned(),
        text: text.to_owned(),
        reason,
    }
}

/// The page size named by a sysfs pool directory: `hugepages-2048kB` → 2M. `None` for any
/// other name.
#[must_use]
pub fn parse_pool_dir_name(name: &str) -> Option<PageSize> {
    let kib = name.strip_prefix("hugepages-")?.strip_suffix("kB")?;
    if kib.is_empty() || !kib.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    PageSize::from_kib(kib.parse().ok()?)
}

/// One line of `/proc/mounts`, any file system type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub(crate) path: PathBuf,
    pub(crate) fstype: String,
    pub(crate) options: String,
}

/// Parses every line of a `/proc/mounts`-format table.
pub(crate) fn parse_mount_table(text: &str) -> Result<Vec<MountEntry>> {
    let mut entries = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let (Some(_source), Some(path), Some(fstype), Some(options)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(parse_error(
                "mount table",
                line,
                "expected at least 4 fields",
            ));
        };
        entries.push(MountEntry {
            path: PathBuf::from(unescape_mount_field(path)),
            fstype: fstype.to_owned(),
            options: options.to_owned(),
        });
    }
    Ok(entries)
}

/// Parses the hugetlbfs lines of a `/proc/mounts`-format table. A mount without a
/// `pagesize=` option uses `default_page_size`.
///
/// # Errors
///
/// [`HugepageError::Parse`] on a line with fewer than four fields, a malformed `pagesize=`,
/// or a hugetlbfs mount with no `pagesize=` when `default_page_size` is `None`.
pub fn parse_mounts(
    text: &str,
    default_page_size: Option<PageSize>,
) -> Result<Vec<HugetlbfsMount>> {
    let mut mounts = Vec::new();
    for entry in parse_mount_table(text)? {
        if entry.fstype != "hugetlbfs" {
            continue;
        }
        let mut page_size = None;
        let mut read_only = false;
        for option in entry.options.split(',') {
            if option == "ro" {
                read_only = true;
            } else if let Some(value) = option.strip_prefix("pagesize=") {
                page_size = Some(value.parse::<PageSize>().map_err(|_| {
                    parse_error(
                        "hugetlbfs mount options",
                        &entry.options,
                        "bad pagesize= value",
                    )
                })?);
            }
        }
        let page_size = page_size.or(default_page_size).ok_or_else(|| {
            parse_error(
                "hugetlbfs mount options",
                &entry.options,
                "no pagesize= and no default hugepage size in /proc/meminfo",
            )
        })?;
        mounts.push(HugetlbfsMount {
            path: entry.path,
            page_size,
            read_only,
            options: entry.options,
        });
    }
    Ok(mounts)
}

/// Decodes the `\ooo` octal escapes the kernel writes for space, tab, newline and backslash in
/// mount paths. Anything that is not a valid three-digit escape is kept as written.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match escape {
            Some(d) => {
                let value = u32::from(d[0] - b'0') * 64
                    + u32::from(d[1] - b'0') * 8
                    + u32::from(d[2] - b'0');
                match u8::try_from(value) {
                    Ok(b) => out.push(b),
                    Err(_) => out.extend_from_slice(&bytes[i..i + 4]),
                }
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A real `/proc/meminfo` from a Debian 12 VM with 64 default-size pages reserved.
    const MEMINFO: &str = "\
MemTotal:       65839816 kB
MemFree:        60291164 kB
MemAvailable:   63128428 kB
Shmem:              1234 kB
AnonHugePages:         0 kB
ShmemHugePages:        0 kB
FileHugePages:     22528 kB
HugePages_Total:      64
HugePages_Free:       60
HugePages_Rsvd:        3
HugePages_Surp:        1
Hugepagesize:       2048 kB
Hugetlb:          131072 kB
DirectMap4k:      401216 kB
";

    #[test]
    fn meminfo_fixture() {
        let info = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(
            info,
            Meminfo {
                total: 64,
                free: 60,
                reserved: 3,
                surplus: 1,
                default_page_size: Some(PageSize::SIZE_2M),
                hugetlb_kib: Some(131_072),
            }
        );
    }

    #[test]
    fn meminfo_without_hugetlb_is_empty_not_an_error() {
        let info = parse_meminfo("MemTotal: 1 kB\nMemFree: 1 kB\n").unwrap();
        assert_eq!(info, Meminfo::default());
    }

    #[test]
    fn meminfo_rejects_malformed_needed_lines() {
        for bad in [
            "HugePages_Total: lots\n",
            "HugePages_Free: -1\n",
            "Hugepagesize: 2048 MB\n",
            "Hugepagesize: 3 kB\n",
            "HugePages_Rsvd: 99999999999999999999999\n",
        ] {
            let err = parse_meminfo(bad).unwrap_err();
            assert!(matches!(err, HugepageError::Parse { .. }), "{bad:?}: {err}");
        }
        // A malformed line the parser does not need is ignored.
        assert!(parse_meminfo("MemTotal: garbage\nnot a line\n").is_ok());
    }

    /// Lines from a real `/proc/self/mounts`, plus a 1G mount, a read-only one and a path
    /// with an escaped space.
    const MOUNTS: &str = "\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0
hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0
nodev /mnt/huge\\0401g hugetlbfs rw,relatime,pagesize=1024M 0 0
none /mnt/plain hugetlbfs ro,relatime 0 0
";

    #[test]
    fn mounts_fixture() {
        let mounts = parse_mounts(MOUNTS, Some(PageSize::SIZE_2M)).unwrap();
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[0].path, Path::new("/dev/hugepages"));
        assert_eq!(mounts[0].page_size, PageSize::SIZE_2M);
        assert!(!mounts[0].read_only);
        assert_eq!(mounts[1].path, Path::new("/mnt/huge 1g"));
        assert_eq!(mounts[1].page_size, PageSize::SIZE_1G);
        assert_eq!(mounts[2].path, Path::new("/mnt/plain"));
        assert_eq!(
            mounts[2].page_size,
            PageSize::SIZE_2M,
            "no pagesize= → default"
        );
        assert!(mounts[2].read_only);
        assert_eq!(mounts[2].options, "ro,relatime");
    }

    #[test]
    fn mounts_errors() {
        // No pagesize= and no default size.
        let err = parse_mounts("none /mnt/h hugetlbfs rw 0 0\n", None).unwrap_err();
        assert!(matches!(err, HugepageError::Parse { .. }), "{err}");
        // Bad pagesize=.
        let err = parse_mounts("none /mnt/h hugetlbfs rw,pagesize=3M 0 0\n", None).unwrap_err();
        assert!(matches!(err, HugepageError::Parse { .. }), "{err}");
        // Truncated line.
        let err = parse_mounts("none /mnt/h\n", None).unwrap_err();
        assert!(matches!(err, HugepageError::Parse { .. }), "{err}");
        // A non-hugetlbfs table yields nothing.
        assert!(
            parse_mounts("proc /proc proc rw 0 0\n", None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn unescapes_octal_but_keeps_junk() {
        assert_eq!(
            unescape_mount_field(r"/a\040b\011c\134d\012"),
            "/a b\tc\\d\n"
        );
        assert_eq!(unescape_mount_field(r"/a\04"), r"/a\04");
        assert_eq!(unescape_mount_field(r"/a\999"), r"/a\999");
        assert_eq!(
            unescape_mount_field(r"\777"),
            r"\777",
            "out of byte range stays as written"
        );
        assert_eq!(unescape_mount_field("/ü"), "/ü");
    }

    #[test]
    fn sysfs_values() {
        assert_eq!(parse_sysfs_count("64\n").unwrap(), 64);
        assert_eq!(parse_sysfs_count("0").unwrap(), 0);
        for bad in ["", "\n", "-1\n", "sixty", "1 2", "18446744073709551616"] {
            assert!(parse_sysfs_count(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_pool_dir_name("hugepages-2048kB"),
            Some(PageSize::SIZE_2M)
        );
        assert_eq!(
            parse_pool_dir_name("hugepages-1048576kB"),
            Some(PageSize::SIZE_1G)
        );
        for bad in [
            "hugepages-kB",
            "hugepages-3kB",
            "hugepages-2048",
            "other-2048kB",
            "hugepages--1kB",
        ] {
            assert_eq!(parse_pool_dir_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn pool_available_counts_overcommit_headroom() {
        let pool = PoolStats {
            page_size: PageSize::SIZE_2M,
            total: 64,
            free: 10,
            reserved: 4,
            surplus: 1,
            overcommit: 3,
        };
        assert_eq!(pool.available(), 6 + 2);
        assert_eq!(pool.total_bytes(), 128 << 20);
        let starved = PoolStats {
            free: 1,
            reserved: 5,
            overcommit: 0,
            surplus: 2,
            ..pool
        };
        assert_eq!(starved.available(), 0);
    }

    /// A fake sysfs/proc tree in a temporary directory, removed on drop.
    pub(crate) struct FakeSys {
        pub(crate) root: PathBuf,
        pub(crate) paths: SysPaths,
    }

    impl FakeSys {
        pub(crate) fn new(tag: &str) -> Self {
            let root =
                std::env::temp_dir().join(format!("sluice-hp-fake-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(root.join("hugepages")).unwrap();
            let paths = SysPaths {
                hugepages_dir: root.join("hugepages"),
                meminfo: root.join("meminfo"),
                mounts: root.join("mounts"),
            };
            fs::write(&paths.meminfo, MEMINFO).unwrap();
            fs::write(&paths.mounts, MOUNTS).unwrap();
            Self { root, paths }
        }

        pub(crate) fn add_pool(&self, page_size: PageSize, values: [u64; 5]) {
            let dir = self.paths.pool_dir(page_size);
            fs::create_dir_all(&dir).unwrap();
            let names = [
                "nr_hugepages",
                "free_hugepages",
                "resv_hugepages",
                "surplus_hugepages",
            ];
            for (name, value) in names.iter().zip(values) {
                fs::write(dir.join(name), format!("{value}\n")).unwrap();
            }
            fs::write(
                dir.join("nr_overcommit_hugepages"),
                format!("{}\n", values[4]),
            )
            .unwrap();
        }
    }

    impl Drop for FakeSys {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    #[test]
    fn reads_a_fixture_tree() {
        let fake = FakeSys::new("status");
        fake.add_pool(PageSize::SIZE_1G, [2, 1, 0, 0, 0]);
        fake.add_pool(PageSize::SIZE_2M, [64, 60, 3, 1, 0]);
        fs::create_dir_all(fake.paths.hugepages_dir.join("unrelated")).unwrap();
        let status = HugepageStatus::read_from(&fake.paths).unwrap();
        assert_eq!(status.default_page_size(), Some(PageSize::SIZE_2M));
        assert_eq!(status.pools.len(), 2);
        assert_eq!(
            status.pools[0].page_size,
            PageSize::SIZE_2M,
            "sorted ascending"
        );
        assert_eq!(
            status
                .pool(PageSize::SIZE_2M)
                .map(|p| (p.total, p.free, p.reserved)),
            Some((64, 60, 3))
        );
        assert_eq!(status.pool(PageSize::SIZE_1G).map(|p| p.total), Some(2));
        assert_eq!(status.mounts.len(), 3);
        assert!(matches!(
            read_pool(&fake.paths, PageSize::SIZE_4K),
            Err(HugepageError::UnsupportedPageSize(p)) if p == PageSize::SIZE_4K
        ));

        fs::write(
            fake.paths
                .pool_dir(PageSize::SIZE_2M)
                .join("free_hugepages"),
            "junk\n",
        )
        .unwrap();
        let err = HugepageStatus::read_from(&fake.paths).unwrap_err();
        assert!(
            matches!(&err, HugepageError::Parse { what, .. } if what.ends_with("free_hugepages")),
            "{err}"
        );
    }

    #[test]
    fn missing_hugepages_dir_means_no_pools() {
        let fake = FakeSys::new("nodir");
        fs::remove_dir_all(&fake.paths.hugepages_dir).unwrap();
        let status = HugepageStatus::read_from(&fake.paths).unwrap();
        assert!(status.pools.is_empty());
    }

    #[test]
    fn reads_the_real_machine_without_error() {
        // Whatever this machine has, reading it must succeed.
        let status = HugepageStatus::read().unwrap();
        if let Some(size) = status.default_page_size() {
            assert!(
                status.pool(size).is_some(),
                "default size {size} has a sysfs pool"
            );
        }
    }
}
