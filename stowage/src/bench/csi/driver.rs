//! What a CSI driver offers, learnt from its capabilities, and one volume's
//! lifecycle through it, every call timed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::controller_service_capability::rpc::Type as ControllerCap;
use csi_proto::v1::identity_client::IdentityClient;
use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::node_service_capability::rpc::Type as NodeCap;
use csi_proto::v1::plugin_capability::{self, service::Type as ServiceType};
use csi_proto::v1::volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode};
use csi_proto::v1::volume_content_source::{Type as SourceType, VolumeSource};
use csi_proto::v1::{
    self as csi, CapacityRange, TopologyRequirement, VolumeCapability, VolumeContentSource,
};
use tonic::Status;
use tonic::transport::Channel;

use super::stats::{Rpc, Stats};
use crate::capabilities::{controller_rpcs, node_rpcs};

/// The two kinds of lifecycle the benchmark drives.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum VolumeType {
    /// CreateVolume, stage (if offered), publish, unpublish, unstage, DeleteVolume.
    Local,
    /// A CSI ephemeral inline volume: NodePublishVolume and NodeUnpublishVolume only.
    Ephemeral,
}

/// A driver's endpoints and what its capabilities say the lifecycle must call.
#[derive(Clone)]
pub struct Driver {
    controller: ControllerClient<Channel>,
    node: NodeClient<Channel>,
    node_id: String,
    topology: Option<TopologyRequirement>,
    stage: bool,
    controller_publish: bool,
}

/// What every lifecycle of a run shares.
pub struct Workload {
    pub kind: VolumeType,
    pub parameters: HashMap<String, String>,
    pub capacity_bytes: i64,
    /// Holds the staging and target paths; created per run, removed after.
    pub dir: PathBuf,
    /// Distinguishes this run's volume names from any other's.
    pub run: String,
    /// A volume every CreateVolume clones, when set.
    pub source: Option<String>,
}

impl Driver {
    /// Asks the driver what it offers. A controller is only needed for `Local`.
    pub async fn discover(
        controller: Channel,
        node: Channel,
        kind: VolumeType,
    ) -> Result<Self, String> {
        let plugin = IdentityClient::new(controller.clone())
            .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
            .await
            .map_err(|e| format!("GetPluginCapabilities: {}", e.message()))?
            .into_inner();
        let services: Vec<i32> = plugin
            .capabilities
            .iter()
            .filter_map(|c| match &c.r#type {
                Some(plugin_capability::Type::Service(s)) => Some(s.r#type),
                _ => None,
            })
            .collect();
        let mut node_client = NodeClient::new(node);
        let node_caps = node_rpcs(&mut node_client)
            .await
            .map_err(|e| e.to_string())?;
        let info = node_client
            .node_get_info(csi::NodeGetInfoRequest {})
            .await
            .map_err(|e| format!("NodeGetInfo: {}", e.message()))?
            .into_inner();
        let mut controller_client = ControllerClient::new(controller);
        let controller_caps = if services.contains(&(ServiceType::ControllerService as i32)) {
            controller_rpcs(&mut controller_client)
                .await
                .map_err(|e| e.to_string())?
        } else {
            Vec::new()
        };
        if matches!(kind, VolumeType::Local)
            && !controller_caps.contains(&(ControllerCap::CreateDeleteVolume as i32))
        {
            return Err(
                "the controller endpoint does not offer CREATE_DELETE_VOLUME; try --type ephemeral"
                    .into(),
            );
        }
        let accessibility =
            services.contains(&(ServiceType::VolumeAccessibilityConstraints as i32));
        let topology = info
            .accessible_topology
            .filter(|_| accessibility)
            .map(|segments| TopologyRequirement {
                requisite: vec![segments.clone()],
                preferred: vec![segments],
            });
        Ok(Self {
            controller: controller_client,
            node: node_client,
            node_id: info.node_id,
            topology,
            stage: node_caps.contains(&(NodeCap::StageUnstageVolume as i32)),
            controller_publish: controller_caps
                .contains(&(ControllerCap::PublishUnpublishVolume as i32)),
        })
    }

    /// One lifecycle, numbered `index`: every call is timed into `stats`.
    /// After a failure the steps already taken are undone, so nothing is left behind.
    pub async fn lifecycle(&self, workload: &Workload, index: usize, stats: &mut Stats) {
        let started = Instant::now();
        let ok = match workload.kind {
            VolumeType::Local => self.persistent(workload, index, stats).await,
            VolumeType::Ephemeral => self.ephemeral(workload, index, stats).await,
        };
        stats.lifecycles.record(started.elapsed(), ok);
    }

