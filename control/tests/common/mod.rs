//! Shared by control's end-to-end tests.

use std::path::PathBuf;

use sluice_dataplane::tables::Writer;

/// Temp files and a table region, removed on drop (pass or fail).
pub struct Cleanup {
    /// The region's name.
    pub region: String,
    /// Files to remove.
    pub files: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        let _ = Writer::remove(&self.region);
    }
}
