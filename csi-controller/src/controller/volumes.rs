//! Volume RPCs: create, delete, validate, list, capacity, get, expand.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use csi_proto::v1::{self as csi, validate_volume_capabilities_response};
use driver_contract::TOPOLOGY_NODE_KEY;

use super::{blocking, lookup_volume, page};
use crate::backend::{Backend, Fill};
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::listing::WireVolumes;
use crate::local::MIN_IMAGE_BYTES;
use crate::params::{BackendKind, LocalParams, NfsParams, VolumeParams, parse_mutable};
use crate::record::{ContentSource, Layout, VolumeRecord, now};
use driver_contract::ids::{Key, Location, SnapshotId, VolumeId, require_id, validate_name};
use driver_contract::request::{AccessType, CapabilityNeeds, Capacity, parse_capabilities};

/// Size of a volume created with no capacity range.
pub const DEFAULT_CAPACITY: i64 = 1 << 30;

/// A validated CreateVolume request.
struct NewVolume {
    name: String,
    needs: CapabilityNeeds,
    capacity: Capacity,
    parameters: BTreeMap<String, String>,
    source: Option<ContentSource>,
    topology: Option<csi::TopologyRequirement>,
    mutable_parameters: BTreeMap<String, String>,
}

/// CreateVolume (spec: idempotent by name: an existing volume the request admits is
/// returned, one it does not is AlreadyExists).
pub async fn create(driver: &Arc<Driver>, req: csi::CreateVolumeRequest) -> Result<csi::Volume> {
    validate_name("name", &req.name)?;
    let needs = parse_capabilities("volume_capabilities", &req.volume_capabilities)?;
    let capacity = Capacity::parse("capacity_range", req.capacity_range.as_ref())?;
    let params = VolumeParams::parse(&req.parameters, &req.name)?;
    let backend = match &params {
        VolumeParams::Local(_) => BackendKind::Local,
        VolumeParams::Nfs(_) => BackendKind::Nfs,
    };
    let mutable_parameters = parse_mutable(&req.mutable_parameters, backend)?;
    let new = NewVolume {
        name: req.name.clone(),
        needs,
        capacity,
        parameters: VolumeParams::canonical(&req.parameters),
        source: ContentSource::from_csi(req.volume_content_source.as_ref())?,
        topology: req.accessibility_requirements,
        mutable_parameters,
    };
    let key = Key::for_volume(&req.name);
    let _guard = driver
        .inflight
        .claim(key.as_str(), &format!("volume {}", req.name))?;
    let record = match params {
        VolumeParams::Local(local) => create_local(driver, key, new, local).await?,
        VolumeParams::Nfs(nfs) => create_nfs(driver, key, new, nfs).await?,
    };
    Ok(record.to_csi())
}

