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
use crate::bench::error::Error;
use crate::bench::process::create_dir;
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
    node_stages: bool,
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
    ) -> Result<Self, Error> {
        let plugin = IdentityClient::new(controller.clone())
            .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
            .await
            .map_err(|status| Error::Rpc {
                call: "GetPluginCapabilities",
                status,
            })?
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
        let node_caps = node_rpcs(&mut node_client).await?;
        let info = node_client
            .node_get_info(csi::NodeGetInfoRequest {})
            .await
            .map_err(|status| Error::Rpc {
                call: "NodeGetInfo",
                status,
            })?
            .into_inner();
        let mut controller_client = ControllerClient::new(controller);
        let controller_caps = if services.contains(&(ServiceType::ControllerService as i32)) {
            controller_rpcs(&mut controller_client).await?
        } else {
            Vec::new()
        };
        if matches!(kind, VolumeType::Local)
            && !controller_caps.contains(&(ControllerCap::CreateDeleteVolume as i32))
        {
            return Err(Error::NoCreateDelete);
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
            node_stages: node_caps.contains(&(NodeCap::StageUnstageVolume as i32)),
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
        let Ok(volume) = self.create(workload, name, stats).await else {
            return false;
        };
        let attached = self.attach(&volume, stats).await;
        let ok = match &attached {
            Ok(publish_context) => {
                self.mount(workload, index, &volume, publish_context, stats)
                    .await
            }
            Err(_) => false,
        };
        let detached = attached.is_err() || self.detach(&volume.volume_id, stats).await.is_ok();
        let deleted = self.delete(volume.volume_id, stats).await.is_ok();
        ok && detached && deleted
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
        let Ok(staging) = self.stage(volume, publish_context, &paths, stats).await else {
            paths.remove();
            return false;
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
        let unstaged = self
            .unstage(&volume.volume_id, staging, stats)
            .await
            .is_ok();
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
        self.publish(&volume, paths, stats).await.is_ok()
            && self.unpublish(volume.volume_id, paths, stats).await.is_ok()
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
    ) -> Result<Held, Error> {
        let name = format!("held-{}-{index}", workload.run);
        let volume = self.create(workload, name, stats).await?;
        let paths = Paths::new(&workload.dir.join(HELD), index);
        let no_context = HashMap::new();
        let staging = self.stage(&volume, &no_context, &paths, stats).await?;
        let published = Published {
            volume_id: &volume.volume_id,
            volume_context: &volume.volume_context,
            publish_context: &no_context,
            staging: &staging,
        };
        self.publish(&published, &paths, stats).await?;
        Ok(Held {
            volume,
            paths,
            staging,
        })
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
        let volume_id = held.volume.volume_id;
        let mut ok = self.unpublish(&volume_id, &held.paths, stats).await.is_ok();
        ok &= self.unstage(&volume_id, held.staging, stats).await.is_ok();
        ok &= self.delete(volume_id, stats).await.is_ok();
        held.paths.remove();
        ok
    }

    /// CreateVolume of a volume that no node uses; its ID.
    pub async fn create_only(
        &self,
        workload: &Workload,
        name: String,
        stats: &mut Stats,
    ) -> Result<String, Error> {
        Ok(self.create(workload, name, stats).await?.volume_id)
    }

    /// DeleteVolume of a volume that no node uses.
    pub async fn delete_only(&self, volume_id: String, stats: &mut Stats) -> Result<(), Error> {
        self.delete(volume_id, stats).await
    }

    /// The controller client, for calls the lifecycle does not make (ListVolumes).
    pub fn controller(&self) -> ControllerClient<Channel> {
        self.controller.clone()
    }
}

/// The steps a lifecycle and a held volume are made of, each one timed call (or none,
/// when the driver's capabilities say it is not needed).
impl Driver {
    /// CreateVolume `name` (cloning the workload's source, if any).
    async fn create(
        &self,
        workload: &Workload,
        name: String,
        stats: &mut Stats,
    ) -> Result<csi::Volume, Error> {
        let create = csi::CreateVolumeRequest {
            name: name.clone(),
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
        timed(
            stats,
            Rpc::CreateVolume,
            &name,
            self.controller.clone().create_volume(create),
        )
        .await?
        .volume
        .ok_or(Error::NoVolume(name))
    }

    async fn delete(&self, volume_id: String, stats: &mut Stats) -> Result<(), Error> {
        let delete = csi::DeleteVolumeRequest {
            volume_id: volume_id.clone(),
            secrets: HashMap::new(),
        };
        timed(
            stats,
            Rpc::DeleteVolume,
            &volume_id,
            self.controller.clone().delete_volume(delete),
        )
        .await
        .map(drop)
    }

    /// ControllerPublishVolume when the driver wants it; the publish context either way.
    async fn attach(
        &self,
        volume: &csi::Volume,
        stats: &mut Stats,
    ) -> Result<HashMap<String, String>, Error> {
        if !self.controller_publish {
            return Ok(HashMap::new());
        }
        let request = csi::ControllerPublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            node_id: self.node_id.clone(),
            volume_capability: Some(mount_capability()),
            volume_context: volume.volume_context.clone(),
            ..Default::default()
        };
        let published = timed(
            stats,
            Rpc::ControllerPublishVolume,
            &volume.volume_id,
            self.controller.clone().controller_publish_volume(request),
        )
        .await?;
        Ok(published.publish_context)
    }

    async fn detach(&self, volume_id: &str, stats: &mut Stats) -> Result<(), Error> {
        if !self.controller_publish {
            return Ok(());
        }
        let request = csi::ControllerUnpublishVolumeRequest {
            volume_id: volume_id.into(),
            node_id: self.node_id.clone(),
            secrets: HashMap::new(),
        };
        timed(
            stats,
            Rpc::ControllerUnpublishVolume,
            volume_id,
            self.controller.clone().controller_unpublish_volume(request),
        )
        .await
        .map(drop)
    }

    /// NodeStageVolume when the driver offers it; the staging path to publish from
    /// (empty when not staged).
    async fn stage(
        &self,
        volume: &csi::Volume,
        publish_context: &HashMap<String, String>,
        paths: &Paths,
        stats: &mut Stats,
    ) -> Result<String, Error> {
        if !self.node_stages {
            return Ok(String::new());
        }
        create_dir(&paths.staging)?;
        let staging = path_string(&paths.staging);
        let stage = csi::NodeStageVolumeRequest {
            volume_id: volume.volume_id.clone(),
            publish_context: publish_context.clone(),
            staging_target_path: staging.clone(),
            volume_capability: Some(mount_capability()),
            volume_context: volume.volume_context.clone(),
            ..Default::default()
        };
        timed(
            stats,
            Rpc::NodeStageVolume,
            &volume.volume_id,
            self.node.clone().node_stage_volume(stage),
        )
        .await?;
        Ok(staging)
    }

    async fn unstage(
        &self,
        volume_id: &str,
        staging: String,
        stats: &mut Stats,
    ) -> Result<(), Error> {
        if !self.node_stages {
            return Ok(());
        }
        let unstage = csi::NodeUnstageVolumeRequest {
            volume_id: volume_id.into(),
            staging_target_path: staging,
        };
        timed(
            stats,
            Rpc::NodeUnstageVolume,
            volume_id,
            self.node.clone().node_unstage_volume(unstage),
        )
        .await
        .map(drop)
    }

    async fn publish(
        &self,
        volume: &Published<'_>,
        paths: &Paths,
        stats: &mut Stats,
    ) -> Result<(), Error> {
        // As kubelet does: the pod's volume directory exists, the target inside it does not.
        create_dir(&paths.pod)?;
        let publish = csi::NodePublishVolumeRequest {
            volume_id: volume.volume_id.into(),
            publish_context: volume.publish_context.clone(),
            staging_target_path: volume.staging.into(),
            target_path: path_string(&paths.target),
            volume_capability: Some(mount_capability()),
            volume_context: volume.volume_context.clone(),
            ..Default::default()
        };
        timed(
            stats,
            Rpc::NodePublishVolume,
            volume.volume_id,
            self.node.clone().node_publish_volume(publish),
        )
        .await
        .map(drop)
    }

    async fn unpublish(
        &self,
        volume_id: &str,
        paths: &Paths,
        stats: &mut Stats,
    ) -> Result<(), Error> {
        let unpublish = csi::NodeUnpublishVolumeRequest {
            volume_id: volume_id.into(),
            target_path: path_string(&paths.target),
        };
        timed(
            stats,
            Rpc::NodeUnpublishVolume,
            volume_id,
            self.node.clone().node_unpublish_volume(unpublish),
        )
        .await
        .map(drop)
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
/// Where a workload's held volumes have their paths, below its directory.
pub const HELD: &str = "held";
/// The directories `Paths` makes below a workload's directory (or below `HELD`).
pub const PATH_DIRS: [&str; 2] = ["staging", "pods"];

struct Paths {
    staging: PathBuf,
    pod: PathBuf,
    target: PathBuf,
}

impl Paths {
    fn new(dir: &Path, index: usize) -> Self {
        let [staging, pods] = PATH_DIRS;
        let pod = dir.join(pods).join(index.to_string());
        Self {
            staging: dir.join(staging).join(index.to_string()),
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

/// Makes `call` about `volume`, its time and outcome recorded; a refusal is logged
/// here, as a lifecycle goes on to undo its steps rather than return it.
async fn timed<T>(
    stats: &mut Stats,
    rpc: Rpc,
    volume: &str,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Error> {
    let started = Instant::now();
    let result = call.await;
    stats.rpc(rpc).record(started.elapsed(), result.is_ok());
    match result {
        Ok(response) => Ok(response.into_inner()),
        Err(status) => {
            tracing::warn!(rpc = rpc.name(), volume, code = ?status.code(), "{}", status.message());
            Err(Error::VolumeRpc {
                call: rpc.name(),
                volume: volume.to_string(),
                status,
            })
        }
    }
}
