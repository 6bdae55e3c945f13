//! `stowage mount` and `stowage unmount`: a claim bound (playing the scheduler's
//! part), staged and published through the node plugin, and bound onto a path of
//! the user's choosing; and all of that undone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::node_service_capability::rpc::Type as NodeCap;
use csi_proto::v1::volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode};
use csi_proto::v1::{self as csi, VolumeCapability};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::{Api, Client, ResourceExt};
use nix::mount::{MntFlags, MsFlags, mount as mount2, umount2};
use tonic::transport::Channel;

use super::error::{self, Error};
use super::placement::{Placement, admits, node_labels, place};
use super::record::{self, MountRecord};
use crate::capabilities::node_rpcs;
use crate::kubeconfig;
use crate::layout::{DEFAULT_DATA, Layout};

#[derive(clap::Args)]
pub struct MountArgs {
    /// The claim to mount.
    claim: String,
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// Where the volume appears; created if missing.
    #[arg(long)]
    target: PathBuf,
    /// The data directory `stowage up` runs with.
    #[arg(long, default_value = DEFAULT_DATA)]
    data: PathBuf,
    /// How long to wait for the claim to be bound.
    #[arg(long, default_value_t = 300)]
    timeout_seconds: u64,
    /// The group that owns the volume's root (setgid), as a pod's fsGroup: members
    /// write there; existing files keep their owners.
    #[arg(long)]
    fs_group: Option<u32>,
}

#[derive(clap::Args)]
pub struct UnmountArgs {
    /// A path `stowage mount` mounted.
    #[arg(long)]
    target: PathBuf,
    /// The data directory `stowage up` runs with.
    #[arg(long, default_value = DEFAULT_DATA)]
    data: PathBuf,
}

pub async fn mount(args: MountArgs) -> Result<(), Error> {
    let layout = Layout::new(&args.data);
    let node = layout.node_name()?;
    std::fs::create_dir_all(&args.target).map_err(|source| Error::Create {
        path: args.target.clone(),
        source,
    })?;
    let target = std::fs::canonicalize(&args.target).map_err(|source| Error::Target {
        path: args.target.clone(),
        source,
    })?;
    if record::load(&layout.mounts(), &target)?.is_some() {
        return Err(Error::AlreadyMounted(target));
    }
    let client = kubeconfig::client(&layout.kubeconfig()).await?;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &args.namespace);
    let claim = claims.get(&args.claim).await.map_err(error::api(format!(
        "claim {}/{}",
        args.namespace, args.claim
    )))?;
    match place(&client, &claim, &node).await? {
        Placement::PreBound(volume) => eprintln!("pre-bound static volume {volume} on node {node}"),
        Placement::SelectedNode => {
            eprintln!("selected node {node}: the provisioner makes the volume")
        }
        Placement::Nothing => {}
    }
    let timeout = Duration::from_secs(args.timeout_seconds);
    let volume_name = wait_bound(&claims, &args.claim, timeout).await?;
    let volume = Api::<PersistentVolume>::all(client.clone())
        .get(&volume_name)
        .await
        .map_err(error::api(format!("volume {volume_name}")))?;
    check_reachable(&client, &volume, &node).await?;
    let record = publish(&layout, &claim, &volume, target, args.fs_group).await?;
    record::save(&layout.mounts(), &record)?;
    println!(
        "mounted {}/{} (volume {}) at {}",
        record.namespace,
        record.claim,
        record.volume,
        record.target.display()
    );
    Ok(())
}

pub async fn unmount(args: UnmountArgs) -> Result<(), Error> {
    let layout = Layout::new(&args.data);
    let target = std::fs::canonicalize(&args.target).map_err(|source| Error::Target {
        path: args.target.clone(),
        source,
    })?;
    let Some(record) = record::load(&layout.mounts(), &target)? else {
        return Err(Error::NotMounted(target));
    };
    match umount2(&record.target, MntFlags::empty()) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(source) => {
            return Err(Error::Unmount {
                target: record.target.clone(),
                source,
            });
        }
    }
    let mut node = node_client(&layout).await?;
    unpublish(&mut node, &record).await?;
    record::remove(&layout.mounts(), &target)?;
    println!(
        "unmounted {}/{} from {}",
        record.namespace,
        record.claim,
        target.display()
    );
    Ok(())
}