async fn create_local(
    driver: &Arc<Driver>,
    key: Key,
    new: NewVolume,
    params: LocalParams,
) -> Result<VolumeRecord> {
    let Some(local) = &driver.local else {
        return Err(Error::invalid(
            "parameters",
            "type local needs a controller started with --local-root on the volume's node",
        ));
    };
    if new.needs.multi_node {
        return Err(Error::invalid(
            "volume_capabilities",
            "a local volume is reachable from one node only",
        ));
    }
    check_topology(new.topology.as_ref(), local.node())?;
    let location = Location::Local {
        node: local.node().to_string(),
    };
    let id = VolumeId::new(key.clone(), location.clone())?;

    if let Some(existing) = Backend::volume(local, &key).await? {
        return compatible(existing, &new);
    }
    // The lease keeps the project id of a quota volume from a concurrent creation
    // until the record holds it. Memory only, as is the lookup above: no handoff to
    // the blocking pool.
    let (layout, _lease) = local.layout_for(
        &key,
        params.enforcement,
        new.needs.access_type,
        &new.needs.fs_type,
    )?;
    if layout == Layout::Image && !matches!(new.needs.fs_type.as_str(), "" | "ext4") {
        return Err(Error::invalid(
            "volume_capabilities",
            format!(
                "fs_type {:?} is not supported; image volumes are ext4",
                new.needs.fs_type
            ),
        ));
    }
    let fill = resolve_source(driver, new.source.as_ref(), &location).await?;
    // Quota limits are counted in the filesystem's blocks.
    let (minimum, granule) = match layout {
        Layout::Image => (MIN_IMAGE_BYTES, 4096),
        Layout::Block | Layout::Quota { .. } => (4096, 4096),
        _ => (1, 1),
    };
    let size = choose_size(&new.capacity, &fill, minimum, granule)?;
    if size > local.available_bytes()? {
        return Err(Error::NoSpace {
            node: local.node().to_string(),
            bytes: size,
        });
    }
    let context = BTreeMap::from([
        ("type".to_string(), "local".to_string()),
        ("node".to_string(), local.node().to_string()),
        ("layout".to_string(), layout.name().to_string()),
    ]);
    let record = new_record(
        &new,
        &id,
        size,
        layout,
        context,
        vec![BTreeMap::from([(
            TOPOLOGY_NODE_KEY.to_string(),
            local.node().to_string(),
        )])],
    );
    let backend = local.clone();
    let committed = record.clone();
    blocking(move || backend.create(&key, &committed, &fill)).await?;
    Ok(record)
}

async fn create_nfs(
    driver: &Arc<Driver>,
    key: Key,
    new: NewVolume,
    params: NfsParams,
) -> Result<VolumeRecord> {
    if new.needs.access_type == AccessType::Block {
        return Err(Error::invalid(
            "volume_capabilities",
            "NFS volumes cannot be block devices",
        ));
    }
    let location = Location::Nfs(params.export.clone());
    let id = VolumeId::new(key.clone(), location.clone())?;
    if let Some(existing) = driver.nfs.get(&params.export, &key).await? {
        return compatible(existing, &new);
    }
    let fill = resolve_source(driver, new.source.as_ref(), &location).await?;
    let size = fill
        .size()
        .map_or(new.capacity.required, |src| new.capacity.required.max(src));
    if !new.capacity.admits(size) {
        return Err(Error::SourceTooLarge {
            source_bytes: size,
            limit: new.capacity.limit,
        });
    }
    let mut context = BTreeMap::from([
        ("type".to_string(), "nfs".to_string()),
        ("server".to_string(), params.export.server()),
        ("share".to_string(), params.export.share.clone()),
        ("subDir".to_string(), params.sub_dir.join("/")),
    ]);
    if !params.mount_options.is_empty() {
        context.insert("mountOptions".to_string(), params.mount_options.clone());
    }
    let layout = Layout::Nfs {
        sub_dir: params.sub_dir.clone(),
        on_delete: params.on_delete,
        mount_options: params.mount_options.clone(),
    };
    let record = new_record(&new, &id, size, layout, context, Vec::new());
    driver
        .nfs
        .create(
            &params.export,
            &key,
            &record,
            params.mount_permissions,
            &fill,
        )
        .await?;
    Ok(record)
}

fn new_record(
    new: &NewVolume,
    id: &VolumeId,
    size: i64,
    layout: Layout,
    volume_context: BTreeMap<String, String>,
    accessible_topology: Vec<BTreeMap<String, String>>,
) -> VolumeRecord {
    VolumeRecord {
        name: new.name.clone(),
        volume_id: id.to_string(),
        capacity_bytes: size,
        parameters: new.parameters.clone(),
        access_type: new.needs.access_type,
        layout,
        content_source: new.source.clone(),
        volume_context,
        accessible_topology,
        created_unix_secs: now().0,
        mutable_parameters: new.mutable_parameters.clone(),
    }
}

