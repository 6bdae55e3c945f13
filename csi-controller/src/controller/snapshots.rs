//! Snapshot RPCs: a snapshot is a full copy of the volume's data kept beside the volumes.

use std::sync::Arc;

use csi_proto::v1::{self as csi, list_snapshots_response};

use super::{blocking, lookup_volume, page};
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::ids::{Key, Location, SnapshotId, VolumeId, require_id, validate_name};
use crate::record::{SnapshotRecord, now};

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
    let id = SnapshotId::new(key.clone(), source.id.location.clone())?;
    if let Some(existing) = get_record(driver, &id).await? {
        if existing.source_volume_id != req.source_volume_id {
            return Err(Error::AlreadyExists(format!(
                "snapshot {} exists for another source volume {}",
                req.name, existing.source_volume_id
            )));
        }
        return Ok(existing.to_csi());
    }
    let _source_guard = driver.inflight.claim(
        source.id.key.as_str(),
        &format!("volume {}", req.source_volume_id),
    )?;
    let (secs, nanos) = now();
    let record = SnapshotRecord {
        name: req.name.clone(),
        snapshot_id: id.to_string(),
        source_volume_id: req.source_volume_id.clone(),
        size_bytes: source.record.capacity_bytes,
        layout: source.record.layout.clone(),
        created_unix_secs: secs,
        created_nanos: nanos,
    };
    match &id.location {
        Location::Local { .. } => {
            let local = driver.local_for(&id.location)?.clone();
            let (volume, snapshot) = (source.record.clone(), record.clone());
            blocking(move || local.create_snapshot(&key, &volume, &snapshot)).await?;
        }
        Location::Nfs(export) => {
            driver
                .nfs
                .create_snapshot(export, &key, &source.record, &record)
                .await?
        }
    }
    Ok(record.to_csi())
}

pub async fn delete(driver: &Arc<Driver>, req: csi::DeleteSnapshotRequest) -> Result<()> {
    let raw = require_id("snapshot_id", &req.snapshot_id)?;
    let Some(id) = SnapshotId::parse(raw) else {
        return Ok(());
    };
    let _guard = driver
        .inflight
        .claim(id.key.as_str(), &format!("snapshot {raw}"))?;
    match &id.location {
        Location::Local { .. } => {
            let local = driver.local_for(&id.location)?.clone();
            blocking(move || local.delete_snapshot(&id.key)).await
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

async fn records_at(driver: &Arc<Driver>, location: &Location) -> Result<Vec<SnapshotRecord>> {
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
