//! NFS volumes: one subdirectory of a share per volume, made through the userspace
//! client. Records live on the share itself (`.stowage/volumes/<key>.json`), next to
//! the data, so any controller replica sees the same truth.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

use nfs_session::nfs_fh3;

use nfs_session::Session;

/// Runs `$body` with `$s` bound to a fresh session on `$export`, and always releases the mount.
macro_rules! in_session {
    ($export:expr, $s:ident => $body:expr) => {{
        let mut session = Session::connect($export).await?;
        let $s = &mut session;
        let result: Result<_> = async { $body }.await;
        session.close().await;
        result
    }};
}
use crate::backend::Fill;
use crate::error::{Error, Result};
use crate::localfs;
use crate::params::OnDelete;
use crate::record::{self, Layout, SnapshotRecord, VolumeRecord, now};
use driver_contract::export::METADATA_DIR;
use driver_contract::ids::{Key, key_of};
use nfs_session::{Export, NfsError, SpaceStats};

const VOLUMES: &str = "volumes";
const SNAPSHOTS: &str = "snapshots";

/// Makes and removes NFS volumes; remembers which exports it has used, so that
/// ListVolumes and Probe can reach them after a restart.
#[derive(Debug)]
pub struct NfsBackend {
    catalogue: PathBuf,
    known: Mutex<BTreeSet<Export>>,
}

impl NfsBackend {
    /// Opens the backend, reading the exports remembered under `state_dir`.
    pub fn open(state_dir: &std::path::Path) -> Result<Self> {
        let catalogue = state_dir.join("nfs-exports.json");
        let known: BTreeSet<String> = match localfs::read_optional(&catalogue)? {
            Some(bytes) => record::decode(&catalogue.display().to_string(), &bytes)?,
            None => BTreeSet::new(),
        };
        let known = known
            .iter()
            .filter_map(|s| Export::parse_compact(s).ok())
            .collect();
        Ok(Self {
            catalogue,
            known: Mutex::new(known),
        })
    }

