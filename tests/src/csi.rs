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

    pub async fn snapshot(&self, name: &str, source: &str) -> Result<v1::Snapshot, tonic::Status> {
        let resp = self
            .controller
            .clone()
            .create_snapshot(v1::CreateSnapshotRequest {
                source_volume_id: source.into(),
                name: name.into(),
                ..Default::default()
            })
            .await?;
        Ok(resp
            .into_inner()
            .snapshot
            .expect("CreateSnapshot returns a snapshot"))
    }
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
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
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
        let request = v1::NodeStageVolumeRequest {
            volume_id: volume.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(capability),
            volume_context: volume.volume_context.clone(),
            ..Default::default()
        };
        self.node.clone().node_stage_volume(request).await.map(drop)
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
}
