//! Snapshot RPCs: a snapshot is a full copy of the volume's data kept beside the volumes.

use std::sync::Arc;

use csi_proto::v1::{self as csi, list_snapshots_response};

use super::{VolumeHandle, lookup_volume, page};
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::record::{SnapshotRecord, now};
use driver_contract::ids::{Key, Location, SnapshotId, VolumeId, require_id, validate_name};

/// CreateSnapshot (spec: idempotent by name; the name taken for another source is
/// AlreadyExists).
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
    source: &VolumeHandle<'_>,
    group: &str,
) -> Result<SnapshotRecord> {
    let key = Key::for_snapshot(name);
    let id = SnapshotId::new(key.clone(), source.id.location.clone())?;
    let source_id = source.id.to_string();
    if let Some(existing) = source.backend.snapshot(&key).await? {
        if existing.source_volume_id != source_id || existing.group_snapshot_id != group {
            return Err(Error::NameTaken {
                kind: "snapshot",
                name: name.to_string(),
                conflict: format!(
                    "for another source volume {} or group",
                    existing.source_volume_id
                ),
            });
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
    // A group froze its members' filesystems before the first copy.
    let freeze = group.is_empty();
    source
        .backend
        .create_snapshot(&key, &source.record, &record, freeze)
        .await?;
    Ok(record)
}

/// DeleteSnapshot (spec: a snapshot that does not exist is deleted, OK).
pub async fn delete(driver: &Arc<Driver>, req: csi::DeleteSnapshotRequest) -> Result<()> {
    let raw = require_id("snapshot_id", &req.snapshot_id)?;
    let Some(id) = SnapshotId::parse(raw) else {
        return Ok(());
    };
    let _guard = driver
        .inflight
        .claim(id.key.as_str(), &format!("snapshot {raw}"))?;
    let backend = driver.backend(&id.location)?;
    if let Some(record) = backend.snapshot(&id.key).await?
        && !record.group_snapshot_id.is_empty()
    {
        // A member goes with its group (DeleteVolumeGroupSnapshot), not on its own.
        return Err(Error::SnapshotInGroup {
            id: raw.to_string(),
            group: record.group_snapshot_id,
        });
    }
    backend.delete_snapshot(&id.key).await
}

/// The snapshot's record, if it exists where its ID says.
async fn get_record(driver: &Driver, id: &SnapshotId) -> Result<Option<SnapshotRecord>> {
    driver.backend(&id.location)?.snapshot(&id.key).await
}

/// The snapshots at `location`; none when it is another node's local root.
pub(super) async fn records_at(
    driver: &Driver,
    location: &Location,
) -> Result<Vec<SnapshotRecord>> {
    match driver.backend(location) {
        Ok(backend) => backend.snapshots().await,
        // Only a local location can fail to resolve: another node's volumes, of which
        // this controller has no snapshots to list.
        Err(_) => Ok(Vec::new()),
    }
}

/// ListSnapshots (spec: an ID that names no snapshot lists nothing, not NotFound).
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
        for backend in driver.backends() {
            all.extend(backend.snapshots().await?);
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

/// GetSnapshot (spec: NotFound for an ID that names no snapshot).
pub async fn get(driver: &Arc<Driver>, req: csi::GetSnapshotRequest) -> Result<csi::Snapshot> {
    let raw = require_id("snapshot_id", &req.snapshot_id)?;
    let not_found = || Error::SnapshotNotFound {
        id: raw.to_string(),
    };
    let id = SnapshotId::parse(raw).ok_or_else(not_found)?;
    let record = get_record(driver, &id).await?.ok_or_else(not_found)?;
    Ok(record.to_csi())
}
