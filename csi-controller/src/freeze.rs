//! Writers held still while a group snapshot is taken: every mounted filesystem of the
//! group's image volumes is frozen (FIFREEZE, through util-linux's `fsfreeze`) before
//! the first member is copied and thawed after the last.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use stowage_common::loop_device;
use stowage_common::mountinfo::MountTable;
use stowage_common::tool::{self, Program};

use crate::error::{Error, Result};

/// Filesystems frozen until this is dropped.
#[derive(Debug, Default)]
pub struct Frozen {
    mount_points: Vec<PathBuf>,
}

impl Frozen {
    /// Freezes the mounted filesystem of each image (images not mounted anywhere have
    /// no writers). If one freeze fails, the ones before it are thawed again.
    pub fn images(images: &[PathBuf]) -> Result<Self> {
        let devices: Vec<PathBuf> = images
            .iter()
            .filter_map(|i| loop_device::backing(i))
            .collect();
        if devices.is_empty() {
            return Ok(Self::default());
        }
        let table = MountTable::read().map_err(|e| Error::io("read mountinfo", e))?;
        let mut frozen = Self::default();
        for device in devices {
            // One mount per filesystem: its binds share the superblock, and a second
            // freeze of a frozen superblock fails.
            let Some(entry) = table
                .entries()
                .iter()
                .find(|e| Path::new(&e.source) == device)
            else {
                continue;
            };
            fsfreeze("-f", &entry.mount_point)?;
            frozen.mount_points.push(entry.mount_point.clone());
        }
        Ok(frozen)
    }

    /// How many filesystems are held frozen.
    pub fn count(&self) -> usize {
        self.mount_points.len()
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for mount_point in self.mount_points.drain(..).rev() {
            if let Err(e) = fsfreeze("-u", &mount_point) {
                tracing::error!(mount_point = %mount_point.display(), error = %e, "thaw failed");
            }
        }
    }
}

const FSFREEZE: Program = Program {
    name: "fsfreeze",
    package: "util-linux",
};

fn fsfreeze(flag: &str, mount_point: &Path) -> Result<()> {
    tool::run(FSFREEZE, [OsStr::new(flag), mount_point.as_os_str()]).map_err(|source| Error::Tool {
        path: mount_point.to_path_buf(),
        source,
    })
}
