//! Shared by control's end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_dataplane::tables::Writer;

/// Temp files (or directories, with what they hold) and a table region, removed on drop
/// (pass or fail).
pub struct Cleanup {
    /// The region's name.
    pub region: String,
    /// Files to remove.
    pub files: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for f in &self.files {
            if f.is_dir() {
                let _ = std::fs::remove_dir_all(f);
            } else {
                let _ = std::fs::remove_file(f);
            }
        }
        let _ = Writer::remove(&self.region);
    }
}

/// Runs `sluicectl --socket SOCKET -o json ARGS` and parses its output; panics on failure.
// Each test binary compiles this module; not every one calls every helper.
#[allow(dead_code)]
pub fn ctl(socket: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_sluicectl"))
        .arg("--socket")
        .arg(socket)
        .args(["-o", "json"])
        .args(args)
        .output()
        .expect("run sluicectl");
    assert!(
        out.status.success(),
        "sluicectl {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "sluicectl {args:?}: not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `birdc -s SOCK ARGS` in `ns`; its stdout.
#[allow(dead_code)]
pub fn birdc(ns: &sluice_testbed::Netns, sock: &Path, args: &[&str]) -> String {
    let out = ns
        .command("birdc")
        .arg("-s")
        .arg(sock)
        .args(args)
        .output()
        .expect("birdc");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls BIRD's routes for `prefix` until `check` holds (up to `limit`); returns the output
/// and how long it took.
#[allow(dead_code, clippy::disallowed_types)] // std::time::Instant: a test's own deadline.
pub fn wait_route(
    ns: &sluice_testbed::Netns,
    sock: &Path,
    prefix: &str,
    what: &str,
    limit: std::time::Duration,
    check: impl Fn(&str) -> bool,
) -> (String, std::time::Duration) {
    let start = std::time::Instant::now();
    loop {
        let out = birdc(ns, sock, &["show", "route", "all", prefix]);
        if check(&out) {
            return (out, start.elapsed());
        }
        assert!(start.elapsed() < limit, "BIRD never {what}:\n{out}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
