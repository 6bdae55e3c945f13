//! Local volumes: a directory or a sparse image per volume under this node's root.
//!
//! Layout under the root (shared with the node plugin through [`data_path`]):
//! `volumes/<key>` (directory) or `volumes/<key>.img` (image, block), with the
//! record `volumes/<key>.json`; `snapshots/` likewise. A volume exists once its
//! record is written; data is built under a `.<key>.tmp` name and renamed into
//! place first, so a crash never leaves a half-filled volume behind a record.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::ids::{Key, key_of};
use crate::localfs;
use crate::params::OnDelete;
use crate::record::{self, Layout, SnapshotRecord, VolumeRecord};

const VOLUMES: &str = "volumes";
const SNAPSHOTS: &str = "snapshots";
const RETAINED: &str = "retained";

/// The smallest ext4 image worth making (mkfs needs room for its journal).
pub const MIN_IMAGE_BYTES: i64 = 16 << 20;

/// Where a local volume's (or snapshot's) data lives, given its layout.
pub fn data_path(dir: &Path, key: &str, layout: &Layout) -> PathBuf {
    match layout {
        Layout::Image | Layout::Block => dir.join(format!("{key}.img")),
        Layout::Directory | Layout::Nfs { .. } => dir.join(key),
    }
}

/// Where local volume data lives on a node with this root.
pub fn volume_data_path(root: &Path, key: &str, layout: &Layout) -> PathBuf {
    data_path(&root.join(VOLUMES), key, layout)
}

/// What to fill a new volume with.
pub enum Fill<'a> {
    Empty,
    Volume(&'a VolumeRecord),
    Snapshot(&'a SnapshotRecord),
}

#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
    node: String,
}