/// Waits for the claim to be Bound, saying what it is waiting for when that changes.
async fn wait_bound(
    claims: &Api<PersistentVolumeClaim>,
    name: &str,
    timeout: Duration,
) -> Result<String, Error> {
    let deadline = Instant::now() + timeout;
    let mut said = String::new();
    loop {
        let claim = claims
            .get(name)
            .await
            .map_err(error::api(format!("claim {name}")))?;
        let phase = claim
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let volume = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap_or_default();
        if phase == "Bound" && !volume.is_empty() {
            return Ok(volume);
        }
        if phase == "Lost" {
            return Err(Error::Lost(name.to_string()));
        }
        let now = format!("waiting for claim {name} to be bound (phase {phase})");
        if now != said {
            eprintln!("{now}");
            said = now;
        }
        if Instant::now() > deadline {
            return Err(Error::NotBound {
                name: name.to_string(),
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn check_reachable(
    client: &Client,
    volume: &PersistentVolume,
    node: &str,
) -> Result<(), Error> {
    if admits(volume, node, &node_labels(client, node).await?) {
        return Ok(());
    }
    Err(Error::PinnedElsewhere {
        volume: volume.name_any(),
        node: node.to_string(),
    })
}

async fn node_client(layout: &Layout) -> Result<NodeClient<Channel>, Error> {
    let socket = layout.node_socket();
    match csi_proto::channel::connect(&socket).await {
        Ok(channel) => Ok(NodeClient::new(channel)),
        Err(source) => Err(Error::Plugin { socket, source }),
    }
}

/// Stage (if the plugin stages), publish below its kubelet root, bind onto the target;
/// on failure, what was done is undone.
async fn publish(
    layout: &Layout,
    claim: &PersistentVolumeClaim,
    volume: &PersistentVolume,
    target: PathBuf,
    fs_group: Option<u32>,
) -> Result<MountRecord, Error> {
    let spec = volume.spec.as_ref().ok_or(Error::NoSpec)?;
    if spec.volume_mode.as_deref() == Some("Block") {
        return Err(Error::Block);
    }
    let source = spec
        .csi
        .as_ref()
        .filter(|c| c.driver == driver_contract::DRIVER_NAME)
        .ok_or_else(|| Error::NotOurs(volume.name_any()))?;
    let capability = capability(
        spec.access_modes.as_deref().unwrap_or_default(),
        spec,
        fs_group,
    );
    let context: HashMap<String, String> = source
        .volume_attributes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut node = node_client(layout).await?;
    let kubelet = layout.kubelet();
    let staging_dir = kubelet.join("staging").join(volume.name_any());
    let published = kubelet
        .join("pods")
        .join(claim.uid().unwrap_or_default())
        .join(volume.name_any())
        .join("mount");
    let mut record = MountRecord {
        target,
        namespace: claim.namespace().unwrap_or_default(),
        claim: claim.name_any(),
        volume: volume.name_any(),
        volume_id: source.volume_handle.clone(),
        staging: String::new(),
        published,
    };
    let stages = node_rpcs(&mut node)
        .await?
        .contains(&(NodeCap::StageUnstageVolume as i32));
    if stages {
        std::fs::create_dir_all(&staging_dir).map_err(|source| Error::Create {
            path: staging_dir.clone(),
            source,
        })?;
        record.staging = staging_dir.display().to_string();
        node.node_stage_volume(csi::NodeStageVolumeRequest {
            volume_id: record.volume_id.clone(),
            staging_target_path: record.staging.clone(),
            volume_capability: Some(capability.clone()),
            volume_context: context.clone(),
            ..Default::default()
        })
        .await
        .map_err(error::csi("NodeStageVolume"))?;
    }
    if let Err(e) = publish_and_bind(&mut node, &record, capability, context).await {
        let _ = unpublish(&mut node, &record).await;
        return Err(e);
    }
    Ok(record)
}

/// NodePublishVolume below the kubelet root, then a bind of that onto the user's target.
async fn publish_and_bind(
    node: &mut NodeClient<Channel>,
    record: &MountRecord,
    capability: VolumeCapability,
    context: HashMap<String, String>,
) -> Result<(), Error> {
    let parent = record.published.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(|source| Error::Create {
        path: parent.to_path_buf(),
        source,
    })?;
    node.node_publish_volume(csi::NodePublishVolumeRequest {
        volume_id: record.volume_id.clone(),
        staging_target_path: record.staging.clone(),
        target_path: record.published.display().to_string(),
        volume_capability: Some(capability),
        readonly: false,
        volume_context: context,
        ..Default::default()
    })
    .await
    .map_err(error::csi("NodePublishVolume"))?;
    mount2(
        Some(&record.published),
        &record.target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| Error::Bind {
        target: record.target.clone(),
        source,
    })
}

async fn unpublish(node: &mut NodeClient<Channel>, record: &MountRecord) -> Result<(), Error> {
    node.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
        volume_id: record.volume_id.clone(),
        target_path: record.published.display().to_string(),
    })
    .await
    .map_err(error::csi("NodeUnpublishVolume"))?;
    if let Some(pod) = record.published.parent() {
        let _ = std::fs::remove_dir(pod);
        let _ = pod.parent().map(std::fs::remove_dir);
    }
    if record.staging.is_empty() {
        return Ok(());
    }
    node.node_unstage_volume(csi::NodeUnstageVolumeRequest {
        volume_id: record.volume_id.clone(),
        staging_target_path: record.staging.clone(),
    })
    .await
    .map_err(error::csi("NodeUnstageVolume"))?;
    let _ = std::fs::remove_dir(&record.staging);
    Ok(())
}

/// The capability kubelet would ask for: the volume's filesystem and mount options, and
/// the access mode its modes imply.
fn capability(
    modes: &[String],
    spec: &k8s_openapi::api::core::v1::PersistentVolumeSpec,
    fs_group: Option<u32>,
) -> VolumeCapability {
    let mode = if modes.iter().any(|m| m == "ReadWriteMany") {
        Mode::MultiNodeMultiWriter
    } else if modes.iter().any(|m| m == "ReadWriteOncePod") {
        Mode::SingleNodeSingleWriter
    } else if modes.iter().all(|m| m == "ReadOnlyMany") && !modes.is_empty() {
        Mode::MultiNodeReaderOnly
    } else {
        Mode::SingleNodeWriter
    };
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: spec
                .csi
                .as_ref()
                .and_then(|c| c.fs_type.clone())
                .unwrap_or_default(),
            mount_flags: spec.mount_options.clone().unwrap_or_default(),
            volume_mount_group: fs_group.map(|g| g.to_string()).unwrap_or_default(),
        })),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}
