//! The CSI Node service. Publish state is read from the mount table, not remembered.

use std::collections::HashMap;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use csi_controller::ids::{Location, VolumeId, validate_name};
use csi_controller::inflight::InFlight;
use csi_controller::local::volume_data_path;
use csi_controller::record::Layout;
use csi_proto::v1::node_server::Node;
use csi_proto::v1::node_service_capability::{Rpc, rpc::Type as Cap};
use csi_proto::v1::{self as csi, NodeServiceCapability, Topology};
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::kind::{Kind, classify};
use crate::mountinfo::MountTable;
use crate::{NodeConfig, mounter, staging};

#[derive(Debug, Clone)]
pub struct NodeService {
    config: NodeConfig,
    kubelet_real: Option<PathBuf>,
    inflight: InFlight,
}

impl NodeService {
    pub fn new(config: NodeConfig) -> Result<Self> {
        let ephemeral = config.state_dir.join("ephemeral");
        fs::create_dir_all(&ephemeral)
            .map_err(|e| Error::io(format!("create {}", ephemeral.display()), e))?;
        let kubelet_real = fs::canonicalize(&config.kubelet_dir).ok();
        Ok(Self {
            config,
            kubelet_real,
            inflight: InFlight::default(),
        })
    }

    /// Serialises calls per volume: a concurrent second call is Aborted.
    fn claim(&self, volume_id: &str) -> Result<csi_controller::inflight::Guard> {
        self.inflight
            .claim(volume_id, &format!("volume {volume_id}"))
            .map_err(Error::from)
    }

    /// The kubelet directory with symlinks resolved: resolved once at start when it
    /// exists then (it does under a kubelet), else at each call.
    fn kubelet_real(&self) -> PathBuf {
        self.kubelet_real
            .clone()
            .unwrap_or_else(|| fs::canonicalize(&self.config.kubelet_dir).unwrap_or_default())
    }

    fn ephemeral_dir(&self, volume_id: &str) -> PathBuf {
        self.config.state_dir.join("ephemeral").join(volume_id)
    }

    /// A target or staging path: absolute, no `..`, under the kubelet directory even
    /// after resolving symlinks in its parent.
    fn checked_path(&self, field: &'static str, raw: &str) -> Result<PathBuf> {
        if raw.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        let path = Path::new(raw);
        if !path.is_absolute()
            || path.components().any(|c| matches!(c, Component::ParentDir))
            || raw.contains('\0')
        {
            return Err(Error::invalid(
                field,
                format!("{raw:?} must be an absolute path without '..'"),
            ));
        }
        let outside = || {
            Error::invalid(
                field,
                format!(
                    "{raw:?} is outside the kubelet directory {}",
                    self.config.kubelet_dir.display()
                ),
            )
        };
        if !path.starts_with(&self.config.kubelet_dir) {
            return Err(outside());
        }
        if let Some(parent) = path.parent()
            && let Ok(real) = fs::canonicalize(parent)
            && !real.starts_with(self.kubelet_real())
        {
            return Err(outside());
        }
        Ok(path.to_path_buf())
    }

    /// The staging path of a publish request, which must hold the staged mount.
    fn staged_path(&self, volume_id: &str, raw: &str) -> Result<PathBuf> {
        let staging = self.checked_path("staging_target_path", raw)?;
        let table = mount_table()?;
        if table.at(&staging).is_none() {
            return Err(Error::FailedPrecondition(format!(
                "volume {volume_id} is not staged at {}",
                staging.display()
            )));
        }
        Ok(staging)
    }

