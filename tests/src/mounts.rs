//! Mount hygiene for tests: whatever a test mounted below its directory is unmounted
//! when the guard drops, even if the test panicked.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, umount2};

/// A temporary directory whose mounts are all undone on drop.
pub struct MountedDir {
    dir: tempfile::TempDir,
}

impl MountedDir {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("stowage-mounts")
            .tempdir()
            .expect("tempdir");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for MountedDir {
    fn default() -> Self {
        Self::new()
    }
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// Loop devices whose backing file lies below `dir`.
pub fn loop_devices_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(devices) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    devices
        .filter_map(|d| d.ok())
        .filter(|d| {
            std::fs::read_to_string(d.path().join("loop/backing_file"))
                .is_ok_and(|b| Path::new(b.trim_end()).starts_with(dir))
        })
        .map(|d| PathBuf::from("/dev").join(d.file_name()))
        .collect()
}

impl Drop for MountedDir {
    fn drop(&mut self) {
        for _ in 0..3 {
            let mounts = mounts_under(self.dir.path());
            if mounts.is_empty() {
                break;
            }
            for mount in mounts {
                let _ = umount2(&mount, MntFlags::MNT_DETACH);
            }
        }
        // A block volume's loop device is held by no mount: release it too.
        for device in loop_devices_under(self.dir.path()) {
            let _ = std::process::Command::new("losetup")
                .arg("-d")
                .arg(&device)
                .status();
        }
    }
}
