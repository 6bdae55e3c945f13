//! One NFS export as a [`Backend`]: the NFS backend's calls with the export the
//! volume's ID names.

use std::path::PathBuf;

use crate::listing::WireVolumes;

use nfs_session::Export;

use super::NfsBackend;
use crate::backend::{Backend, Grown};
use crate::error::Result;
use crate::params::BackendKind;
use crate::record::{SnapshotRecord, VolumeRecord};
use driver_contract::ids::Key;
use driver_contract::request::Capacity;

/// The volumes and snapshots of one export.
#[derive(Debug)]
pub struct NfsShare<'a> {
    nfs: &'a NfsBackend,
    export: Export,
}

impl<'a> NfsShare<'a> {
    /// The export `export` as reached through `nfs`.
    pub fn new(nfs: &'a NfsBackend, export: Export) -> Self {
        Self { nfs, export }
    }
}

#[tonic::async_trait]
impl Backend for NfsShare<'_> {
    fn kind(&self) -> BackendKind {
        BackendKind::Nfs
    }

    async fn volume(&self, key: &Key) -> Result<Option<VolumeRecord>> {
        self.nfs.get(&self.export, key).await
    }

    async fn volumes_after(&self, after: &str, limit: usize, page: &mut WireVolumes) -> Result<()> {
        // The records are files on the share: every one is read.
        let mut records = self.nfs.list(&self.export).await?;
        records.retain(|r| r.volume_id.as_str() > after);
        records.sort_by(|a, b| a.volume_id.cmp(&b.volume_id));
        records.truncate(limit);
        for record in records {
            page.push_message(&record.into_csi());
        }
        Ok(())
    }

    async fn delete_volume(&self, key: &Key) -> Result<()> {
        match self.nfs.get(&self.export, key).await? {
            Some(record) => self.nfs.delete(&self.export, key, &record).await,
            None => Ok(()),
        }
    }

    async fn save_volume(&self, key: &Key, record: &VolumeRecord) -> Result<()> {
        self.nfs.save(&self.export, key, record).await
    }

    async fn expand_volume(
        &self,
        key: &Key,
        record: &VolumeRecord,
        capacity: Capacity,
    ) -> Result<Grown> {
        // NFS capacity is advisory: nothing on a node to grow.
        let grown = self
            .nfs
            .expand(&self.export, key, record, capacity.required)
            .await?;
        Ok((grown, false))
    }

    async fn data_present(&self, _key: &Key, record: &VolumeRecord) -> Result<bool> {
        self.nfs.data_present(&self.export, record).await
    }

    fn freezable_image(&self, _key: &Key, _record: &VolumeRecord) -> Option<PathBuf> {
        None
    }

    async fn snapshot(&self, key: &Key) -> Result<Option<SnapshotRecord>> {
        self.nfs.get_snapshot(&self.export, key).await
    }

    async fn snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        self.nfs.list_snapshots(&self.export).await
    }

    async fn create_snapshot(
        &self,
        key: &Key,
        source: &VolumeRecord,
        snapshot: &SnapshotRecord,
        _freeze: bool,
    ) -> Result<()> {
        // The server's data is not cached here: nothing to freeze.
        self.nfs
            .create_snapshot(&self.export, key, source, snapshot)
            .await
    }

    async fn delete_snapshot(&self, key: &Key) -> Result<()> {
        self.nfs.delete_snapshot(&self.export, key).await
    }
}