impl LocalBackend {
    /// Opens (creating) the root and removes what crashed calls left half-made.
    pub fn open(root: &Path, node: &str) -> Result<Self> {
        let backend = Self {
            root: root.to_path_buf(),
            node: node.to_string(),
        };
        for dir in [VOLUMES, SNAPSHOTS] {
            let path = root.join(dir);
            fs::create_dir_all(&path)
                .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
            sweep(&path)?;
        }
        Ok(backend)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn volumes(&self) -> PathBuf {
        self.root.join(VOLUMES)
    }

    fn snapshots(&self) -> PathBuf {
        self.root.join(SNAPSHOTS)
    }

    pub fn available_bytes(&self) -> Result<i64> {
        localfs::available_bytes(&self.root)
    }

    pub fn get(&self, key: &Key) -> Result<Option<VolumeRecord>> {
        read_record(&self.volumes(), key.as_str())
    }

    pub fn list(&self) -> Result<Vec<VolumeRecord>> {
        list_records(&self.volumes())
    }

    /// Builds the volume's data and commits its record.
    pub fn create(&self, key: &Key, record: &VolumeRecord, fill: Fill<'_>) -> Result<()> {
        let dir = self.volumes();
        let final_path = data_path(&dir, key.as_str(), &record.layout);
        let staging = dir.join(format!(".{key}.tmp"));
        localfs::remove_any(&staging)?;
        localfs::remove_any(&final_path)?;
        self.build(&staging, record, fill)?;
        fs::rename(&staging, &final_path)
            .map_err(|e| Error::io(format!("rename into {}", final_path.display()), e))?;
        localfs::sync_dir(&dir)?;
        localfs::write_atomic(&dir.join(format!("{key}.json")), &record::encode(record)?)
    }

    fn build(&self, path: &Path, record: &VolumeRecord, fill: Fill<'_>) -> Result<()> {
        let size = u64::try_from(record.capacity_bytes).unwrap_or(0);
        let source = match fill {
            Fill::Empty => None,
            Fill::Volume(v) => Some((
                data_path(&self.volumes(), key_of(&v.volume_id), &v.layout),
                &v.layout,
            )),
            Fill::Snapshot(s) => Some((
                data_path(&self.snapshots(), key_of(&s.snapshot_id), &s.layout),
                &s.layout,
            )),
        };
        match (&record.layout, source) {
            (Layout::Directory, None) => make_dir(path),
            (Layout::Directory, Some((src, Layout::Directory))) => localfs::copy_tree(&src, path),
            (Layout::Image | Layout::Block, Some((src, Layout::Image | Layout::Block))) => {
                localfs::copy_sparse(&src, path)?;
                grow_file(path, size)
            }
            (Layout::Image, None) => {
                grow_file(path, size)?;
                mkfs_ext4(path)
            }
            (Layout::Block, None) => grow_file(path, size),
            (layout, Some((_, from))) => Err(Error::invalid(
                "volume_content_source",
                format!(
                    "cannot fill a {} volume from a {} source",
                    layout.name(),
                    from.name()
                ),
            )),
            (Layout::Nfs { .. }, None) => Err(Error::invalid("parameters", "not a local layout")),
        }
    }

    /// Removes the data, then the record: a failed removal keeps the volume visible.
    /// Removes a volume; its data too unless its mutable `onDelete` says retain, in
    /// which case the data moves to `<root>/retained/` under the volume's name.
    pub fn delete(&self, key: &Key) -> Result<()> {
        let dir = self.volumes();
        if let Some(record) = self.get(key)? {
            let data = data_path(&dir, key.as_str(), &record.layout);
            match crate::params::mutable_on_delete(&record.mutable_parameters) {
                Some(OnDelete::Retain | OnDelete::Archive) => self.retain(&data, key)?,
                Some(OnDelete::Delete) | None => localfs::remove_any(&data)?,
            }
        }
        localfs::remove_any(&dir.join(format!("{key}.json")))?;
        localfs::sync_dir(&dir)
    }

    /// Where retained data of deleted volumes goes.
    pub fn retained_dir(&self) -> PathBuf {
        self.root.join(RETAINED)
    }

    fn retain(&self, data: &Path, key: &Key) -> Result<()> {
        let retained = self.retained_dir();
        std::fs::create_dir_all(&retained)
            .map_err(|e| Error::io(format!("create {}", retained.display()), e))?;
        let name = data
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| key.as_str().into());
        match std::fs::rename(data, retained.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("retain {}", data.display()), e))
            }
            _ => localfs::sync_dir(&retained),
        }
    }

    /// Rewrites a volume's record (after ControllerModifyVolume).
    pub fn save(&self, key: &Key, record: &VolumeRecord) -> Result<()> {
        localfs::write_atomic(
            &self.volumes().join(format!("{key}.json")),
            &record::encode(record)?,
        )
    }

    /// Grows a volume to `size`. An image's filesystem grows here too when no loop
    /// device holds it; otherwise the node grows it online. Returns the new record and
    /// whether the node still has filesystem work to do.
    pub fn expand(
        &self,
        key: &Key,
        record: &VolumeRecord,
        size: i64,
    ) -> Result<(VolumeRecord, bool)> {
        let dir = self.volumes();
        let data = data_path(&dir, key.as_str(), &record.layout);
        if matches!(record.layout, Layout::Image | Layout::Block) {
            grow_file(&data, u64::try_from(size).unwrap_or(0))?;
        }
        let node_work = record.layout == Layout::Image
            && (attached_to_loop(&data) || grow_ext4_offline(&data).is_err());
        let grown = VolumeRecord {
            capacity_bytes: size,
            ..record.clone()
        };
        localfs::write_atomic(&dir.join(format!("{key}.json")), &record::encode(&grown)?)?;
        Ok((grown, node_work))
    }

    /// Is the volume's data where its record says?
    pub fn data_present(&self, key: &Key, record: &VolumeRecord) -> bool {
        data_path(&self.volumes(), key.as_str(), &record.layout).exists()
    }

    pub fn get_snapshot(&self, key: &Key) -> Result<Option<SnapshotRecord>> {
        read_record(&self.snapshots(), key.as_str())
    }

    pub fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        list_records(&self.snapshots())
    }

    /// Copies the source volume's data into a snapshot and commits its record.
    pub fn create_snapshot(
        &self,
        key: &Key,
        source: &VolumeRecord,
        snapshot: &SnapshotRecord,
    ) -> Result<()> {
        let dir = self.snapshots();
        let staging = dir.join(format!(".{key}.tmp"));
        let final_path = data_path(&dir, key.as_str(), &snapshot.layout);
        localfs::remove_any(&staging)?;
        let src = data_path(&self.volumes(), key_of(&source.volume_id), &source.layout);
        match source.layout {
            Layout::Directory => localfs::copy_tree(&src, &staging)?,
            _ => localfs::copy_sparse(&src, &staging)?,
        }
        fs::rename(&staging, &final_path)
            .map_err(|e| Error::io(format!("rename into {}", final_path.display()), e))?;
        localfs::sync_dir(&dir)?;
        localfs::write_atomic(&dir.join(format!("{key}.json")), &record::encode(snapshot)?)
    }

    pub fn delete_snapshot(&self, key: &Key) -> Result<()> {
        let dir = self.snapshots();
        if let Some(record) = self.get_snapshot(key)? {
            localfs::remove_any(&data_path(&dir, key.as_str(), &record.layout))?;
        }
        localfs::remove_any(&dir.join(format!("{key}.json")))?;
        localfs::sync_dir(&dir)
    }
}

