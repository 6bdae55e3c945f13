//! This node's local root as a [`Backend`]: the filesystem work runs on the blocking
//! pool, off the async workers.

use std::path::PathBuf;

use crate::listing::WireVolumes;

use super::{LocalBackend, volume_data_path};
use crate::backend::{Backend, Grown, blocking};
use crate::error::Result;
use crate::freeze::Frozen;
use crate::params::BackendKind;
use crate::record::{Layout, SnapshotRecord, VolumeRecord};
use driver_contract::ids::{Key, key_of};
use driver_contract::request::Capacity;

#[tonic::async_trait]
impl Backend for LocalBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Local
    }

    async fn volume(&self, key: &Key) -> Result<Option<VolumeRecord>> {
        // Memory only: the store holds the records.
        self.get(key)
    }

    async fn volumes_after(&self, after: &str, limit: usize, page: &mut WireVolumes) -> Result<()> {
        // Memory only: the store holds the records.
        self.list_after(after, limit, page)
    }

    async fn delete_volume(&self, key: &Key) -> Result<()> {
        let (local, key) = (self.clone(), key.clone());
        blocking(move || local.delete(&key)).await
    }

    async fn save_volume(&self, key: &Key, record: &VolumeRecord) -> Result<()> {
        let (local, key, record) = (self.clone(), key.clone(), record.clone());
        blocking(move || local.save(&key, &record)).await
    }

    async fn expand_volume(
        &self,
        key: &Key,
        record: &VolumeRecord,
        capacity: Capacity,
    ) -> Result<Grown> {
        let (local, key, record) = (self.clone(), key.clone(), record.clone());
        blocking(move || local.expand_to(&key, &record, capacity)).await
    }

    async fn data_present(&self, key: &Key, record: &VolumeRecord) -> Result<bool> {
        Ok(LocalBackend::data_present(self, key, record))
    }

    fn freezable_image(&self, key: &Key, record: &VolumeRecord) -> Option<PathBuf> {
        image_of(self, key.as_str(), record)
    }

    async fn snapshot(&self, key: &Key) -> Result<Option<SnapshotRecord>> {
        let (local, key) = (self.clone(), key.clone());
        blocking(move || local.get_snapshot(&key)).await
    }

    async fn snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        let local = self.clone();
        blocking(move || local.list_snapshots()).await
    }

    async fn create_snapshot(
        &self,
        key: &Key,
        source: &VolumeRecord,
        snapshot: &SnapshotRecord,
        freeze: bool,
    ) -> Result<()> {
        // A lone snapshot of a staged image volume: its ext4 is frozen, and so flushed,
        // for the copy; else what the pod wrote and the page cache still holds would be
        // missing from the copy.
        let image = freeze
            .then(|| image_of(self, key_of(&source.volume_id), source))
            .flatten();
        let (local, key) = (self.clone(), key.clone());
        let (source, snapshot) = (source.clone(), snapshot.clone());
        blocking(move || {
            let _frozen = match image {
                Some(image) => Frozen::images(&[image])?,
                None => Frozen::default(),
            };
            local.create_snapshot(&key, &source, &snapshot)
        })
        .await
    }

    async fn delete_snapshot(&self, key: &Key) -> Result<()> {
        let (local, key) = (self.clone(), key.clone());
        blocking(move || local.delete_snapshot(&key)).await
    }
}

fn image_of(local: &LocalBackend, key: &str, record: &VolumeRecord) -> Option<PathBuf> {
    (record.layout == Layout::Image).then(|| volume_data_path(local.root(), key, &Layout::Image))
}
