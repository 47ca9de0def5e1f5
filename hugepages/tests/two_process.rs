//! Two OS processes map the same named region and see each other's writes, once per backing.
//!
//! The parent test creates the region and re-executes this test binary with
//! `--exact <same test>` and `SLUICE_HP_CHILD_REGION=<name>`; in the child that same test
//! function takes the child branch. The handshake uses atomics in the region:
//!
//! ```text
//! word 0  state      0 → 1 (parent wrote payload) → 2 (child verified and replied) | 3 (child failed)
//! word 1  child pid  written by the child
//! word 2  child len  Region::len() as the child sees it
//! word 3  child huge 1 when the child's backing is hugetlbfs
//! word 4  seed       pattern seed, written by the parent before state 1
//! bytes [PAYLOAD..len)  parent pattern, then the child's reply pattern
//! ```
//!
//! Waiting is bounded (20 s, polled every millisecond) and fails with the child's output.
//! Region files are removed by a drop guard, pass or fail; the child is killed if still alive.
//!
//! The hugetlbfs case fails when the machine has no usable hugetlbfs mount, unless
//! `SLUICE_ALLOW_NO_HUGEPAGES=1`.

#![allow(unsafe_code)]

mod common;

use std::os::unix::fs::MetadataExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{RemoveOnDrop, unique_name, usable_hugetlbfs};
use sluice_hugepages::{Backing, HugepageStatus, Region, RegionBacking};

const CHILD_ENV: &str = "SLUICE_HP_CHILD_REGION";
const TIMEOUT: Duration = Duration::from_secs(20);
/// Payload starts on the second base page, away from the handshake words.
const PAYLOAD: usize = 4096;

const STATE: usize = 0;
const CHILD_PID: usize = 1;
const CHILD_LEN: usize = 2;
const CHILD_HUGE: usize = 3;
const SEED: usize = 4;

const READY: u64 = 1;
const REPLIED: u64 = 2;
const CHILD_FAILED: u64 = 3;

#[test]
fn two_processes_share_a_hugetlbfs_region() {
    if let Ok(name) = std::env::var(CHILD_ENV) {
        return child(&name, Backing::Hugetlbfs);
    }
    // Two pages plus a bit: the region spans three hugepages, so page boundaries are crossed.
    let Some((mount, _)) = usable_hugetlbfs(3) else {
        return;
    };
    let size = usize::try_from(2 * mount.page_size.bytes() + 1).expect("size fits usize");
    parent(
        "two_processes_share_a_hugetlbfs_region",
        Backing::Hugetlbfs,
        size,
    );
}

#[test]
fn two_processes_share_a_shm_region() {
    if let Ok(name) = std::env::var(CHILD_ENV) {
        return child(&name, Backing::Shm);
    }
    parent(
        "two_processes_share_a_shm_region",
        Backing::Shm,
        (3 << 20) + 1,
    );
}

/// The 64-bit word `index` of the region, accessed atomically by both processes.
fn word(region: &Region, index: usize) -> &AtomicU64 {
    let offset = index * 8;
    assert!(
        offset + 8 <= PAYLOAD && PAYLOAD < region.len(),
        "word {index} out of the header"
    );
    let ptr = region.as_ptr().wrapping_add(offset).cast::<AtomicU64>();
    // SAFETY: the mapping is page-aligned, so `ptr` is 8-aligned; `offset + 8 <= len` keeps it
    // inside the mapping, which lives as long as the returned borrow of `region`; any bit
    // pattern is a valid AtomicU64; and both processes touch these words only atomically.
    unsafe { &*ptr }
}

/// splitmix64's finaliser: every input bit affects every output bit.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The parent's byte at payload offset `i`.
fn pattern(seed: u64, i: usize) -> u8 {
    mix(seed ^ u64::try_from(i).expect("fits")).to_le_bytes()[0]
}

/// The child's byte at payload offset `i` (differs from `pattern` at almost every offset).
fn reply(seed: u64, i: usize) -> u8 {
    mix(!seed ^ u64::try_from(i).expect("fits")).to_le_bytes()[0]
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool, child: &mut Child) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        if let Ok(Some(status)) = child.try_wait() {
            if done() {
                return;
            }
            panic!("child exited ({status}) before {what}");
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting for {what}"
        );
        sleep(Duration::from_millis(1));
    }
}

