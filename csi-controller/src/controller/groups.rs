//! The GroupController service: a volume group snapshot is one snapshot of each member
//! volume, taken at one point. Members live where their volumes do (one node's local
//! root, or one NFS export) and name the group in their records; the filesystems of
//! mounted image volumes are frozen from before the first copy until after the last.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use csi_proto::v1::group_controller_server::GroupController;
use csi_proto::v1::group_controller_service_capability::{self as capability, rpc::Type as Cap};
use csi_proto::v1::{self as csi, GroupControllerServiceCapability};
use tonic::{Request, Response, Status};

use super::snapshots::{records_at, take};
use super::{VolumeHandle, blocking, lookup_volume, rpc};
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::freeze::Frozen;
use crate::record::SnapshotRecord;
use driver_contract::ids::{
    GroupSnapshotId, Key, Location, MAX_ID_LEN, SnapshotId, require_id, validate_name,
};

/// The CSI GroupController service over a [`Driver`].
#[derive(Debug, Clone)]
pub struct GroupControllerService {
    driver: Arc<Driver>,
}

impl GroupControllerService {
    /// The service for `driver`.
    pub fn new(driver: Arc<Driver>) -> Self {
        Self { driver }
    }
}

/// The member snapshot of `volume_id` in the group `name`: deterministic, so a retried
/// create finds what an interrupted one made.
fn member_name(name: &str, volume_id: &str) -> String {
    format!("{name}/{volume_id}")
}

/// CreateVolumeGroupSnapshot (spec: idempotent by name; the name taken with other
/// source volumes is AlreadyExists).
async fn create(
    driver: &Arc<Driver>,
    req: csi::CreateVolumeGroupSnapshotRequest,
) -> Result<csi::VolumeGroupSnapshot> {
    validate_name("name", &req.name)?;
    let volumes = source_volumes(driver, &req.source_volume_ids).await?;
    let id = GroupSnapshotId {
        key: Key::for_group_snapshot(&req.name),
        location: shared_location(&volumes)?,
    };
    if id.to_string().len() > MAX_ID_LEN {
        return Err(Error::invalid(
            "source_volume_ids",
            format!("the group snapshot ID would be longer than {MAX_ID_LEN} bytes"),
        ));
    }
    let _guard = driver
        .inflight
        .claim(id.key.as_str(), &format!("group snapshot {}", req.name))?;
    let existing = members(driver, &id).await?;
    if !existing.is_empty() {
        let asked: BTreeSet<&str> = req.source_volume_ids.iter().map(String::as_str).collect();
        let have: BTreeSet<&str> = existing
            .iter()
            .map(|r| r.source_volume_id.as_str())
            .collect();
        if asked != have {
            return Err(Error::NameTaken {
                kind: "group snapshot",
                name: req.name,
                conflict: "with other source volumes".to_string(),
            });
        }
        return Ok(group(&id, &existing));
    }
    let images = mounted_image_candidates(&volumes);
    let frozen = blocking(move || Frozen::images(&images)).await?;
    tracing::debug!(group = %id, frozen = frozen.count(), "taking group snapshot");
    let taken = take_members(driver, &req.name, &id, &volumes).await;
    drop(frozen);
    let records = taken?;
    Ok(group(&id, &records))
}