    async fn publish(&self, req: csi::NodePublishVolumeRequest) -> Result<()> {
        require("volume_id", &req.volume_id)?;
        let target = self.checked_path("target_path", &req.target_path)?;
        let capability = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| Error::invalid("volume_capability", "is required"))?;
        let _guard = self.claim(&req.volume_id)?;
        let kind = classify(
            &self.config,
            &req.volume_id,
            &req.volume_context,
            capability,
        )?;
        if let Some(mounted) = MountTable::read()
            .map_err(|e| Error::io("read mountinfo", e))?
            .at(&target)
            .cloned()
        {
            let staging = Path::new(&req.staging_target_path);
            return self.check_same_publish(
                (&req.volume_id, staging),
                &kind,
                &target,
                (mounted.read_only(), &mounted.fs_type),
                req.readonly,
            );
        }
        match kind {
            Kind::Ephemeral { memory, size_limit } => {
                self.publish_ephemeral(&req.volume_id, &target, memory, size_limit, req.readonly)
            }
            Kind::HostPath(host) => {
                make_target(&target, host.is_file)?;
                mounter::bind(&host.path, &target, req.readonly)
                    .inspect_err(|_| remove_target(&target))
            }
            Kind::LocalDirectory(source) => {
                make_target(&target, false)?;
                mounter::bind(&source, &target, req.readonly)
                    .inspect_err(|_| remove_target(&target))
            }
            Kind::LocalImage(_) => {
                let staging = self.staged_path(&req.volume_id, &req.staging_target_path)?;
                make_target(&target, false)?;
                mounter::bind(&staging, &target, req.readonly)
                    .inspect_err(|_| remove_target(&target))
            }
            Kind::Nfs(volume) => {
                let staging = self.staged_path(&req.volume_id, &req.staging_target_path)?;
                let source = staging.join(&volume.sub_dir);
                if !source.is_dir() {
                    return Err(Error::NotFound(format!(
                        "{} is not in the NFS export",
                        volume.sub_dir.display()
                    )));
                }
                make_target(&target, false)?;
                mounter::bind(&source, &target, req.readonly)
                    .inspect_err(|_| remove_target(&target))
            }
            Kind::LocalBlock(file) => {
                let device = staging::loop_device_of(&file).ok_or_else(|| {
                    Error::FailedPrecondition(format!("volume {} is not staged", req.volume_id))
                })?;
                make_target(&target, true)?;
                mounter::bind(&device, &target, req.readonly)
                    .inspect_err(|_| remove_target(&target))
            }
        }
    }

    /// Publishing again is fine when it would produce the same mount; otherwise AlreadyExists.
    fn check_same_publish(
        &self,
        (volume_id, staging): (&str, &Path),
        kind: &Kind,
        target: &Path,
        (read_only, fs_type): (bool, &str),
        want_ro: bool,
    ) -> Result<()> {
        let same_source = match kind {
            Kind::Ephemeral { memory: true, .. } => fs_type == "tmpfs",
            Kind::Ephemeral { .. } => same_inode(target, &self.ephemeral_dir(volume_id)),
            Kind::HostPath(host) => same_inode(target, &host.path),
            Kind::LocalDirectory(source) => same_inode(target, source),
            Kind::LocalImage(_) => same_inode(target, staging),
            Kind::Nfs(volume) => same_inode(target, &staging.join(&volume.sub_dir)),
            Kind::LocalBlock(file) => {
                staging::loop_device_of(file).is_some_and(|dev| same_inode(target, &dev))
            }
        };
        if same_source && read_only == want_ro {
            return Ok(());
        }
        Err(Error::AlreadyExists(format!(
            "{} is already published with other arguments",
            target.display()
        )))
    }

    fn publish_ephemeral(
        &self,
        volume_id: &str,
        target: &Path,
        memory: bool,
        size_limit: u64,
        read_only: bool,
    ) -> Result<()> {
        make_target(target, false)?;
        if memory {
            return mounter::tmpfs(target, size_limit, read_only)
                .inspect_err(|_| remove_target(target));
        }
        let data = self.ephemeral_dir(volume_id);
        let result = fs::create_dir(&data)
            .or_else(|e| {
                if e.kind() == ErrorKind::AlreadyExists {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .and_then(|()| {
                fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            })
            .map_err(|e| Error::io(format!("create {}", data.display()), e))
            .and_then(|()| mounter::bind(&data, target, read_only));
        if result.is_err() {
            // Nothing may leak from a publish that failed half-way.
            let _ = fs::remove_dir_all(&data);
            remove_target(target);
        }
        result
    }

    async fn unpublish(&self, req: csi::NodeUnpublishVolumeRequest) -> Result<()> {
        require("volume_id", &req.volume_id)?;
        let target = self.checked_path("target_path", &req.target_path)?;
        let _guard = self.claim(&req.volume_id)?;
        let table = mount_table()?;
        for entry in table.under(&target) {
            mounter::unmount(&entry.mount_point)?;
        }
        match fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_dir() => fs::remove_dir(&target),
            Ok(_) => fs::remove_file(&target),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
        .map_err(|e| Error::io(format!("remove {}", target.display()), e))?;
        if validate_name("volume_id", &req.volume_id).is_ok() {
            let data = self.ephemeral_dir(&req.volume_id);
            if data.exists() {
                fs::remove_dir_all(&data)
                    .map_err(|e| Error::io(format!("remove {}", data.display()), e))?;
            }
        }
        Ok(())
    }

    async fn stage(&self, req: csi::NodeStageVolumeRequest) -> Result<()> {
        require("volume_id", &req.volume_id)?;
        let staging = self.checked_path("staging_target_path", &req.staging_target_path)?;
        let capability = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| Error::invalid("volume_capability", "is required"))?;
        let _guard = self.claim(&req.volume_id)?;
        match classify(
            &self.config,
            &req.volume_id,
            &req.volume_context,
            capability,
        )? {
            // Directory volumes need no per-node preparation: publish binds the data directly.
            Kind::LocalDirectory(_) | Kind::HostPath(_) => {
                existing_dir(&staging)?;
                Ok(())
            }
            Kind::LocalImage(image) => {
                existing_dir(&staging)?;
                staging::stage_image(&image, &staging)
            }
            Kind::LocalBlock(file) => staging::stage_block(&file).map(drop),
            Kind::Nfs(volume) => {
                existing_dir(&staging)?;
                let table = mount_table()?;
                match table.at(&staging) {
                    Some(m) if m.fs_type.starts_with("nfs") && m.source == volume.source() => {
                        Ok(())
                    }
                    Some(_) => Err(Error::AlreadyExists(format!(
                        "{} already holds another mount",
                        staging.display()
                    ))),
                    None => volume.mount(&staging, false).await,
                }
            }
            Kind::Ephemeral { .. } => Err(Error::invalid(
                "volume_context",
                "ephemeral volumes are not staged",
            )),
        }
    }

    async fn unstage(&self, req: csi::NodeUnstageVolumeRequest) -> Result<()> {
        require("volume_id", &req.volume_id)?;
        let staging = self.checked_path("staging_target_path", &req.staging_target_path)?;
        let _guard = self.claim(&req.volume_id)?;
        // A block volume's loop device has no mount to take it away: detach it by its file.
        let block_file = VolumeId::parse(&req.volume_id)
            .filter(|id| matches!(&id.location, Location::Local { node } if *node == self.config.node_id))
            .map(|id| volume_data_path(&self.config.local_root, id.key.as_str(), &Layout::Block));
        staging::unstage(&staging, block_file.as_deref())
    }

    async fn expand(&self, req: csi::NodeExpandVolumeRequest) -> Result<i64> {
        require("volume_id", &req.volume_id)?;
        let path = existing_volume_path(&req.volume_path)?;
        let _guard = self.claim(&req.volume_id)?;
        let table = mount_table()?;
        match table.at(path) {
            Some(entry) if entry.fs_type == "ext4" && entry.source.starts_with("/dev/loop") => {
                staging::expand_mounted(path)
            }
            // Directories and tmpfs have nothing to grow; their size is bookkeeping.
            _ => Ok(req.capacity_range.map(|r| r.required_bytes).unwrap_or(0)),
        }
    }

    async fn stats(
        &self,
        req: csi::NodeGetVolumeStatsRequest,
    ) -> Result<csi::NodeGetVolumeStatsResponse> {
        require("volume_id", &req.volume_id)?;
        let path = existing_volume_path(&req.volume_path)?;
        let mounted = mount_table()?.at(path).is_some();
        // A volume this node knows: a Stowage ID, an ephemeral volume with data here, or
        // whatever is mounted at the path. Anything else is NotFound, as the spec asks.
        let known = VolumeId::parse(&req.volume_id).is_some()
            || mounted
            || (validate_name("volume_id", &req.volume_id).is_ok()
                && self.ephemeral_dir(&req.volume_id).is_dir());
        if !known {
            return Err(Error::NotFound(format!(
                "volume {} is not on this node",
                req.volume_id
            )));
        }
        let stat = nix::sys::statvfs::statvfs(path)
            .map_err(|e| Error::io(format!("statvfs {}", path.display()), e.into()))?;
        let fragment = stat.fragment_size() as u128;
        let clamp = |n: u128| i64::try_from(n).unwrap_or(i64::MAX);
        let total = u128::from(stat.blocks()) * fragment;
        let free = u128::from(stat.blocks_free()) * fragment;
        let available = u128::from(stat.blocks_available()) * fragment;
        let usage = vec![
            csi::VolumeUsage {
                available: clamp(available),
                total: clamp(total),
                used: clamp(total - free),
                unit: csi::volume_usage::Unit::Bytes as i32,
            },
            csi::VolumeUsage {
                available: clamp(u128::from(stat.files_available())),
                total: clamp(u128::from(stat.files())),
                used: clamp(u128::from(stat.files() - stat.files_free())),
                unit: csi::volume_usage::Unit::Inodes as i32,
            },
        ];
        let volume_condition = Some(csi::VolumeCondition {
            abnormal: !mounted,
            message: if mounted {
                "mounted".into()
            } else {
                format!("{} is no longer a mount point", path.display())
            },
        });
        Ok(csi::NodeGetVolumeStatsResponse {
            usage,
            volume_condition,
        })
    }
}

fn require(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    Ok(())
}

/// A volume path given to stats or expansion: required, and it must exist.
fn existing_volume_path(raw: &str) -> Result<&Path> {
    require("volume_path", raw)?;
    let path = Path::new(raw);
    if fs::symlink_metadata(path).is_err() {
        return Err(Error::NotFound(format!(
            "volume path {} does not exist",
            path.display()
        )));
    }
    Ok(path)
}

fn mount_table() -> Result<MountTable> {
    MountTable::read().map_err(|e| Error::io("read mountinfo", e))
}

/// The staging directory the CO created must be there.
fn existing_dir(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    Err(Error::NotFound(format!(
        "staging path {} does not exist",
        path.display()
    )))
}

fn make_target(target: &Path, file: bool) -> Result<()> {
    let result = if file {
        let parent = target.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(parent).and_then(|()| {
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(target)
                .map(drop)
        })
    } else {
        fs::create_dir_all(target)
    };
    result.map_err(|e| Error::io(format!("create {}", target.display()), e))
}

/// Best-effort clean-up of a target a failed publish created.
fn remove_target(target: &Path) {
    let _ = fs::remove_dir(target).or_else(|_| fs::remove_file(target));
}

fn same_inode(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

fn node_capability(cap: Cap) -> NodeServiceCapability {
    NodeServiceCapability {
        r#type: Some(csi::node_service_capability::Type::Rpc(Rpc {
            r#type: cap as i32,
        })),
    }
}

