//! Which loop device, if any, a file backs: read from sysfs, so it survives a restart
//! of whichever plugin attached it.

use std::fs;
use std::path::{Path, PathBuf};

/// The loop device `file` backs, if one is attached.
pub fn backing(file: &Path) -> Option<PathBuf> {
    fs::read_dir("/sys/block")
        .ok()?
        .filter_map(|d| d.ok())
        .find_map(|d| {
            let backing = fs::read_to_string(d.path().join("loop/backing_file")).ok()?;
            (Path::new(backing.trim_end()) == file)
                .then(|| PathBuf::from("/dev").join(d.file_name()))
        })
}
