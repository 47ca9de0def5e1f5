//! Region behaviour inside one process, for both backings: sizes and alignment, zeroed
//! memory, name clashes, create-or-open and its size check, unlink/remove, foreign files,
//! concurrent create-or-open, and the Auto fallback (with its warning) when hugepages run
//! short.
//!
//! hugetlbfs cases fail when the machine has no usable hugetlbfs mount, unless
//! `SLUICE_ALLOW_NO_HUGEPAGES=1`.

mod common;

use std::io;
use std::sync::{Arc, Mutex};

use common::{RemoveOnDrop, unique_name, usable_hugetlbfs};
use sluice_hugepages::region::{FILE_PREFIX, SHM_DIR};
use sluice_hugepages::{Backing, HugepageError, Region};

fn lifecycle(backing: Backing) {
    let name = unique_name(&format!("life-{backing}"));
    let _cleanup = RemoveOnDrop(name.clone());
    let size = 10_000;

    let mut a = Region::create_with(&name, size, backing).expect("create");
    assert_eq!(a.name(), name);
    let page = a.page_size();
    assert_eq!(
        Some(u64::try_from(a.len()).expect("fits")),
        page.round_up(10_000)
    );
    assert_eq!(
        a.as_ptr()
            .align_offset(usize::try_from(page.bytes()).expect("fits")),
        0
    );
    assert!(
        a.as_slice().iter().all(|b| *b == 0),
        "new regions are zeroed"
    );
    match backing {
        Backing::Hugetlbfs => assert!(a.backing().is_hugetlbfs(), "{:?}", a.backing()),
        _ => assert!(a.backing().path().starts_with(SHM_DIR), "{:?}", a.backing()),
    }
    let dir = a.backing().path().parent().expect("dir").to_owned();
    let temp_prefix = format!(".{FILE_PREFIX}{name}");
    let leftovers = std::fs::read_dir(&dir)
        .expect("read dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&temp_prefix))
        .count();
    assert_eq!(leftovers, 0, "no temporary file left in {}", dir.display());

    let err = Region::create_with(&name, size, backing).expect_err("second create");
    assert!(matches!(err, HugepageError::AlreadyExists { .. }), "{err}");

    let b = Region::create_or_open_with(&name, size, backing).expect("create_or_open");
    assert_eq!(b.backing(), a.backing());
    assert_eq!(b.len(), a.len());
    for (i, byte) in a.as_mut_slice().iter_mut().enumerate() {
        *byte = u8::try_from(i % 251).expect("fits");
    }
    assert!(
        b.as_slice()
            .iter()
            .enumerate()
            .all(|(i, byte)| usize::from(*byte) == i % 251),
        "a write through one mapping is visible through the other"
    );

    let err = Region::create_or_open_with(&name, a.len() + 1, backing).expect_err("wrong size");
    assert!(matches!(err, HugepageError::SizeMismatch { .. }), "{err}");

    let c = Region::open_with(&name, backing).expect("open");
    assert_eq!((c.len(), c.backing()), (a.len(), a.backing()));
    let d = Region::open(&name).expect("open with Auto");
    assert_eq!(d.backing(), a.backing());
    drop((c, d));

    assert!(a.unlink().expect("unlink"), "first unlink removes the file");
    assert!(
        !a.unlink().expect("unlink again"),
        "second unlink finds nothing"
    );
    let err = Region::open_with(&name, backing).expect_err("open after unlink");
    assert!(matches!(err, HugepageError::NotFound { .. }), "{err}");
    assert!(
        !Region::remove(&name).expect("remove"),
        "nothing left to remove"
    );
    assert_eq!(b.as_slice()[250], 250, "mappings stay valid after unlink");

    // A new region under the same name is not unlinked through the old handle.
    let e = Region::create_with(&name, size, backing).expect("re-create");
    assert!(!a.unlink().expect("unlink stale handle"));
    assert!(e.backing().path().exists(), "the successor survives");
    assert!(Region::remove(&name).expect("remove"));
}

#[test]
fn shm_lifecycle() {
    lifecycle(Backing::Shm);
}

#[test]
fn hugetlbfs_lifecycle() {
    if usable_hugetlbfs(2).is_some() {
        lifecycle(Backing::Hugetlbfs);
    }
}

#[test]
fn auto_prefers_hugetlbfs() {
    let Some((mount, _)) = usable_hugetlbfs(1) else {
        return;
    };
    let name = unique_name("auto-huge");
    let _cleanup = RemoveOnDrop(name.clone());
    let region = Region::create(&name, 64).expect("create");
    assert!(region.backing().is_hugetlbfs(), "{:?}", region.backing());
    assert_eq!(
        u64::try_from(region.len()).expect("fits"),
        region.page_size().bytes()
    );
    assert!(mount.page_size.bytes() > 4096);
}

/// A `tracing` writer that keeps what it is given.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn auto_falls_back_to_shm_with_a_warning_when_hugepages_run_short() {
    let Some((mount, pool)) = usable_hugetlbfs(1) else {
        return;
    };
    // More than the pool can give, with a margin for pages that tests running in parallel hold
    // now and free later; skip absurd sizes on very large pools.
    let too_big = (pool.available() + 8) * mount.page_size.bytes();
    if too_big > 4 << 30 {
        eprintln!("note: pool too large ({too_big} bytes needed) for the shortage case; skipped");
        return;
    }
    let size = usize::try_from(too_big).expect("fits");
    let name = unique_name("fallback");
    let _cleanup = RemoveOnDrop(name.clone());

    let err = Region::create_with(&name, size, Backing::Hugetlbfs).expect_err("forced hugetlbfs");
    match &err {
        HugepageError::NoUsableHugetlbfs { reason, .. } => {
            assert!(
                reason.contains("available"),
                "reason names the shortage: {reason}"
            );
        }
        other => panic!("expected NoUsableHugetlbfs, got {other}"),
    }

    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let region = tracing::subscriber::with_default(subscriber, || Region::create(&name, size))
        .expect("Auto falls back");
    assert!(!region.backing().is_hugetlbfs(), "{:?}", region.backing());
    assert!(region.backing().path().starts_with(SHM_DIR));
    let log = String::from_utf8_lossy(&capture.0.lock().expect("lock")).into_owned();
    assert!(log.contains("WARN"), "a warning was logged: {log}");
    assert!(log.contains("falling back"), "{log}");
    assert!(
        log.contains("available"),
        "the warning names the reason: {log}"
    );
}