fn read_record<T: for<'de> serde::Deserialize<'de>>(dir: &Path, key: &str) -> Result<Option<T>> {
    let path = dir.join(format!("{key}.json"));
    localfs::read_optional(&path)?
        .map(|bytes| record::decode(&path.display().to_string(), &bytes))
        .transpose()
}

fn list_records<T: for<'de> serde::Deserialize<'de>>(dir: &Path) -> Result<Vec<T>> {
    let mut records = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(format!("list {}", dir.display()), e))? {
        let entry = entry.map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(key) = name.strip_suffix(".json").filter(|k| !k.starts_with('.'))
            && let Some(record) = read_record(dir, key)?
        {
            records.push(record);
        }
    }
    Ok(records)
}

/// Removes temporaries and data that never got a record: leftovers of crashed calls.
fn sweep(dir: &Path) -> Result<()> {
    let names: Vec<String> = fs::read_dir(dir)
        .map_err(|e| Error::io(format!("list {}", dir.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    for name in &names {
        let key = name.strip_suffix(".img").unwrap_or(name);
        let orphan = !name.ends_with(".json") && !names.contains(&format!("{key}.json"));
        if name.starts_with('.') || name.ends_with(".tmp") || orphan {
            tracing::info!(path = %dir.join(name).display(), "removing leftover of an interrupted call");
            localfs::remove_any(&dir.join(name))?;
        }
    }
    Ok(())
}

fn make_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir(path).map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    // Pods of any uid write here, as with emptyDir.
    fs::set_permissions(path, fs::Permissions::from_mode(0o777))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))
}

fn grow_file(path: &Path, size: u64) -> Result<()> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
        .len();
    if size > len {
        file.set_len(size)
            .map_err(|e| Error::io(format!("grow {}", path.display()), e))?;
    }
    file.sync_all()
        .map_err(|e| Error::io(format!("fsync {}", path.display()), e))
}

fn mkfs_ext4(path: &Path) -> Result<()> {
    let options = "nodiscard,lazy_itable_init=1,lazy_journal_init=1";
    run_e2fs_tool("mkfs.ext4", &["-F", "-q", "-m", "0", "-E", options], path)
}

/// Grows an unmounted ext4 image to its file size: resize2fs wants a fresh check first.
fn grow_ext4_offline(path: &Path) -> Result<()> {
    run_e2fs_tool("e2fsck", &["-f", "-p"], path)?;
    run_e2fs_tool("resize2fs", &[], path)
}

fn run_e2fs_tool(tool: &str, args: &[&str], path: &Path) -> Result<()> {
    match Command::new(tool).args(args).arg(path).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(Error::Tool(format!(
            "{tool} {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::Tool(format!(
            "{tool} is not installed (Debian package e2fsprogs)"
        ))),
        Err(e) => Err(Error::io(format!("run {tool}"), e)),
    }
}

/// Is a loop device backed by this file (i.e. is the image staged on this node)?
fn attached_to_loop(path: &Path) -> bool {
    localfs::loop_device_of(path).is_some()
}
