//! A CSI client over a unix socket, and builders for common requests.

use std::collections::HashMap;
use std::path::Path;

use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::group_controller_client::GroupControllerClient;
use csi_proto::v1::identity_client::IdentityClient;
use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::volume_capability::{
    AccessMode, AccessType, BlockVolume, MountVolume, access_mode::Mode,
};
use csi_proto::v1::{self as v1, CapacityRange, VolumeCapability};
use tonic::transport::Channel;

pub use csi_proto::v1::volume_capability::access_mode::Mode as AccessModeKind;

/// Clients for every CSI service on one endpoint.
#[derive(Clone)]
pub struct Csi {
    pub identity: IdentityClient<Channel>,
    pub controller: ControllerClient<Channel>,
    pub group: GroupControllerClient<Channel>,
    pub node: NodeClient<Channel>,
}

impl Csi {
    pub async fn connect(socket: &Path) -> Result<Self, tonic::transport::Error> {
        let channel = csi_proto::channel::connect(socket).await?;
        Ok(Self {
            identity: IdentityClient::new(channel.clone()),
            controller: ControllerClient::new(channel.clone()),
            group: GroupControllerClient::new(channel.clone()),
            node: NodeClient::new(channel),
        })
    }

    /// Creates a local volume of `bytes` for each name; returns their IDs.
    pub async fn create_volumes(&self, names: &[&str], bytes: i64) -> Vec<String> {
        let mut ids = Vec::with_capacity(names.len());
        for name in names {
            let volume = self
                .create(create_request(name, bytes, &[]))
                .await
                .unwrap_or_else(|e| panic!("create {name}: {e}"));
            ids.push(volume.volume_id);
        }
        ids
    }

    /// Takes the group snapshot `name` of `volumes`.
    pub async fn group_snapshot(
        &self,
        name: &str,
        volumes: &[&str],
    ) -> Result<v1::VolumeGroupSnapshot, tonic::Status> {
        let request = v1::CreateVolumeGroupSnapshotRequest {
            name: name.into(),
            source_volume_ids: volumes.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        };
        let response = self
            .group
            .clone()
            .create_volume_group_snapshot(request)
            .await?;
        response
            .into_inner()
            .group_snapshot
            .ok_or_else(|| tonic::Status::internal("no group snapshot in the response"))
    }

    pub async fn probe(&self) -> Result<bool, tonic::Status> {
        let resp = self.identity.clone().probe(v1::ProbeRequest {}).await?;
        Ok(resp.into_inner().ready.unwrap_or(true))
    }

    pub async fn create(&self, req: v1::CreateVolumeRequest) -> Result<v1::Volume, tonic::Status> {
        let resp = self.controller.clone().create_volume(req).await?;
        Ok(resp
            .into_inner()
            .volume
            .expect("CreateVolume returns a volume"))
    }

    pub async fn controller_publish(
        &self,
        request: v1::ControllerPublishVolumeRequest,
    ) -> Result<v1::ControllerPublishVolumeResponse, tonic::Status> {
        let response = self
            .controller
            .clone()
            .controller_publish_volume(request)
            .await?;
        Ok(response.into_inner())
    }

    pub async fn delete(&self, volume_id: &str) -> Result<(), tonic::Status> {
        self.controller
            .clone()
            .delete_volume(v1::DeleteVolumeRequest {
                volume_id: volume_id.into(),
                secrets: HashMap::new(),
            })
            .await
            .map(|_| ())
    }

    /// Every volume, following pagination.
    pub async fn list_all(&self, page_size: i32) -> Result<Vec<v1::Volume>, tonic::Status> {
        let mut volumes = Vec::new();
        let mut token = String::new();
        loop {
            let resp = self
                .controller
                .clone()
                .list_volumes(v1::ListVolumesRequest {
                    max_entries: page_size,
                    starting_token: token,
                })
                .await?
                .into_inner();
            volumes.extend(resp.entries.into_iter().filter_map(|e| e.volume));
            if resp.next_token.is_empty() {
                return Ok(volumes);
            }
            token = resp.next_token;
        }
    }