const NO_MOUNTS_CHILD: &str = "SLUICE_HP_NO_MOUNTS_CHILD";

/// In a private mount namespace with every hugetlbfs mount removed (the host keeps its own),
/// Auto falls back to /dev/shm with a warning naming the reason, and a forced hugetlbfs fails.
#[test]
fn auto_falls_back_to_shm_with_a_warning_when_nothing_is_mounted() {
    const TEST: &str = "auto_falls_back_to_shm_with_a_warning_when_nothing_is_mounted";
    if std::env::var(NO_MOUNTS_CHILD).is_ok() {
        return no_mounts_child();
    }
    let exe = std::env::current_exe().expect("current_exe");
    // Unmount in reverse order so stacked mounts come off top first.
    let script = r#"set -e
        for m in $(awk '$3 == "hugetlbfs" { print $2 }' /proc/self/mounts | tac); do umount "$m"; done
        exec "$0" "$@""#;
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .arg(exe)
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(NO_MOUNTS_CHILD, "1")
        .output()
        .expect("run unshare (util-linux; needs root)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran the test:\n{text}");
}

fn no_mounts_child() {
    let status = sluice_hugepages::HugepageStatus::read().expect("status");
    assert!(
        status.mounts.is_empty(),
        "unmounted in this namespace: {:?}",
        status.mounts
    );
    let name = unique_name("nomount");
    let _cleanup = RemoveOnDrop(name.clone());

    let err = Region::create_with(&name, 4096, Backing::Hugetlbfs).expect_err("forced hugetlbfs");
    assert!(
        matches!(&err, HugepageError::NoUsableHugetlbfs { reason, .. } if reason == "no hugetlbfs mounted"),
        "{err}"
    );

    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let region = tracing::subscriber::with_default(subscriber, || Region::create(&name, 4096))
        .expect("Auto falls back");
    assert_eq!(
        region.backing().path().parent(),
        Some(std::path::Path::new(SHM_DIR))
    );
    let log = String::from_utf8_lossy(&capture.0.lock().expect("lock")).into_owned();
    assert!(
        log.contains("WARN") && log.contains("no hugetlbfs mounted"),
        "{log}"
    );
    let err = Region::open_with(&name, Backing::Hugetlbfs).expect_err("not on hugetlbfs");
    assert!(matches!(err, HugepageError::NotFound { .. }), "{err}");
}

#[test]
fn foreign_files_are_rejected() {
    let name = unique_name("foreign");
    let _cleanup = RemoveOnDrop(name.clone());
    let path = std::path::Path::new(SHM_DIR).join(format!("{FILE_PREFIX}{name}"));
    for len in [0, 100] {
        std::fs::write(&path, vec![7u8; len]).expect("write foreign file");
        let err = Region::open_with(&name, Backing::Shm).expect_err("open foreign file");
        assert!(
            matches!(err, HugepageError::SizeMismatch { .. }),
            "{len} bytes: {err}"
        );
    }
    let err = Region::create_with(&name, 4096, Backing::Shm).expect_err("create over it");
    assert!(matches!(err, HugepageError::AlreadyExists { .. }), "{err}");
}

#[test]
fn open_missing_is_not_found() {
    let err = Region::open(&unique_name("missing")).expect_err("open");
    match err {
        HugepageError::NotFound { searched, .. } => {
            assert!(searched.contains(SHM_DIR), "{searched}")
        }
        other => panic!("expected NotFound, got {other}"),
    }
}

#[test]
fn racing_create_or_open_agrees_on_one_region() {
    let name = unique_name("race");
    let _cleanup = RemoveOnDrop(name.clone());
    let regions: Vec<Region> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| Region::create_or_open_with(&name, 8192, Backing::Shm)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread").expect("create_or_open"))
            .collect()
    });
    let mut regions = regions.into_iter();
    let mut first = regions.next().expect("one region");
    first.as_mut_slice()[8191] = 0xA5;
    for r in regions {
        assert_eq!(r.backing(), first.backing());
        assert_eq!(r.as_slice()[8191], 0xA5, "all handles map the same memory");
    }
}