    async fn persistent(&self, workload: &Workload, index: usize, stats: &mut Stats) -> bool {
        let name = format!("bench-{}-{index}", workload.run);
        let mut controller = self.controller.clone();
        let create = csi::CreateVolumeRequest {
            name,
            capacity_range: Some(CapacityRange {
                required_bytes: workload.capacity_bytes,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![mount_capability()],
            parameters: workload.parameters.clone(),
            accessibility_requirements: self.topology.clone(),
            volume_content_source: workload.source.as_ref().map(|id| VolumeContentSource {
                r#type: Some(SourceType::Volume(VolumeSource {
                    volume_id: id.clone(),
                })),
            }),
            ..Default::default()
        };
        let Some(volume) = timed(stats, Rpc::CreateVolume, controller.create_volume(create))
            .await
            .and_then(|r| r.volume)
        else {
            return false;
        };
        let attached = self.attach(&volume, stats).await;
        let ok = match &attached {
            Some(publish_context) => {
                self.mount(workload, index, &volume, publish_context, stats)
                    .await
            }
            None => false,
        };
        let detached = attached.is_none() || self.detach(&volume.volume_id, stats).await;
        let delete = csi::DeleteVolumeRequest {
            volume_id: volume.volume_id,
            secrets: HashMap::new(),
        };
        let deleted = timed(stats, Rpc::DeleteVolume, controller.delete_volume(delete))
            .await
            .is_some();
        ok && detached && deleted
    }

    /// ControllerPublishVolume when the driver wants it; the publish context either way.
    async fn attach(
        &self,
        volume: &csi::Volume,
        stats: &mut Stats,
    ) -> Option<HashMap<String, String>> {
        if !self.controller_publish {
            return Some(HashMap::new());
        }
        let request = csi::ControllerPublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            node_id: self.node_id.clone(),
            volume_capability: Some(mount_capability()),
            volume_context: volume.volume_context.clone(),
            ..Default::default()
        };
        let mut controller = self.controller.clone();
        timed(
            stats,
            Rpc::ControllerPublishVolume,
            controller.controller_publish_volume(request),
        )
        .await
        .map(|r| r.publish_context)
    }

    async fn detach(&self, volume_id: &str, stats: &mut Stats) -> bool {
        if !self.controller_publish {
            return true;
        }
        let request = csi::ControllerUnpublishVolumeRequest {
            volume_id: volume_id.into(),
            node_id: self.node_id.clone(),
            secrets: HashMap::new(),
        };
        let mut controller = self.controller.clone();
        timed(
            stats,
            Rpc::ControllerUnpublishVolume,
            controller.controller_unpublish_volume(request),
        )
        .await
        .is_some()
    }

    /// Stage (when offered), publish, unpublish, unstage.
    async fn mount(
        &self,
        workload: &Workload,
        index: usize,
        volume: &csi::Volume,
        publish_context: &HashMap<String, String>,
        stats: &mut Stats,
    ) -> bool {
        let paths = Paths::new(&workload.dir, index);
        let staging = if self.stage {
            if std::fs::create_dir_all(&paths.staging).is_err() {
                return false;
            }
            let stage = csi::NodeStageVolumeRequest {
                volume_id: volume.volume_id.clone(),
                publish_context: publish_context.clone(),
                staging_target_path: path_string(&paths.staging),
                volume_capability: Some(mount_capability()),
                volume_context: volume.volume_context.clone(),
                ..Default::default()
            };
            let mut node = self.node.clone();
            if timed(stats, Rpc::NodeStageVolume, node.node_stage_volume(stage))
                .await
                .is_none()
            {
                paths.remove();
                return false;
            }
            path_string(&paths.staging)
        } else {
            String::new()
        };
        let published = self
            .publish_unpublish(
                Published {
                    volume_id: &volume.volume_id,
                    volume_context: &volume.volume_context,
                    publish_context,
                    staging: &staging,
                },
                &paths,
                stats,
            )
            .await;
        let unstaged = !self.stage || {
            let unstage = csi::NodeUnstageVolumeRequest {
                volume_id: volume.volume_id.clone(),
                staging_target_path: staging,
            };
            let mut node = self.node.clone();
            timed(
                stats,
                Rpc::NodeUnstageVolume,
                node.node_unstage_volume(unstage),
            )
            .await
            .is_some()
        };
        paths.remove();
        published && unstaged
    }

    async fn ephemeral(&self, workload: &Workload, index: usize, stats: &mut Stats) -> bool {
        let volume_id = format!("bench-{}-{index}", workload.run);
        let mut context = workload.parameters.clone();
        context.insert("csi.storage.k8s.io/ephemeral".into(), "true".into());
        context.insert("csi.storage.k8s.io/pod.name".into(), volume_id.clone());
        context.insert("csi.storage.k8s.io/pod.namespace".into(), "bench".into());
        let paths = Paths::new(&workload.dir, index);
        let published = Published {
            volume_id: &volume_id,
            volume_context: &context,
            publish_context: &HashMap::new(),
            staging: "",
        };
        let ok = self.publish_unpublish(published, &paths, stats).await;
        paths.remove();
        ok
    }

    async fn publish_unpublish(
        &self,
        volume: Published<'_>,
        paths: &Paths,
        stats: &mut Stats,
    ) -> bool {
        // As kubelet does: the pod's volume directory exists, the target inside it does not.
        if std::fs::create_dir_all(&paths.pod).is_err() {
            return false;
        }
        let publish = csi::NodePublishVolumeRequest {
            volume_id: volume.volume_id.into(),
            publish_context: volume.publish_context.clone(),
            staging_target_path: volume.staging.into(),
            target_path: path_string(&paths.target),
            volume_capability: Some(mount_capability()),
            volume_context: volume.volume_context.clone(),
            ..Default::default()
        };
        let mut node = self.node.clone();
        if timed(
            stats,
            Rpc::NodePublishVolume,
            node.node_publish_volume(publish),
        )
        .await
        .is_none()
        {
            return false;
        }
        let unpublish = csi::NodeUnpublishVolumeRequest {
            volume_id: volume.volume_id.into(),
            target_path: path_string(&paths.target),
        };
        timed(
            stats,
            Rpc::NodeUnpublishVolume,
            node.node_unpublish_volume(unpublish),
        )
        .await
        .is_some()
    }
}