fn respond<T>(method: &'static str, result: Result<T>) -> Result<Response<T>, Status> {
    if let Err(e) = &result {
        tracing::debug!(method, error = %e, "node call refused");
    }
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<csi::NodeStageVolumeRequest>,
    ) -> Result<Response<csi::NodeStageVolumeResponse>, Status> {
        respond(
            "NodeStageVolume",
            self.stage(request.into_inner())
                .await
                .map(|()| csi::NodeStageVolumeResponse {}),
        )
    }

    async fn node_unstage_volume(
        &self,
        request: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        respond(
            "NodeUnstageVolume",
            self.unstage(request.into_inner())
                .await
                .map(|()| csi::NodeUnstageVolumeResponse {}),
        )
    }

    async fn node_publish_volume(
        &self,
        request: Request<csi::NodePublishVolumeRequest>,
    ) -> Result<Response<csi::NodePublishVolumeResponse>, Status> {
        respond(
            "NodePublishVolume",
            self.publish(request.into_inner())
                .await
                .map(|()| csi::NodePublishVolumeResponse {}),
        )
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        respond(
            "NodeUnpublishVolume",
            self.unpublish(request.into_inner())
                .await
                .map(|()| csi::NodeUnpublishVolumeResponse {}),
        )
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        respond("NodeGetVolumeStats", self.stats(request.into_inner()).await)
    }

    async fn node_expand_volume(
        &self,
        request: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        let result = self.expand(request.into_inner()).await;
        respond(
            "NodeExpandVolume",
            result.map(|capacity_bytes| csi::NodeExpandVolumeResponse { capacity_bytes }),
        )
    }

    async fn node_get_capabilities(
        &self,
        _: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        let capabilities = [
            Cap::StageUnstageVolume,
            Cap::GetVolumeStats,
            Cap::ExpandVolume,
            Cap::VolumeCondition,
            Cap::SingleNodeMultiWriter,
        ]
        .into_iter()
        .map(node_capability)
        .collect();
        Ok(Response::new(csi::NodeGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<csi::NodeGetInfoRequest>,
    ) -> Result<Response<csi::NodeGetInfoResponse>, Status> {
        Ok(Response::new(csi::NodeGetInfoResponse {
            node_id: self.config.node_id.clone(),
            max_volumes_per_node: self.config.max_volumes,
            accessible_topology: Some(Topology {
                segments: HashMap::from([(
                    csi_proto::TOPOLOGY_NODE_KEY.to_string(),
                    self.config.node_id.clone(),
                )]),
            }),
        }))
    }
}