    pub async fn plugin_info(&self) -> Result<v1::GetPluginInfoResponse, tonic::Status> {
        let request = v1::GetPluginInfoRequest {};
        let response = self.identity.clone().get_plugin_info(request).await?;
        Ok(response.into_inner())
    }

    pub async fn plugin_capabilities(
        &self,
    ) -> Result<v1::GetPluginCapabilitiesResponse, tonic::Status> {
        let request = v1::GetPluginCapabilitiesRequest {};
        let response = self
            .identity
            .clone()
            .get_plugin_capabilities(request)
            .await?;
        Ok(response.into_inner())
    }

    pub async fn node_info(&self) -> Result<v1::NodeGetInfoResponse, tonic::Status> {
        let request = v1::NodeGetInfoRequest {};
        let response = self.node.clone().node_get_info(request).await?;
        Ok(response.into_inner())
    }

    /// One page of ListVolumes: at most `max_entries`, from `token` (`""`: the first).
    pub async fn list_page(
        &self,
        max_entries: i32,
        token: &str,
    ) -> Result<v1::ListVolumesResponse, tonic::Status> {
        let request = v1::ListVolumesRequest {
            max_entries,
            starting_token: token.into(),
        };
        let response = self.controller.clone().list_volumes(request).await?;
        Ok(response.into_inner())
    }

    pub async fn get_volume(
        &self,
        volume_id: &str,
    ) -> Result<v1::ControllerGetVolumeResponse, tonic::Status> {
        let request = v1::ControllerGetVolumeRequest {
            volume_id: volume_id.into(),
        };
        let response = self
            .controller
            .clone()
            .controller_get_volume(request)
            .await?;
        Ok(response.into_inner())
    }

    /// ControllerExpandVolume of `volume_id` to at least `bytes`.
    pub async fn controller_expand(
        &self,
        volume_id: &str,
        bytes: i64,
    ) -> Result<v1::ControllerExpandVolumeResponse, tonic::Status> {
        let request = v1::ControllerExpandVolumeRequest {
            volume_id: volume_id.into(),
            capacity_range: at_least(bytes),
            ..Default::default()
        };
        let mut controller = self.controller.clone();
        let response = controller.controller_expand_volume(request).await?;
        Ok(response.into_inner())
    }

    pub async fn snapshot(&self, name: &str, source: &str) -> Result<v1::Snapshot, tonic::Status> {
        let resp = self
            .controller
            .clone()
            .create_snapshot(snapshot_request(name, source))
            .await?;
        Ok(resp
            .into_inner()
            .snapshot
            .expect("CreateSnapshot returns a snapshot"))
    }
}

/// A capacity range of at least `bytes`, no limit.
pub fn at_least(bytes: i64) -> Option<CapacityRange> {
    Some(CapacityRange {
        required_bytes: bytes,
        limit_bytes: 0,
    })
}

pub fn capability(block: bool, mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume::default())
        }),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

pub fn mount_rwo() -> VolumeCapability {
    capability(false, Mode::SingleNodeWriter)
}

/// A mount capability whose volume_mount_group is `group` (fsGroup delegated to the driver).
pub fn mount_for_group(group: &str) -> VolumeCapability {
    let mut capability = mount_rwo();
    if let Some(AccessType::Mount(mount)) = &mut capability.access_type {
        mount.volume_mount_group = group.into();
    }
    capability
}

/// A string map (parameters, volume context) from pairs.
pub fn string_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A CreateVolume request with one RWO mount capability.
pub fn create_request(
    name: &str,
    required: i64,
    params: &[(&str, &str)],
) -> v1::CreateVolumeRequest {
    v1::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: required,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![mount_rwo()],
        parameters: string_map(params),
        ..Default::default()
    }
}