/// A retried CreateVolume must ask for what exists; anything else is AlreadyExists.
fn compatible(existing: VolumeRecord, new: &NewVolume) -> Result<VolumeRecord> {
    let conflict = |what: &str| {
        Err(Error::NameTaken {
            kind: "volume",
            name: new.name.clone(),
            conflict: format!("with a different {what}"),
        })
    };
    if !new.capacity.admits(existing.capacity_bytes) {
        return conflict("capacity");
    }
    if existing.parameters != new.parameters {
        return conflict("parameter set");
    }
    if existing.access_type != new.needs.access_type {
        return conflict("access type");
    }
    if existing.content_source != new.source {
        return conflict("content source");
    }
    Ok(existing)
}

fn choose_size(capacity: &Capacity, fill: &Fill, minimum: i64, granule: i64) -> Result<i64> {
    let Some(src) = fill.size() else {
        return Ok(capacity.choose(DEFAULT_CAPACITY, minimum, granule)?);
    };
    if capacity.limit > 0 && src > capacity.limit {
        return Err(Error::SourceTooLarge {
            source_bytes: src,
            limit: capacity.limit,
        });
    }
    let required = capacity.required.max(src);
    let size = Capacity {
        required,
        limit: capacity.limit,
    }
    .choose(required, minimum, granule)?;
    Ok(size)
}

/// A local volume can only be placed on this node: the requisite topologies must allow it.
fn check_topology(requirement: Option<&csi::TopologyRequirement>, node: &str) -> Result<()> {
    let Some(req) = requirement else {
        return Ok(());
    };
    let admits = |t: &csi::Topology| t.segments.get(TOPOLOGY_NODE_KEY).is_none_or(|n| n == node);
    if req.requisite.is_empty() || req.requisite.iter().any(admits) {
        return Ok(());
    }
    Err(Error::TopologyUnreachable {
        node: node.to_string(),
    })
}

async fn resolve_source(
    driver: &Arc<Driver>,
    source: Option<&ContentSource>,
    location: &Location,
) -> Result<Fill> {
    let same_place = |other: &Location| {
        if other == location {
            Ok(())
        } else {
            Err(Error::invalid(
                "volume_content_source",
                "the source lives elsewhere than the new volume; copy across backends is not supported",
            ))
        }
    };
    match source {
        None => Ok(Fill::Empty),
        Some(ContentSource::Volume(id)) => {
            let handle = lookup_volume(driver, id).await.map_err(|e| match e {
                // Gone, or on a node this controller does not serve.
                Error::VolumeNotFound { .. } | Error::OtherNode { .. } => {
                    Error::SourceVolumeNotFound { id: id.clone() }
                }
                other => other,
            })?;
            same_place(&handle.id.location)?;
            Ok(Fill::Volume(handle.record))
        }
        Some(ContentSource::Snapshot(id)) => {
            let not_found = || Error::SourceSnapshotNotFound { id: id.clone() };
            let snap_id = SnapshotId::parse(id).ok_or_else(not_found)?;
            same_place(&snap_id.location)?;
            let record = driver
                .backend(&snap_id.location)?
                .snapshot(&snap_id.key)
                .await?
                .ok_or_else(not_found)?;
            Ok(Fill::Snapshot(record))
        }
    }
}

/// DeleteVolume (spec: a volume that does not exist is deleted, OK; one still
/// published is FailedPrecondition).
pub async fn delete(driver: &Arc<Driver>, req: csi::DeleteVolumeRequest) -> Result<()> {
    let raw = require_id("volume_id", &req.volume_id)?;
    // An ID this driver never issued names no volume: deleting it is done.
    let Some(id) = VolumeId::parse(raw) else {
        return Ok(());
    };
    let _guard = driver
        .inflight
        .claim(id.key.as_str(), &format!("volume {raw}"))?;
    if let Some(book) = &driver.attachments {
        let nodes = book.nodes(raw);
        if !nodes.is_empty() {
            return Err(Error::VolumeInUse {
                id: raw.to_string(),
                nodes,
            });
        }
    }
    driver.backend(&id.location)?.delete_volume(&id.key).await?;
    if let Some(book) = &driver.attachments {
        book.forget(raw)?;
    }
    Ok(())
}