/// A volume created, staged and published that stays so until released: what a
/// running pod's volume is to the node plugin.
pub struct Held {
    volume: csi::Volume,
    paths: Paths,
    staging: String,
}

impl Driver {
    /// Creates, stages (when offered) and publishes volume `index`, and keeps it.
    pub async fn hold(
        &self,
        workload: &Workload,
        index: usize,
        stats: &mut Stats,
    ) -> Result<Held, String> {
        let mut controller = self.controller.clone();
        let create = csi::CreateVolumeRequest {
            name: format!("held-{}-{index}", workload.run),
            capacity_range: Some(CapacityRange {
                required_bytes: workload.capacity_bytes,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![mount_capability()],
            parameters: workload.parameters.clone(),
            accessibility_requirements: self.topology.clone(),
            ..Default::default()
        };
        let volume = timed(stats, Rpc::CreateVolume, controller.create_volume(create))
            .await
            .and_then(|r| r.volume)
            .ok_or_else(|| format!("CreateVolume of held volume {index} failed"))?;
        let paths = Paths::new(&workload.dir.join("held"), index);
        let mut held = Held {
            volume,
            paths,
            staging: String::new(),
        };
        let failed = |what: &str| format!("{what} of held volume {index} failed");
        let mut node = self.node.clone();
        if self.stage {
            std::fs::create_dir_all(&held.paths.staging).map_err(|e| e.to_string())?;
            held.staging = path_string(&held.paths.staging);
            let stage = csi::NodeStageVolumeRequest {
                volume_id: held.volume.volume_id.clone(),
                staging_target_path: held.staging.clone(),
                volume_capability: Some(mount_capability()),
                volume_context: held.volume.volume_context.clone(),
                ..Default::default()
            };
            timed(stats, Rpc::NodeStageVolume, node.node_stage_volume(stage))
                .await
                .ok_or_else(|| failed("NodeStageVolume"))?;
        }
        std::fs::create_dir_all(&held.paths.pod).map_err(|e| e.to_string())?;
        let publish = csi::NodePublishVolumeRequest {
            volume_id: held.volume.volume_id.clone(),
            staging_target_path: held.staging.clone(),
            target_path: path_string(&held.paths.target),
            volume_capability: Some(mount_capability()),
            volume_context: held.volume.volume_context.clone(),
            ..Default::default()
        };
        timed(
            stats,
            Rpc::NodePublishVolume,
            node.node_publish_volume(publish),
        )
        .await
        .ok_or_else(|| failed("NodePublishVolume"))?;
        Ok(held)
    }

    /// The held volume's ID.
    pub fn volume_id(held: &Held) -> &str {
        &held.volume.volume_id
    }

    /// Where the held volume is published.
    pub fn target(held: &Held) -> &Path {
        &held.paths.target
    }

    /// Unpublishes, unstages and deletes a held volume; false when a step failed.
    pub async fn release(&self, held: Held, stats: &mut Stats) -> bool {
        let mut node = self.node.clone();
        let unpublish = csi::NodeUnpublishVolumeRequest {
            volume_id: held.volume.volume_id.clone(),
            target_path: path_string(&held.paths.target),
        };
        let mut ok = timed(
            stats,
            Rpc::NodeUnpublishVolume,
            node.node_unpublish_volume(unpublish),
        )
        .await
        .is_some();
        if self.stage {
            let unstage = csi::NodeUnstageVolumeRequest {
                volume_id: held.volume.volume_id.clone(),
                staging_target_path: held.staging.clone(),
            };
            ok &= timed(
                stats,
                Rpc::NodeUnstageVolume,
                node.node_unstage_volume(unstage),
            )
            .await
            .is_some();
        }
        let mut controller = self.controller.clone();
        let delete = csi::DeleteVolumeRequest {
            volume_id: held.volume.volume_id,
            secrets: HashMap::new(),
        };
        ok &= timed(stats, Rpc::DeleteVolume, controller.delete_volume(delete))
            .await
            .is_some();
        held.paths.remove();
        ok
    }

    /// CreateVolume of a volume that no node uses; its ID.
    pub async fn create_only(
        &self,
        workload: &Workload,
        name: String,
        stats: &mut Stats,
    ) -> Option<String> {
        let mut controller = self.controller.clone();
        let create = csi::CreateVolumeRequest {
            name,
            capacity_range: Some(CapacityRange {
                required_bytes: workload.capacity_bytes,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![mount_capability()],
            parameters: workload.parameters.clone(),
            accessibility_requirements: self.topology.clone(),
            ..Default::default()
        };
        timed(stats, Rpc::CreateVolume, controller.create_volume(create))
            .await
            .and_then(|r| r.volume)
            .map(|v| v.volume_id)
    }

    /// DeleteVolume; false when it failed.
    pub async fn delete_only(&self, volume_id: String, stats: &mut Stats) -> bool {
        let mut controller = self.controller.clone();
        let delete = csi::DeleteVolumeRequest {
            volume_id,
            secrets: HashMap::new(),
        };
        timed(stats, Rpc::DeleteVolume, controller.delete_volume(delete))
            .await
            .is_some()
    }

    /// The controller client, for calls the lifecycle does not make (ListVolumes).
    pub fn controller(&self) -> ControllerClient<Channel> {
        self.controller.clone()
    }
}

/// A volume as NodePublishVolume needs it.
struct Published<'a> {
    volume_id: &'a str,
    volume_context: &'a HashMap<String, String>,
    publish_context: &'a HashMap<String, String>,
    staging: &'a str,
}

/// Where one lifecycle stages and publishes, laid out as kubelet lays them out.
struct Paths {
    staging: PathBuf,
    pod: PathBuf,
    target: PathBuf,
}

impl Paths {
    fn new(dir: &Path, index: usize) -> Self {
        let pod = dir.join("pods").join(index.to_string());
        Self {
            staging: dir.join("staging").join(index.to_string()),
            target: pod.join("mount"),
            pod,
        }
    }

    /// Best effort: a driver that failed may have left its mount, which must stay visible.
    fn remove(&self) {
        let _ = std::fs::remove_dir(&self.target);
        let _ = std::fs::remove_dir(&self.pod);
        let _ = std::fs::remove_dir(&self.staging);
    }
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn mount_capability() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

async fn timed<T>(
    stats: &mut Stats,
    rpc: Rpc,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Option<T> {
    let started = Instant::now();
    let result = call.await;
    stats.rpc(rpc).record(started.elapsed(), result.is_ok());
    match result {
        Ok(response) => Some(response.into_inner()),
        Err(status) => {
            tracing::warn!(rpc = rpc.name(), code = ?status.code(), "{}", status.message());
            None
        }
    }
}