    /// The exports volumes were made on.
    pub fn known_exports(&self) -> Vec<Export> {
        self.known
            .lock()
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn remember(&self, export: &Export) -> Result<()> {
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.insert(export.clone()) {
            let names: BTreeSet<String> = known.iter().map(Export::to_string).collect();
            localfs::write_atomic(&self.catalogue, &record::encode(&names)?)?;
        }
        Ok(())
    }

    /// Checks that the export answers (Probe).
    pub async fn ping(&self, export: &Export) -> Result<()> {
        self.space(export).await.map(drop)
    }

    /// The export's space (FSSTAT).
    pub async fn space(&self, export: &Export) -> Result<SpaceStats> {
        in_session!(export, s => Ok(s.fsstat().await?))
    }

    /// The volume's record on the export, if it exists.
    pub async fn get(&self, export: &Export, key: &Key) -> Result<Option<VolumeRecord>> {
        in_session!(export, s => read_record(s, VOLUMES, key).await)
    }

    /// Every volume record on the export.
    pub async fn list(&self, export: &Export) -> Result<Vec<VolumeRecord>> {
        in_session!(export, s => list_records(s, VOLUMES).await)
    }

    /// The snapshot's record on the export, if it exists.
    pub async fn get_snapshot(&self, export: &Export, key: &Key) -> Result<Option<SnapshotRecord>> {
        in_session!(export, s => read_record(s, SNAPSHOTS, key).await)
    }

    /// Every snapshot record on the export.
    pub async fn list_snapshots(&self, export: &Export) -> Result<Vec<SnapshotRecord>> {
        in_session!(export, s => list_records(s, SNAPSHOTS).await)
    }

    /// Makes the subdirectory (an existing one is adopted, as upstream does),
    /// fills it, then commits the record.
    pub async fn create(
        &self,
        export: &Export,
        key: &Key,
        record: &VolumeRecord,
        mode: u32,
        fill: &Fill,
    ) -> Result<()> {
        let Layout::Nfs { sub_dir, .. } = &record.layout else {
            return Err(Error::invalid("parameters", "not an NFS layout"));
        };
        let source = match fill {
            Fill::Empty => None,
            Fill::Volume(v) => Some(source_path(&v.layout)?),
            Fill::Snapshot(s) => Some(snapshot_path(key_of(&s.snapshot_id))),
        };
        let bytes = record::encode(record)?;
        in_session!(export, s => {
            // Only an export that answered is remembered (a typo must not make Probe
            // fail forever), and before any record, so ListVolumes cannot miss one.
            self.remember(export)?;
            let target = s.mkdir_all(sub_dir, mode).await?;
            if let Some(source) = source {
                let from = s
                    .resolve(&source)
                    .await?
                    .ok_or_else(|| Error::DataGone { what: "source", path: source.join("/") })?;
                s.copy_tree(&from, &target).await?;
            }
            let dir = metadata_dir(s, VOLUMES).await?;
            s.write_file_atomic(&dir, &format!("{key}.json"), &bytes).await?;
            Ok(())
        })
    }

    /// Applies the volume's onDelete policy to its data, then removes the record.
    pub async fn delete(&self, export: &Export, key: &Key, record: &VolumeRecord) -> Result<()> {
        let Layout::Nfs {
            sub_dir, on_delete, ..
        } = &record.layout
        else {
            return Err(Error::invalid("volume_id", "not an NFS volume"));
        };
        let on_delete =
            crate::params::mutable_on_delete(&record.mutable_parameters).unwrap_or(*on_delete);
        in_session!(export, s => {
            let (parent_path, name) = sub_dir.split_at(sub_dir.len().saturating_sub(1));
            if let (Some(parent), Some(name)) = (s.resolve(parent_path).await?, name.first()) {
                match on_delete {
                    OnDelete::Delete => s.remove_all(&parent, name).await?,
                    OnDelete::Retain => {}
                    OnDelete::Archive => archive(s, &parent, name).await?,
                }
            }
            let dir = metadata_dir(s, VOLUMES).await?;
            s.remove_file(&dir, &format!("{key}.json")).await?;
            Ok(())
        })
    }

    /// Rewrites a volume's record (after ControllerModifyVolume).
    pub async fn save(&self, export: &Export, key: &Key, record: &VolumeRecord) -> Result<()> {
        let bytes = record::encode(record)?;
        in_session!(export, s => {
            let dir = metadata_dir(s, VOLUMES).await?;
            s.write_file_atomic(&dir, &format!("{key}.json"), &bytes).await?;
            Ok(())
        })
    }

    /// NFS capacity is advisory: expansion only records the new size.
    pub async fn expand(
        &self,
        export: &Export,
        key: &Key,
        record: &VolumeRecord,
        size: i64,
    ) -> Result<VolumeRecord> {
        let grown = VolumeRecord {
            capacity_bytes: size,
            ..record.clone()
        };
        self.save(export, key, &grown).await?;
        Ok(grown)
    }

    /// Is the volume's directory there?
    pub async fn data_present(&self, export: &Export, record: &VolumeRecord) -> Result<bool> {
        let path = source_path(&record.layout)?;
        in_session!(export, s => Ok(s.resolve(&path).await?.is_some()))
    }

    /// Copies the volume's tree to `.stowage/snapshots/<key>/` and commits the record.
    pub async fn create_snapshot(
        &self,
        export: &Export,
        key: &Key,
        source: &VolumeRecord,
        snapshot: &SnapshotRecord,
    ) -> Result<()> {
        let from_path = source_path(&source.layout)?;
        let bytes = record::encode(snapshot)?;
        in_session!(export, s => {
            let from = s
                .resolve(&from_path)
                .await?
                .ok_or_else(|| Error::DataGone { what: "volume", path: from_path.join("/") })?;
            let dir = metadata_dir(s, SNAPSHOTS).await?;
            let staging = format!(".{key}.tmp");
            s.remove_all(&dir, &staging).await?;
            let target = s.mkdir(&dir, &staging, 0o755).await?;
            s.copy_tree(&from, &target).await?;
            s.remove_all(&dir, key.as_str()).await?;
            s.rename(&dir, &staging, &dir, key.as_str()).await?;
            s.write_file_atomic(&dir, &format!("{key}.json"), &bytes).await?;
            Ok(())
        })
    }

    /// Removes the snapshot's copy and record; done if absent.
    pub async fn delete_snapshot(&self, export: &Export, key: &Key) -> Result<()> {
        in_session!(export, s => {
            let dir = metadata_dir(s, SNAPSHOTS).await?;
            s.remove_all(&dir, key.as_str()).await?;
            s.remove_file(&dir, &format!("{key}.json")).await?;
            Ok(())
        })
    }

    /// Bytes used by a volume's files (snapshot size).
    pub async fn used_bytes(&self, export: &Export, record: &VolumeRecord) -> Result<i64> {
        let path = source_path(&record.layout)?;
        in_session!(export, s => {
            let Some(dir) = s.resolve(&path).await? else { return Ok(0) };
            Ok(i64::try_from(s.tree_size(&dir).await?).unwrap_or(i64::MAX))
        })
    }
}

fn source_path(layout: &Layout) -> Result<Vec<String>> {
    match layout {
        Layout::Nfs { sub_dir, .. } => Ok(sub_dir.clone()),
        other => Err(Error::invalid(
            "volume_content_source",
            format!("a {} volume cannot fill an NFS volume", other.name()),
        )),
    }
}

fn snapshot_path(key: &str) -> Vec<String> {
    vec![
        METADATA_DIR.to_string(),
        SNAPSHOTS.to_string(),
        key.to_string(),
    ]
}

async fn metadata_dir(s: &mut Session, kind: &str) -> Result<nfs_fh3, NfsError> {
    s.mkdir_all(&[METADATA_DIR.to_string(), kind.to_string()], 0o700)
        .await
}

async fn read_record<T: for<'de> serde::Deserialize<'de>>(
    s: &mut Session,
    kind: &str,
    key: &Key,
) -> Result<Option<T>> {
    let Some(dir) = s
        .resolve(&[METADATA_DIR.to_string(), kind.to_string()])
        .await?
    else {
        return Ok(None);
    };
    let name = format!("{key}.json");
    match s.read_file(&dir, &name).await? {
        Some(bytes) => Ok(Some(record::decode(&name, &bytes)?)),
        None => Ok(None),
    }
}

async fn list_records<T: for<'de> serde::Deserialize<'de>>(
    s: &mut Session,
    kind: &str,
) -> Result<Vec<T>> {
    let Some(dir) = s
        .resolve(&[METADATA_DIR.to_string(), kind.to_string()])
        .await?
    else {
        return Ok(Vec::new());
    };
    let mut records = Vec::new();
    for entry in s.read_dir(&dir).await? {
        if entry.name.starts_with('.') || !entry.name.ends_with(".json") {
            continue;
        }
        if let Some(bytes) = s.read_file(&dir, &entry.name).await? {
            records.push(record::decode(&entry.name, &bytes)?);
        }
    }
    Ok(records)
}

async fn archive(s: &mut Session, parent: &nfs_fh3, name: &str) -> Result<()> {
    if s.lookup(parent, name).await?.is_none() {
        return Ok(());
    }
    let archived = format!("archived-{name}-{}", now().0);
    s.rename(parent, name, parent, &archived).await?;
    Ok(())
}