/// ValidateVolumeCapabilities (spec: capabilities the volume cannot serve are an OK
/// answer without `confirmed`, not an error).
pub async fn validate(
    driver: &Arc<Driver>,
    req: csi::ValidateVolumeCapabilitiesRequest,
) -> Result<csi::ValidateVolumeCapabilitiesResponse> {
    require_id("volume_id", &req.volume_id)?;
    let needs = parse_capabilities("volume_capabilities", &req.volume_capabilities)?;
    let handle = lookup_volume(driver, &req.volume_id).await?;
    let record = &handle.record;
    let unsupported = if needs.access_type != record.access_type {
        Some("the access type differs from the volume's")
    } else if needs.multi_node && handle.backend.kind() == BackendKind::Local {
        Some("a local volume is reachable from one node only")
    } else if !req.parameters.is_empty()
        && VolumeParams::canonical(&req.parameters) != record.parameters
    {
        Some("the parameters differ from the volume's")
    } else {
        None
    };
    if let Some(message) = unsupported {
        return Ok(csi::ValidateVolumeCapabilitiesResponse {
            confirmed: None,
            message: message.to_string(),
        });
    }
    Ok(csi::ValidateVolumeCapabilitiesResponse {
        confirmed: Some(validate_volume_capabilities_response::Confirmed {
            volume_context: req.volume_context,
            volume_capabilities: req.volume_capabilities,
            parameters: req.parameters,
            mutable_parameters: HashMap::new(),
        }),
        message: String::new(),
    })
}

/// ListVolumes (spec: a starting_token this plugin did not issue is Aborted).
pub async fn list(
    driver: &Arc<Driver>,
    req: csi::ListVolumesRequest,
) -> Result<csi::ListVolumesResponse> {
    // Only the records that can be on this page: one more than asked after the token,
    // so a local page costs its size, not the number of volumes.
    let after = req
        .starting_token
        .strip_prefix("after:")
        .unwrap_or_default();
    let wanted = match req.max_entries {
        n if n > 0 => n.unsigned_abs() as usize + 1,
        _ => usize::MAX,
    };
    let mut found = WireVolumes::default();
    for backend in driver.backends() {
        backend.volumes_after(after, wanted, &mut found).await?;
    }
    let (page, next_token) = page(
        found.sorted(),
        |v| v.id,
        req.max_entries,
        &req.starting_token,
    )?;
    let mut response = csi::ListVolumesResponse {
        next_token,
        ..Default::default()
    };
    for volume in page {
        let published_node_ids = driver
            .attachments
            .as_ref()
            .map(|b| b.nodes(volume.id))
            .unwrap_or_default();
        volume.encode_entry(&published_node_ids, &mut response.encoded_entries);
    }
    Ok(response)
}

/// GetCapacity (spec: a topology or capability this plugin cannot serve has 0 bytes,
/// not an error).
pub async fn capacity(
    driver: &Arc<Driver>,
    req: csi::GetCapacityRequest,
) -> Result<csi::GetCapacityResponse> {
    let needs = if req.volume_capabilities.is_empty() {
        None
    } else {
        Some(parse_capabilities(
            "volume_capabilities",
            &req.volume_capabilities,
        )?)
    };
    let zero = csi::GetCapacityResponse {
        available_capacity: 0,
        maximum_volume_size: Some(0),
        minimum_volume_size: None,
    };
    match VolumeParams::parse(&req.parameters, "capacity-probe")? {
        VolumeParams::Local(_) => {
            let Some(local) = &driver.local else {
                return Ok(zero);
            };
            let elsewhere = req
                .accessible_topology
                .as_ref()
                .and_then(|t| t.segments.get(TOPOLOGY_NODE_KEY))
                .is_some_and(|n| n != local.node());
            if elsewhere || needs.is_some_and(|n| n.multi_node) {
                return Ok(zero);
            }
            // Image and quota volumes may fill up to their capacity: what they have not
            // written yet is promised, not free.
            let backend = local.clone();
            let reserved = blocking(move || backend.reserved_bytes()).await?;
            let available = (local.available_bytes()? - reserved).max(0);
            Ok(csi::GetCapacityResponse {
                available_capacity: available,
                maximum_volume_size: Some(available),
                minimum_volume_size: None,
            })
        }
        VolumeParams::Nfs(nfs) => {
            if needs.is_some_and(|n| n.access_type == AccessType::Block) {
                return Ok(zero);
            }
            let space = driver.nfs.space(&nfs.export).await?;
            let available = i64::try_from(space.available_bytes).unwrap_or(i64::MAX);
            Ok(csi::GetCapacityResponse {
                available_capacity: available,
                maximum_volume_size: Some(available),
                minimum_volume_size: None,
            })
        }
    }
}