/// A CreateVolume request of a local volume whose capacity `enforcement` (image,
/// quota, auto, ...) is named.
pub fn enforced(name: &str, required: i64, enforcement: &str) -> v1::CreateVolumeRequest {
    create_request(name, required, &[("capacityEnforcement", enforcement)])
}

/// A CreateVolume request for a subdirectory of the NFS export `server:share`, with
/// more parameters after `type`, `server` and `share`.
pub fn nfs_create_request(
    name: &str,
    required: i64,
    (server, share): (&str, &str),
    extra: &[(&str, &str)],
) -> v1::CreateVolumeRequest {
    let mut params = vec![("type", "nfs"), ("server", server), ("share", share)];
    params.extend_from_slice(extra);
    create_request(name, required, &params)
}

/// NodePublishVolume of `volume` at `target` with an RWO mount capability and the
/// volume's context; unstaged (set `staging_target_path` for a staged kind).
pub fn publish_request(volume: &v1::Volume, target: &Path) -> v1::NodePublishVolumeRequest {
    v1::NodePublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        target_path: target.display().to_string(),
        volume_capability: Some(mount_rwo()),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    }
}

/// [`publish_request`] of a volume staged at `staging`.
pub fn publish_staged_request(
    volume: &v1::Volume,
    staging: &Path,
    target: &Path,
) -> v1::NodePublishVolumeRequest {
    v1::NodePublishVolumeRequest {
        staging_target_path: staging.display().to_string(),
        ..publish_request(volume, target)
    }
}

/// NodeStageVolume of `volume` at `staging` with `capability` and the volume's context.
pub fn stage_request(
    volume: &v1::Volume,
    staging: &Path,
    capability: VolumeCapability,
) -> v1::NodeStageVolumeRequest {
    v1::NodeStageVolumeRequest {
        volume_id: volume.volume_id.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(capability),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    }
}

/// ControllerPublishVolume of `volume_id` to `node` with an RWO mount capability.
pub fn controller_publish_request(
    volume_id: &str,
    node: &str,
) -> v1::ControllerPublishVolumeRequest {
    v1::ControllerPublishVolumeRequest {
        volume_id: volume_id.into(),
        node_id: node.into(),
        volume_capability: Some(mount_rwo()),
        ..Default::default()
    }
}

/// A CreateSnapshot request of `source` named `name`.
pub fn snapshot_request(name: &str, source: &str) -> v1::CreateSnapshotRequest {
    v1::CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: source.into(),
        ..Default::default()
    }
}

pub fn from_volume(id: &str) -> Option<v1::VolumeContentSource> {
    Some(v1::VolumeContentSource {
        r#type: Some(v1::volume_content_source::Type::Volume(
            v1::volume_content_source::VolumeSource {
                volume_id: id.into(),
            },
        )),
    })
}

pub fn from_snapshot(id: &str) -> Option<v1::VolumeContentSource> {
    Some(v1::VolumeContentSource {
        r#type: Some(v1::volume_content_source::Type::Snapshot(
            v1::volume_content_source::SnapshotSource {
                snapshot_id: id.into(),
            },
        )),
    })
}

/// Asserts a gRPC failure with `code` whose message mentions `needle`.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    needle: &str,
) {
    match result {
        Ok(v) => panic!("expected {code:?} ({needle}), got Ok({v:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "message: {}", status.message());
            assert!(
                status.message().contains(needle),
                "{:?} does not mention {needle:?}",
                status.message()
            );
        }
    }
}

/// Node calls with the fields the tests vary; everything else defaulted.
impl Csi {
    pub async fn node_stage(
        &self,
        volume: &v1::Volume,
        staging: &Path,
        capability: VolumeCapability,
    ) -> Result<(), tonic::Status> {
        let request = stage_request(volume, staging, capability);
        self.node.clone().node_stage_volume(request).await.map(drop)
    }

