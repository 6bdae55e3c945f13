//! Snapshot RPCs: a snapshot is a full copy of the volume's data kept beside the volumes.

use std::sync::Arc;

use csi_proto::v1::{self as csi, list_snapshots_response};

use super::{VolumeHandle, blocking, lookup_volume, page};
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::freeze::Frozen;
use crate::ids::{Key, Location, SnapshotId, VolumeId, require_id, validate_name};
use crate::local::volume_data_path;
use crate::record::{Layout, SnapshotRecord, now};

pub async fn create(
    driver: &Arc<Driver>,
    req: csi::CreateSnapshotRequest,
) -> Result<csi::Snapshot> {
    validate_name("name", &req.name)?;
    require_id("source_volume_id", &req.source_volume_id)?;
    let key = Key::for_snapshot(&req.name);
    let _guard = driver
        .inflight
        .claim(key.as_str(), &format!("snapshot {}", req.name))?;
    let source = lookup_volume(driver, &req.source_volume_id).await?;
    take(driver, &req.name, &source, "")
        .await
        .map(|r| r.to_csi())
}

/// Takes (or finds again) the snapshot `name` of `source`; `group` is the group
/// snapshot it belongs to, or empty. The caller holds the snapshot's in-flight claim.
pub(super) async fn take(
    driver: &Arc<Driver>,
    name: &str,
    source: &VolumeHandle,
    group: &str,
) -> Result<SnapshotRecord> {
    let key = Key::for_snapshot(name);
    let id = SnapshotId::new(key.clone(), source.id.location.clone())?;
    let source_id = source.id.to_string();
    if let Some(existing) = get_record(driver, &id).await? {
        if existing.source_volume_id != source_id || existing.group_snapshot_id != group {
            return Err(Error::AlreadyExists(format!(
                "snapshot {name} exists for another source volume {} or group",
                existing.source_volume_id
            )));
        }
        return Ok(existing);
    }
    let _source_guard = driver
        .inflight
        .claim(source.id.key.as_str(), &format!("volume {source_id}"))?;
    let (secs, nanos) = now();
    let record = SnapshotRecord {
        name: name.to_string(),
        snapshot_id: id.to_string(),
        source_volume_id: source_id,
        size_bytes: source.record.capacity_bytes,
        layout: source.record.layout.clone(),
        created_unix_secs: secs,
        created_nanos: nanos,
        group_snapshot_id: group.to_string(),
    };
    match &id.location {
        Location::Local { .. } => {
            let local = driver.local_for(&id.location)?.clone();
            let (volume, snapshot) = (source.record.clone(), record.clone());
            // A lone snapshot of a staged image volume: its ext4 is frozen, and so
            // flushed, for the copy; else what the pod wrote and the page cache still
            // holds would be missing from the copy. A group froze its members already.
            let image = (group.is_empty() && volume.layout == Layout::Image)
                .then(|| volume_data_path(local.root(), source.id.key.as_str(), &Layout::Image));
            blocking(move || {
                let _frozen = match image {
                    Some(image) => Frozen::images(&[image])?,
                    None => Frozen::default(),
                };
                local.create_snapshot(&key, &volume, &snapshot)
            })
            .await?;
        }
        Location::Nfs(export) => {
            driver
                .nfs
                .create_snapshot(export, &key, &source.record, &record)
                .await?
        }
    }
    Ok(record)
}

pub async fn delete(driver: &Arc<Driver>, req: csi::DeleteSnapshotRequest) -> Result<()> {
    let raw = require_id("snapshot_id", &req.snapshot_id)?;
    let Some(id) = SnapshotId::parse(raw) else {
        return Ok(());
    };
    let _guard = driver
        .inflight
        .claim(id.key.as_str(), &format!("snapshot {raw}"))?;
    if let Some(record) = get_record(driver, &id).await?
        && !record.group_snapshot_id.is_empty()
    {
        // A member goes with its group (DeleteVolumeGroupSnapshot), not on its own.
        return Err(Error::FailedPrecondition(format!(
            "snapshot {raw} belongs to group snapshot {}: delete the group",
            record.group_snapshot_id
        )));
    }
    remove(driver, &id).await
}

/// Removes a snapshot's data and record, whatever group it is in.
pub(super) async fn remove(driver: &Arc<Driver>, id: &SnapshotId) -> Result<()> {
    match &id.location {
        Location::Local { .. } => {
            let local = driver.local_for(&id.location)?.clone();
            let key = id.key.clone();
            blocking(move || local.delete_snapshot(&key)).await
        }
        Location::Nfs(export) => driver.nfs.delete_snapshot(export, &id.key).await,
    }
}

/// The snapshot's record, if it exists where its ID says.
pub async fn get_record(driver: &Arc<Driver>, id: &SnapshotId) -> Result<Option<SnapshotRecord>> {
    match &id.location {
        Location::Local { .. } => {
            let local = driver.local_for(&id.location)?.clone();
            let key = id.key.clone();
            blocking(move || local.get_snapshot(&key)).await
        }
        Location::Nfs(export) => driver.nfs.get_snapshot(export, &id.key).await,
    }
}

pub(super) async fn records_at(
    driver: &Arc<Driver>,
    location: &Location,
) -> Result<Vec<SnapshotRecord>> {
    match location {
        Location::Local { .. } => match driver.local_for(location) {
            Ok(local) => {
                let local = local.clone();
                blocking(move || local.list_snapshots()).await
            }
            Err(_) => Ok(Vec::new()),
        },
        Location::Nfs(export) => driver.nfs.list_snapshots(export).await,
    }
}

pub async fn list(
    driver: &Arc<Driver>,
    req: csi::ListSnapshotsRequest,
) -> Result<csi::ListSnapshotsResponse> {
    let mut records = if !req.snapshot_id.is_empty() {
        match SnapshotId::parse(&req.snapshot_id) {
            Some(id) => get_record(driver, &id)
                .await
                .unwrap_or(None)
                .into_iter()
                .collect(),
            None => Vec::new(),
        }
    } else if !req.source_volume_id.is_empty() {
        match VolumeId::parse(&req.source_volume_id) {
            Some(id) => records_at(driver, &id.location).await?,
            None => Vec::new(),
        }
    } else {
        let mut all = Vec::new();
        if let Some(local) = &driver.local {
            all.extend(
                records_at(
                    driver,
                    &Location::Local {
                        node: local.node().to_string(),
                    },
                )
                .await?,
            );
        }
        for export in driver.nfs.known_exports() {
            all.extend(driver.nfs.list_snapshots(&export).await?);
        }
        all
    };
    if !req.source_volume_id.is_empty() {
        records.retain(|r| r.source_volume_id == req.source_volume_id);
    }
    records.sort_by(|a, b| a.snapshot_id.cmp(&b.snapshot_id));
    let (page, next_token) = page(
        records,
        |r| r.snapshot_id.as_str(),
        req.max_entries,
        &req.starting_token,
    )?;
    let entries = page
        .iter()
        .map(|r| list_snapshots_response::Entry {
            snapshot: Some(r.to_csi()),
        })
        .collect();
    Ok(csi::ListSnapshotsResponse {
        entries,
        next_token,
    })
}

pub async fn get(driver: &Arc<Driver>, req: csi::GetSnapshotRequest) -> Result<csi::Snapshot> {
    let raw = require_id("snapshot_id", &req.snapshot_id)?;
    let not_found = || Error::NotFound(format!("snapshot {raw} does not exist"));
    let id = SnapshotId::parse(raw).ok_or_else(not_found)?;
    let record = get_record(driver, &id).await?.ok_or_else(not_found)?;
    Ok(record.to_csi())
}
