//! The `sluice-hugepages` binary as a user runs it: `status` in both formats, usage and
//! plain errors with their exit codes, `reserve --mount` inside a private mount namespace
//! (so the host's mounts are untouched), and permission denied as an unprivileged user.
//!
//! The last two need root, `unshare` and `setpriv` (util-linux), as on the CI machine.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use sluice_hugepages::HugepageStatus;

const CLI: &str = env!("CARGO_BIN_EXE_sluice-hugepages");

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run command");
    let code = status.code().unwrap_or(-1);
    (
        code,
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn status_prints_a_table_and_json() {
    let status = HugepageStatus::read().expect("status");
    let (code, out, err) = run(Command::new(CLI).arg("status"));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("default hugepage size: "), "{out}");
    assert!(
        out.contains("TOTAL") && out.contains("RESERVED") && out.contains("SURPLUS"),
        "{out}"
    );
    for pool in &status.pools {
        assert!(
            out.contains(&format!("\n{:<6}", pool.page_size.to_string())),
            "{out}"
        );
    }
    for m in &status.mounts {
        assert!(out.contains(&m.path.display().to_string()), "{out}");
    }

    let (code, out, err) = run(Command::new(CLI).args(["status", "--output", "json"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(r#"{"default_page_size_bytes":"#), "{out}");
    assert!(
        out.contains(r#""pools":["#) && out.contains(r#""mounts":["#),
        "{out}"
    );
    assert_eq!(
        out.matches("\"page_size_bytes\"").count(),
        status.pools.len() + status.mounts.len()
    );
}

#[test]
fn bad_usage_exits_2_and_errors_are_plain() {
    let (code, _, _) = run(Command::new(CLI).arg("reserve"));
    assert_eq!(code, 2, "missing COUNT is a usage error");
    let (code, _, err) = run(Command::new(CLI).args(["reserve", "1", "--size", "3M"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid page size"), "{err}");

    let (code, out, err) = run(Command::new(CLI).args(["reserve", "1", "--size", "4K"]));
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        err.trim(),
        "sluice-hugepages: error: the kernel has no 4K hugepage pool"
    );
}

/// Runs `script` as `sh -c` in a private mount namespace, with `$0` set to the CLI.
fn in_private_mount_ns(script: &str) -> (i32, String, String) {
    run(Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        CLI,
    ]))
}

#[test]
fn reserve_and_mount_in_a_private_mount_namespace() {
    let status = HugepageStatus::read().expect("status");
    let Some(size) = status.default_page_size() else {
        assert!(
            std::env::var(common::ALLOW_NO_HUGEPAGES).is_ok_and(|v| v == "1"),
            "kernel without hugetlb"
        );
        return;
    };
    let dir = std::env::temp_dir().join(format!("sluice-hp-cli-mount-{}", std::process::id()));
    struct RemoveDir(PathBuf);
    impl Drop for RemoveDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _cleanup = RemoveDir(dir.clone());
    let d = dir.display();
    // Asking for 0 pages writes nothing (reserve never shrinks), so the host's pool is
    // untouched; the mount lives and dies with the namespace.
    let script =
        format!(r#"set -e; "$0" reserve 0 --mount {d}; "$0" reserve 0 --mount {d}; "$0" status"#);
    let (code, out, err) = in_private_mount_ns(&script);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.matches(&format!("hugetlbfs ({size}) mounted at {d}"))
            .count(),
        2,
        "mounted, then found already mounted: {out}"
    );
    assert!(
        out.contains(&format!("{size} pool: requested 0 pages, granted ")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with(&d.to_string()) && l.contains(&size.to_string())),
        "status lists the new mount: {out}"
    );
    assert!(
        !HugepageStatus::read()
            .expect("status")
            .mounts
            .iter()
            .any(|m| m.path == dir),
        "the host does not see the namespace's mount"
    );

    // Mounting over a different file system is refused.
    let (code, _, err) = in_private_mount_ns(r#""$0" reserve 0 --mount /proc"#);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("/proc is already a mount point (proc)"),
        "{err}"
    );
}

#[test]
fn reserve_as_an_unprivileged_user_is_permission_denied() {
    let status = HugepageStatus::read().expect("status");
    let Some(size) = status.default_page_size() else {
        return;
    };
    let total = status.pool(size).expect("default pool").total;
    // One page more than now, so a write is needed; it must be refused before it happens.
    let (code, out, err) = run(Command::new("setpriv").args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        CLI,
        "reserve",
        &(total + 1).to_string(),
    ]));
    assert_eq!(code, 77, "{out}{err}");
    assert!(
        err.contains("permission denied") && err.contains("root"),
        "{err}"
    );
}