    pub async fn node_stats(
        &self,
        volume_id: &str,
        path: &Path,
    ) -> Result<v1::NodeGetVolumeStatsResponse, tonic::Status> {
        let request = v1::NodeGetVolumeStatsRequest {
            volume_id: volume_id.into(),
            volume_path: path.display().to_string(),
            ..Default::default()
        };
        let response = self.node.clone().node_get_volume_stats(request).await?;
        Ok(response.into_inner())
    }

    pub async fn node_unstage(&self, volume_id: &str, staging: &Path) -> Result<(), tonic::Status> {
        let request = v1::NodeUnstageVolumeRequest {
            volume_id: volume_id.into(),
            staging_target_path: staging.display().to_string(),
        };
        self.node
            .clone()
            .node_unstage_volume(request)
            .await
            .map(drop)
    }

    pub async fn node_publish(
        &self,
        request: v1::NodePublishVolumeRequest,
    ) -> Result<(), tonic::Status> {
        self.node
            .clone()
            .node_publish_volume(request)
            .await
            .map(drop)
    }

    pub async fn node_unpublish(
        &self,
        volume_id: &str,
        target: &Path,
    ) -> Result<(), tonic::Status> {
        let request = v1::NodeUnpublishVolumeRequest {
            volume_id: volume_id.into(),
            target_path: target.display().to_string(),
        };
        self.node
            .clone()
            .node_unpublish_volume(request)
            .await
            .map(drop)
    }

    /// NodeExpandVolume of `volume_id` mounted at `path` to at least `bytes`.
    pub async fn node_expand(
        &self,
        volume_id: &str,
        path: &Path,
        bytes: i64,
    ) -> Result<v1::NodeExpandVolumeResponse, tonic::Status> {
        let request = v1::NodeExpandVolumeRequest {
            volume_id: volume_id.into(),
            volume_path: path.display().to_string(),
            capacity_range: at_least(bytes),
            ..Default::default()
        };
        let response = self.node.clone().node_expand_volume(request).await?;
        Ok(response.into_inner())
    }

    /// A whole small lifecycle without staging: CreateVolume of `name` (1 MiB),
    /// NodePublish at `target`, NodeUnpublish, DeleteVolume; panics naming the step
    /// that failed.
    pub async fn small_lifecycle(&self, name: &str, target: &Path) {
        let volume = self
            .create(create_request(name, 1 << 20, &[]))
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        self.node_publish(publish_request(&volume, target))
            .await
            .unwrap_or_else(|e| panic!("publish {name}: {e}"));
        self.node_unpublish(&volume.volume_id, target)
            .await
            .unwrap_or_else(|e| panic!("unpublish {name}: {e}"));
        self.delete(&volume.volume_id)
            .await
            .unwrap_or_else(|e| panic!("delete {name}: {e}"));
    }

    /// Takes a staged volume down as kubelet does: NodeUnpublish at each of `targets`,
    /// then NodeUnstage at `staging`; panics naming the step that failed.
    pub async fn release(&self, volume_id: &str, targets: &[&Path], staging: &Path) {
        self.release_times(1, volume_id, targets, staging).await;
    }

    /// [`release`](Self::release) with every step called twice: the second finds it
    /// done and must succeed too (CSI's idempotency).
    pub async fn release_twice(&self, volume_id: &str, targets: &[&Path], staging: &Path) {
        self.release_times(2, volume_id, targets, staging).await;
    }

    async fn release_times(
        &self,
        times: usize,
        volume_id: &str,
        targets: &[&Path],
        staging: &Path,
    ) {
        for target in targets {
            for call in 1..=times {
                self.node_unpublish(volume_id, target)
                    .await
                    .unwrap_or_else(|e| panic!("unpublish {target:?} (call {call}): {e}"));
            }
        }
        for call in 1..=times {
            self.node_unstage(volume_id, staging)
                .await
                .unwrap_or_else(|e| panic!("unstage {staging:?} (call {call}): {e}"));
        }
    }
}
