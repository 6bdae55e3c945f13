//! What one `stowage mount` did, kept under the data directory so that `unmount`
//! can undo it, even after a restart of everything.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug)]
pub struct MountRecord {
    pub target: PathBuf,
    pub namespace: String,
    pub claim: String,
    pub volume: String,
    pub volume_id: String,
    /// Empty when the driver does not stage.
    pub staging: String,
    /// Where the node plugin published, below its kubelet root; bound onto `target`.
    pub published: PathBuf,
}

/// The record's file: the target's bytes in hex, so distinct targets never collide.
pub fn path_for(mounts: &Path, target: &Path) -> PathBuf {
    let name: String = target
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    mounts.join(format!("{name}.json"))
}

/// A mount record that could not be kept, read or dropped.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("mount record of {}: {source}", .target.display())]
    Encode {
        target: PathBuf,
        source: serde_json::Error,
    },
    #[error("write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("remove {}: {source}", .path.display())]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn save(mounts: &Path, record: &MountRecord) -> Result<(), RecordError> {
    let path = path_for(mounts, &record.target);
    let text = serde_json::to_vec_pretty(record).map_err(|source| RecordError::Encode {
        target: record.target.clone(),
        source,
    })?;
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text)
        .and_then(|()| std::fs::rename(&temp, &path))
        .map_err(|source| RecordError::Write { path, source })
}

pub fn load(mounts: &Path, target: &Path) -> Result<Option<MountRecord>, RecordError> {
    let path = path_for(mounts, target);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| RecordError::Parse { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RecordError::Read { path, source }),
    }
}

pub fn remove(mounts: &Path, target: &Path) -> Result<(), RecordError> {
    let path = path_for(mounts, target);
    match std::fs::remove_file(&path) {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
            Err(RecordError::Remove { path, source })
        }
        _ => Ok(()),
    }
}

pub fn all(mounts: &Path) -> Vec<MountRecord> {
    let Ok(entries) = std::fs::read_dir(mounts) else {
        return Vec::new();
    };
    let mut records: Vec<MountRecord> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect();
    records.sort_by(|a, b| a.target.cmp(&b.target));
    records
}