/// Takes every member; if one fails, removes those already taken, so no half group
/// is left behind.
async fn take_members(
    driver: &Arc<Driver>,
    name: &str,
    id: &GroupSnapshotId,
    volumes: &[VolumeHandle<'_>],
) -> Result<Vec<SnapshotRecord>> {
    let group_id = id.to_string();
    let mut records = Vec::with_capacity(volumes.len());
    for volume in volumes {
        let member = member_name(name, &volume.id.to_string());
        let result = async {
            let _member = driver.inflight.claim(
                Key::for_snapshot(&member).as_str(),
                &format!("snapshot {member}"),
            )?;
            take(driver, &member, volume, &group_id).await
        }
        .await;
        match result {
            Ok(record) => records.push(record),
            Err(e) => {
                for (taken, volume) in records.iter().zip(volumes) {
                    let Some(snapshot) = SnapshotId::parse(&taken.snapshot_id) else {
                        continue;
                    };
                    if let Err(undo) = volume.backend.delete_snapshot(&snapshot.key).await {
                        tracing::warn!(snapshot = %taken.snapshot_id, error = %undo, "member of a failed group snapshot left behind");
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(records)
}

async fn source_volumes<'a>(driver: &'a Driver, ids: &[String]) -> Result<Vec<VolumeHandle<'a>>> {
    if ids.is_empty() {
        return Err(Error::invalid("source_volume_ids", "is required"));
    }
    let distinct: BTreeSet<&String> = ids.iter().collect();
    if distinct.len() != ids.len() {
        return Err(Error::invalid(
            "source_volume_ids",
            "names a volume more than once",
        ));
    }
    let mut volumes = Vec::with_capacity(ids.len());
    for raw in ids {
        require_id("source_volume_ids", raw)?;
        volumes.push(lookup_volume(driver, raw).await?);
    }
    Ok(volumes)
}

/// The one location every member shares: a group is taken where its data is.
fn shared_location(volumes: &[VolumeHandle]) -> Result<Location> {
    let first = &volumes
        .first()
        .ok_or_else(|| Error::invalid("source_volume_ids", "is required"))?
        .id
        .location;
    if volumes.iter().any(|v| v.id.location != *first) {
        return Err(Error::invalid(
            "source_volume_ids",
            "volumes on different nodes or NFS exports cannot be snapshotted as one group",
        ));
    }
    Ok(first.clone())
}

/// The image files of the group's local image volumes: the ones a freeze can hold.
fn mounted_image_candidates(volumes: &[VolumeHandle<'_>]) -> Vec<PathBuf> {
    volumes
        .iter()
        .filter_map(|v| v.backend.freezable_image(&v.id.key, &v.record))
        .collect()
}

async fn members(driver: &Arc<Driver>, id: &GroupSnapshotId) -> Result<Vec<SnapshotRecord>> {
    let group_id = id.to_string();
    let mut records = records_at(driver, &id.location).await?;
    records.retain(|r| r.group_snapshot_id == group_id);
    records.sort_by(|a, b| a.snapshot_id.cmp(&b.snapshot_id));
    Ok(records)
}

fn group(id: &GroupSnapshotId, records: &[SnapshotRecord]) -> csi::VolumeGroupSnapshot {
    let mut snapshots: Vec<csi::Snapshot> = records.iter().map(SnapshotRecord::to_csi).collect();
    // The same order however the group was found: by snapshot ID.
    snapshots.sort_by(|a, b| a.snapshot_id.cmp(&b.snapshot_id));
    let creation_time = snapshots
        .iter()
        .filter_map(|s| s.creation_time)
        .min_by_key(|t| (t.seconds, t.nanos));
    csi::VolumeGroupSnapshot {
        group_snapshot_id: id.to_string(),
        snapshots,
        creation_time,
        ready_to_use: true,
    }
}

/// The spec's "snapshot list mismatch": when the caller names the members, they must
/// be exactly the group's.
fn check_members(asked: &[String], records: &[SnapshotRecord]) -> Result<()> {
    if asked.is_empty() {
        return Ok(());
    }
    let asked: BTreeSet<&str> = asked.iter().map(String::as_str).collect();
    let have: BTreeSet<&str> = records.iter().map(|r| r.snapshot_id.as_str()).collect();
    if asked != have {
        return Err(Error::invalid(
            "snapshot_ids",
            "do not match the group snapshot's members",
        ));
    }
    Ok(())
}

/// GetVolumeGroupSnapshot (spec: snapshot_ids, when given, must be the group's
/// members, else InvalidArgument).
async fn get(
    driver: &Arc<Driver>,
    req: csi::GetVolumeGroupSnapshotRequest,
) -> Result<csi::VolumeGroupSnapshot> {
    let raw = require_id("group_snapshot_id", &req.group_snapshot_id)?;
    let not_found = || Error::GroupSnapshotNotFound {
        id: raw.to_string(),
    };
    let id = GroupSnapshotId::parse(raw).ok_or_else(not_found)?;
    let records = members(driver, &id).await?;
    if records.is_empty() {
        return Err(not_found());
    }
    check_members(&req.snapshot_ids, &records)?;
    Ok(group(&id, &records))
}

/// DeleteVolumeGroupSnapshot (spec: a group that does not exist is deleted, OK).
async fn delete(driver: &Arc<Driver>, req: csi::DeleteVolumeGroupSnapshotRequest) -> Result<()> {
    let raw = require_id("group_snapshot_id", &req.group_snapshot_id)?;
    // An ID this driver never issued names no group: deleting it is done.
    let Some(id) = GroupSnapshotId::parse(raw) else {
        return Ok(());
    };
    let _guard = driver
        .inflight
        .claim(id.key.as_str(), &format!("group snapshot {raw}"))?;
    let records = members(driver, &id).await?;
    check_members(&req.snapshot_ids, &records)?;
    if records.is_empty() {
        return Ok(());
    }
    let backend = driver.backend(&id.location)?;
    for record in &records {
        if let Some(snapshot) = SnapshotId::parse(&record.snapshot_id) {
            backend.delete_snapshot(&snapshot.key).await?;
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl GroupController for GroupControllerService {
    async fn group_controller_get_capabilities(
        &self,
        _: Request<csi::GroupControllerGetCapabilitiesRequest>,
    ) -> Result<Response<csi::GroupControllerGetCapabilitiesResponse>, Status> {
        let rpc = capability::Rpc {
            r#type: Cap::CreateDeleteGetVolumeGroupSnapshot as i32,
        };
        Ok(Response::new(csi::GroupControllerGetCapabilitiesResponse {
            capabilities: vec![GroupControllerServiceCapability {
                r#type: Some(capability::Type::Rpc(rpc)),
            }],
        }))
    }

    async fn create_volume_group_snapshot(
        &self,
        request: Request<csi::CreateVolumeGroupSnapshotRequest>,
    ) -> Result<Response<csi::CreateVolumeGroupSnapshotResponse>, Status> {
        let req = request.into_inner();
        let name = req.name.clone();
        rpc("CreateVolumeGroupSnapshot", &name, async {
            Ok(csi::CreateVolumeGroupSnapshotResponse {
                group_snapshot: Some(create(&self.driver, req).await?),
            })
        })
        .await
    }

    async fn delete_volume_group_snapshot(
        &self,
        request: Request<csi::DeleteVolumeGroupSnapshotRequest>,
    ) -> Result<Response<csi::DeleteVolumeGroupSnapshotResponse>, Status> {
        let req = request.into_inner();
        let id = req.group_snapshot_id.clone();
        rpc("DeleteVolumeGroupSnapshot", &id, async {
            delete(&self.driver, req)
                .await
                .map(|()| csi::DeleteVolumeGroupSnapshotResponse {})
        })
        .await
    }

    async fn get_volume_group_snapshot(
        &self,
        request: Request<csi::GetVolumeGroupSnapshotRequest>,
    ) -> Result<Response<csi::GetVolumeGroupSnapshotResponse>, Status> {
        let req = request.into_inner();
        let id = req.group_snapshot_id.clone();
        rpc("GetVolumeGroupSnapshot", &id, async {
            Ok(csi::GetVolumeGroupSnapshotResponse {
                group_snapshot: Some(get(&self.driver, req).await?),
            })
        })
        .await
    }
}
