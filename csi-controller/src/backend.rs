//! The operations the controller asks of the place a volume lives: one implementation
//! per kind of place (this node's local root: [`crate::local::LocalBackend`]; one NFS
//! export: [`crate::nfs::NfsShare`]). The driver resolves an ID's location to one of
//! them once ([`crate::Driver::backend`]); the handlers call this trait.
//!
//! CreateVolume is planned per StorageClass type before any location exists (layout,
//! size rules, topology differ), so it calls its backend's own `create`; everything
//! that starts from an ID goes through here.

use std::path::PathBuf;

use crate::listing::WireVolumes;

use crate::error::{Error, Result};
use crate::params::BackendKind;
use crate::record::{SnapshotRecord, VolumeRecord};
use driver_contract::ids::Key;
use driver_contract::request::Capacity;

/// What a new volume is filled with.
#[derive(Debug, Clone, PartialEq)]
pub enum Fill {
    /// Nothing: an empty directory, sparse file or fresh filesystem.
    Empty,
    /// A copy of this volume's data (CSI clone).
    Volume(VolumeRecord),
    /// A copy of this snapshot's data (CSI restore).
    Snapshot(SnapshotRecord),
}

impl Fill {
    /// The bytes the source holds (its capacity or snapshot size); None when empty.
    pub fn size(&self) -> Option<i64> {
        match self {
            Self::Empty => None,
            Self::Volume(v) => Some(v.capacity_bytes),
            Self::Snapshot(s) => Some(s.size_bytes),
        }
    }
}

/// A volume's new size and whether the node has filesystem work left to do.
pub type Grown = (VolumeRecord, bool);

/// One place volumes and snapshots live, seen by the controller.
#[tonic::async_trait]
pub trait Backend: Send + Sync {
    /// The kind of place (decides, e.g., which mutable parameters are accepted).
    fn kind(&self) -> BackendKind;

    /// The volume's record, if the volume exists here.
    async fn volume(&self, key: &Key) -> Result<Option<VolumeRecord>>;

    /// Adds to `page` up to `limit` volumes whose IDs sort after `after` (an ID or
    /// ""), the lowest IDs first (a ListVolumes page).
    async fn volumes_after(&self, after: &str, limit: usize, page: &mut WireVolumes) -> Result<()>;

    /// Removes the volume as its onDelete policy says; done when it does not exist.
    async fn delete_volume(&self, key: &Key) -> Result<()>;

    /// Rewrites the volume's record (ControllerModifyVolume).
    async fn save_volume(&self, key: &Key, record: &VolumeRecord) -> Result<()>;

    /// Grows the volume to satisfy `capacity` (already known to ask for more).
    async fn expand_volume(
        &self,
        key: &Key,
        record: &VolumeRecord,
        capacity: Capacity,
    ) -> Result<Grown>;

    /// Is the volume's data where its record says?
    async fn data_present(&self, key: &Key, record: &VolumeRecord) -> Result<bool>;

    /// The image file a freeze can hold for the volume, if it is one (group snapshots
    /// freeze every member's before the first copy).
    fn freezable_image(&self, key: &Key, record: &VolumeRecord) -> Option<PathBuf>;

    /// The snapshot's record, if it exists here.
    async fn snapshot(&self, key: &Key) -> Result<Option<SnapshotRecord>>;

    /// Every snapshot here.
    async fn snapshots(&self) -> Result<Vec<SnapshotRecord>>;

    /// Copies `source`'s data into the snapshot and commits its record; `freeze`: hold
    /// the source's filesystem frozen for the copy (a lone snapshot; a group's members
    /// were frozen by the group).
    async fn create_snapshot(
        &self,
        key: &Key,
        source: &VolumeRecord,
        snapshot: &SnapshotRecord,
        freeze: bool,
    ) -> Result<()>;

    /// Removes the snapshot's data and record; done when it does not exist.
    async fn delete_snapshot(&self, key: &Key) -> Result<()>;
}

/// Runs blocking filesystem work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::io("blocking task", std::io::Error::other(e)))?
}