/// Kills and reaps the child if the test fails before it exits.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            if let Ok(out) = child.wait_with_output() {
                eprintln!(
                    "child output:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

fn parent(test_name: &str, backing: Backing, size: usize) {
    let name = unique_name(test_name);
    let _cleanup = RemoveOnDrop(name.clone());
    let mut region = Region::create_with(&name, size, backing).expect("create region");

    // The backing is what was forced, and really is what it claims.
    let page_size = region.page_size();
    assert_eq!(
        region.len() % usize::try_from(page_size.bytes()).expect("fits"),
        0
    );
    assert!(region.len() >= size);
    assert_eq!(
        region.as_ptr().align_offset(4096),
        0,
        "page-aligned mapping"
    );
    let meta = std::fs::metadata(region.backing().path()).expect("region file exists");
    assert_eq!(meta.len(), u64::try_from(region.len()).expect("fits"));
    match (backing, region.backing()) {
        (Backing::Hugetlbfs, RegionBacking::Hugetlbfs { path, page_size }) => {
            // hugetlbfs reports its page size as the file's block size.
            assert_eq!(meta.blksize(), page_size.bytes());
            let status = HugepageStatus::read().expect("status");
            assert!(
                status
                    .mounts
                    .iter()
                    .any(|m| path.parent() == Some(m.path.as_path())),
                "{} is in a hugetlbfs mount",
                path.display()
            );
        }
        (Backing::Shm, RegionBacking::Shm { path }) => {
            assert!(path.starts_with("/dev/shm"));
        }
        (b, got) => panic!("forced {b}, got {got:?}"),
    }

    let exe = std::env::current_exe().expect("current_exe");
    let child = Command::new(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &name)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let child_pid = u64::from(child.id());
    let mut guard = ChildGuard(Some(child));

    // Write the payload, then publish it with a release store.
    let seed = u64::from(std::process::id()).wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    for (i, b) in region.as_mut_slice()[PAYLOAD..].iter_mut().enumerate() {
        *b = pattern(seed, i);
    }
    word(&region, SEED).store(seed, Ordering::Relaxed);
    word(&region, STATE).store(READY, Ordering::Release);

    let child = guard.0.as_mut().expect("child");
    wait_for(
        "the child's reply",
        || {
            matches!(
                word(&region, STATE).load(Ordering::Acquire),
                REPLIED | CHILD_FAILED
            )
        },
        child,
    );
    assert_eq!(
        word(&region, STATE).load(Ordering::Acquire),
        REPLIED,
        "child reported a failure"
    );
    assert_eq!(
        word(&region, CHILD_PID).load(Ordering::Relaxed),
        child_pid,
        "reply came from the child"
    );
    assert_eq!(
        word(&region, CHILD_LEN).load(Ordering::Relaxed),
        u64::try_from(region.len()).expect("fits"),
        "child maps the same length"
    );
    assert_eq!(
        word(&region, CHILD_HUGE).load(Ordering::Relaxed),
        u64::from(region.backing().is_hugetlbfs()),
        "child sees the same backing"
    );
    let payload = &region.as_slice()[PAYLOAD..];
    let bad = payload
        .iter()
        .enumerate()
        .position(|(i, b)| *b != reply(seed, i));
    assert_eq!(
        bad, None,
        "first byte where the child's reply is not visible"
    );

    // The child exits successfully on its own.
    let deadline = Instant::now() + TIMEOUT;
    let mut child = guard.0.take().expect("child");
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            guard.0 = Some(child);
            panic!("child did not exit within {TIMEOUT:?}");
        }
        sleep(Duration::from_millis(1));
    };
    let out = child.wait_with_output().expect("child output");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(status.success(), "child failed ({status}):\n{output}");
    assert!(
        output.contains("1 passed"),
        "the child ran exactly the child test:\n{output}"
    );

    assert!(region.unlink().expect("unlink"), "region file removed");
    assert!(!region.backing().path().exists());
}

fn child(name: &str, backing: Backing) {
    let region = Region::open_with(name, backing).expect("child: open region");
    // If anything below panics, tell the parent at once instead of letting it time out.
    struct FailFlag<'a>(&'a Region, bool);
    impl Drop for FailFlag<'_> {
        fn drop(&mut self) {
            if !self.1 {
                word(self.0, STATE).store(CHILD_FAILED, Ordering::Release);
            }
        }
    }
    let mut flag = FailFlag(&region, false);

    match (backing, region.backing()) {
        (Backing::Hugetlbfs, RegionBacking::Hugetlbfs { .. })
        | (Backing::Shm, RegionBacking::Shm { .. }) => {}
        (b, got) => panic!("child: forced {b}, got {got:?}"),
    }
    let deadline = Instant::now() + TIMEOUT;
    while word(&region, STATE).load(Ordering::Acquire) != READY {
        assert!(
            Instant::now() < deadline,
            "child: timed out waiting for the parent's payload"
        );
        sleep(Duration::from_millis(1));
    }
    let seed = word(&region, SEED).load(Ordering::Relaxed);
    let bad = region.as_slice()[PAYLOAD..]
        .iter()
        .enumerate()
        .position(|(i, b)| *b != pattern(seed, i));
    assert_eq!(
        bad, None,
        "child: first byte where the parent's payload is not visible"
    );

    // Reply through a second mapping of our own, so two mappings in one process are covered
    // too; the release store below, made through the first mapping, publishes it (both map the
    // same physical pages).
    let mut writer = Region::open_with(name, backing).expect("child: second open");
    for (i, b) in writer.as_mut_slice()[PAYLOAD..].iter_mut().enumerate() {
        *b = reply(seed, i);
    }
    word(&region, CHILD_PID).store(u64::from(std::process::id()), Ordering::Relaxed);
    word(&region, CHILD_LEN).store(
        u64::try_from(region.len()).expect("fits"),
        Ordering::Relaxed,
    );
    word(&region, CHILD_HUGE).store(
        u64::from(region.backing().is_hugetlbfs()),
        Ordering::Relaxed,
    );
    flag.1 = true;
    word(&region, STATE).store(REPLIED, Ordering::Release);
}