/// ControllerGetVolume (spec: missing data is an abnormal volume_condition, not a
/// failed call).
pub async fn get(
    driver: &Arc<Driver>,
    req: csi::ControllerGetVolumeRequest,
) -> Result<csi::ControllerGetVolumeResponse> {
    require_id("volume_id", &req.volume_id)?;
    let handle = lookup_volume(driver, &req.volume_id).await?;
    let present = handle
        .backend
        .data_present(&handle.id.key, &handle.record)
        .await?;
    Ok(csi::ControllerGetVolumeResponse {
        volume: Some(handle.record.to_csi()),
        status: Some(csi::controller_get_volume_response::VolumeStatus {
            published_node_ids: driver
                .attachments
                .as_ref()
                .map(|b| b.nodes(&req.volume_id))
                .unwrap_or_default(),
            volume_condition: Some(csi::VolumeCondition {
                abnormal: !present,
                message: if present {
                    "volume data is present".into()
                } else {
                    "volume data is missing".into()
                },
            }),
        }),
    })
}

/// ControllerExpandVolume (spec: a size the volume already has is OK with its size;
/// a limit below it is OutOfRange).
pub async fn expand(
    driver: &Arc<Driver>,
    req: csi::ControllerExpandVolumeRequest,
) -> Result<csi::ControllerExpandVolumeResponse> {
    require_id("volume_id", &req.volume_id)?;
    if req.capacity_range.is_none() {
        return Err(Error::invalid("capacity_range", "is required"));
    }
    let capacity = Capacity::parse("capacity_range", req.capacity_range.as_ref())?;
    let handle = lookup_volume(driver, &req.volume_id).await?;
    let _guard = driver
        .inflight
        .claim(handle.id.key.as_str(), &format!("volume {}", req.volume_id))?;
    let record = &handle.record;
    if capacity.required <= record.capacity_bytes {
        if !capacity.admits(record.capacity_bytes) {
            return Err(Error::CannotShrink {
                capacity: record.capacity_bytes,
                limit: capacity.limit,
            });
        }
        return Ok(csi::ControllerExpandVolumeResponse {
            capacity_bytes: record.capacity_bytes,
            node_expansion_required: false,
        });
    }
    let (grown, node_expansion_required) = handle
        .backend
        .expand_volume(&handle.id.key, record, capacity)
        .await?;
    Ok(csi::ControllerExpandVolumeResponse {
        capacity_bytes: grown.capacity_bytes,
        node_expansion_required,
    })
}

/// ControllerModifyVolume: validates the mutable parameters for the volume's backend and
/// records them; they take effect at the next operation that reads them (DeleteVolume).
pub async fn modify(driver: &Arc<Driver>, req: csi::ControllerModifyVolumeRequest) -> Result<()> {
    require_id("volume_id", &req.volume_id)?;
    let handle = lookup_volume(driver, &req.volume_id).await?;
    let _guard = driver
        .inflight
        .claim(handle.id.key.as_str(), &format!("volume {}", req.volume_id))?;
    let changes = parse_mutable(&req.mutable_parameters, handle.backend.kind())?;
    let mut record = handle.record;
    if changes
        .iter()
        .all(|(k, v)| record.mutable_parameters.get(k) == Some(v))
    {
        return Ok(());
    }
    record.mutable_parameters.extend(changes);
    handle.backend.save_volume(&handle.id.key, &record).await
}
