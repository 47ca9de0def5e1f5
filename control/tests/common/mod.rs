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
