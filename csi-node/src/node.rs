//! The CSI Node service. Whether a path is mounted is asked of the kernel with one
//! `statx` of the path's fd; which other targets hold a volume is kept in memory
//! ([`MountIndex`]). Every call runs on the blocking pool: mounts, unmounts, loop
//! devices and filesystem tools block, and the runtime's two workers must stay free for
//! the other calls.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use csi_proto::v1::node_server::Node;
use csi_proto::v1::node_service_capability::{Rpc, rpc::Type as Cap};
use csi_proto::v1::{self as csi, NodeServiceCapability, Topology};
use driver_contract::ids::{Location, VolumeId, validate_name};
use driver_contract::inflight::{self, InFlight};
use driver_contract::local_layout::{LocalLayout, volume_data_path};
use tonic::{Request, Response, Status};

use crate::beneath::{self, Handle, Links};
use crate::error::{Error, Result};
use crate::kind::{Kind, classify};
use crate::mountinfo::MountTable;
use crate::mounts::{Filesystem, MountIndex};
use crate::{NodeConfig, group, mounter, nfsrecover, staging};

#[derive(Debug, Clone)]
pub struct NodeService {
    config: Arc<NodeConfig>,
    inflight: InFlight,
    mounts: Arc<MountIndex>,
    /// Where local volumes' and ephemeral volumes' data is bound from (see [`data_root`]).
    local_root: Arc<Handle>,
    ephemeral_root: Arc<Handle>,
}

/// More mounts stacked at one path than this is someone mounting as fast as we unmount.
const MAX_STACKED_MOUNTS: usize = 64;
/// Busy unmounts retried, the first after unmounting what is below, the others after a
/// pause (10, 20, 40, 80 ms): a fork elsewhere in the process (mkfs, e2fsck) holds a
/// copy of every open fd until its child execs, an fd on the mount among them.
const BUSY_RETRIES: u32 = 5;

/// What a publish mounts at its target.
enum Source {
    /// A new tmpfs (memory-backed ephemeral volumes).
    Tmpfs { size_limit: u64 },
    /// Ephemeral scratch data that this publish creates.
    NewScratch,
    /// An existing directory, file or device node, bind-mounted.
    Bind(Handle),
}

impl NodeService {
    pub fn new(config: NodeConfig) -> Result<Self> {
        let ephemeral = config.state_dir.join("ephemeral");
        fs::create_dir_all(&ephemeral)
            .map_err(|e| Error::io(format!("create {}", ephemeral.display()), e))?;
        // The one read of the mount table: what an earlier run of the plugin mounted.
        let mounts = MountIndex::load(&config)?;
        tracing::info!(volume_mounts = mounts.len(), "mounts found at start");
        Ok(Self {
            local_root: Arc::new(data_root(&config.local_root)?),
            ephemeral_root: Arc::new(data_root(&ephemeral)?),
            config: Arc::new(config),
            inflight: InFlight::default(),
            mounts: Arc::new(mounts),
        })
    }

    /// Runs one call on the blocking pool, off the runtime's workers.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Self) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let node = self.clone();
        tokio::task::spawn_blocking(move || call(&node))
            .await
            .map_err(|e| Error::io("node call", std::io::Error::other(e.to_string())))?
    }

    /// Serialises calls per volume: a concurrent second call is Aborted.
    fn claim(&self, volume_id: &str) -> Result<inflight::Guard> {
        self.inflight
            .claim(volume_id, &format!("volume {volume_id}"))
            .map_err(Error::from)
    }

    fn ephemeral_dir(&self, volume_id: &str) -> PathBuf {
        self.config.state_dir.join("ephemeral").join(volume_id)
    }

    /// A target or staging path as kubelet sends it: absolute, no `..`, lexically under
    /// the kubelet directory. Returns the part below that directory, which is then
    /// walked beneath the directory's fd with no symlinks followed.
    fn kubelet_relative<'a>(&self, field: &'static str, raw: &'a str) -> Result<&'a Path> {
        require(field, raw)?;
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
        path.strip_prefix(&self.config.kubelet_dir)
            .ok()
            .filter(|rest| rest.file_name().is_some())
            .ok_or_else(|| {
                Error::invalid(
                    field,
                    format!(
                        "{raw:?} is outside the kubelet directory {}",
                        self.config.kubelet_dir.display()
                    ),
                )
            })
    }

    fn kubelet_root(&self) -> Result<Handle> {
        Handle::open_root(&self.config.kubelet_dir)
    }

    /// Opens a path below the kubelet directory; a walk that would leave it is an
    /// invalid argument of the request field that named it.
    fn beneath_kubelet(&self, field: &'static str, relative: &Path) -> Result<Handle> {
        self.kubelet_root()?
            .resolve(relative, Links::Refused)
            .map_err(|e| outside_kubelet(field, e))
    }

    /// The parent directory of a target (created if missing, beneath the kubelet
    /// directory) and the target's own name.
    fn target_parent<'a>(kubelet: &Handle, relative: &'a Path) -> Result<(Handle, &'a OsStr)> {
        let name = relative
            .file_name()
            .ok_or_else(|| Error::invalid("target_path", "names no directory"))?;
        let parent = relative.parent().unwrap_or(Path::new(""));
        let dir = kubelet
            .create_dirs(parent, Links::Refused, 0o750)
            .map_err(|e| outside_kubelet("target_path", e))?;
        Ok((dir, name))
    }

    /// The staging path of a publish request, which must hold the staged mount.
    fn staged(&self, kubelet: &Handle, volume_id: &str, raw: &str) -> Result<Handle> {
        let relative = self.kubelet_relative("staging_target_path", raw)?;
        let staging =
            kubelet.resolve(relative, Links::Refused).map_err(|e| {
                match outside_kubelet("staging_target_path", e) {
                    Error::PathMissing { .. } => not_staged(volume_id, raw),
                    other => other,
                }
            })?;
        if !staging.is_mount_root()? {
            return Err(not_staged(volume_id, raw));
        }
        Ok(staging)
    }

    /// Where the data a publish mounts comes from, opened race-free.
    fn source(
        &self,
        kubelet: &Handle,
        kind: Kind,
        req: &csi::NodePublishVolumeRequest,
    ) -> Result<Source> {
        Ok(Source::Bind(match kind {
            Kind::Ephemeral {
                memory: true,
                size_limit,
            } => return Ok(Source::Tmpfs { size_limit }),
            Kind::Ephemeral { .. } => {
                return match self
                    .ephemeral_root
                    .resolve(Path::new(&req.volume_id), Links::Refused)
                {
                    Ok(data) => Ok(Source::Bind(data)),
                    Err(Error::PathMissing { .. }) => Ok(Source::NewScratch),
                    Err(e) => Err(e),
                };
            }
            Kind::HostPath(host) => host.handle,
            Kind::LocalDirectory(path) => {
                let relative = path
                    .strip_prefix(&self.config.local_root)
                    .map_err(|_| Error::PathEscapes { path: path.clone() })?;
                self.local_root.resolve(relative, Links::Refused)?
            }
            Kind::LocalImage(_) => {
                self.staged(kubelet, &req.volume_id, &req.staging_target_path)?
            }
            Kind::Nfs(volume) => self
                .staged(kubelet, &req.volume_id, &req.staging_target_path)?
                .resolve(&volume.sub_dir, Links::Refused)
                .map_err(|e| match e {
                    Error::PathMissing { .. } => Error::NotFound(format!(
                        "{} is not in the NFS export",
                        volume.sub_dir.display()
                    )),
                    other => other,
                })?,
            Kind::LocalBlock(file) => {
                let device = staging::loop_device_of(&file).ok_or_else(|| {
                    Error::FailedPrecondition(format!("volume {} is not staged", req.volume_id))
                })?;
                beneath::open_trusted(&device)?
            }
        }))
    }

    fn publish(&self, req: csi::NodePublishVolumeRequest) -> Result<()> {
        require("volume_id", &req.volume_id)?;
        let relative = self.kubelet_relative("target_path", &req.target_path)?;
        let capability = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| Error::invalid("volume_capability", "is required"))?;
        let requested_group = group::requested(capability)?;
        let _guard = self.claim(&req.volume_id)?;
        let kind = classify(
            &self.config,
            &req.volume_id,
            &req.volume_context,
            capability,
        )?;
        let is_file =
            matches!(&kind, Kind::HostPath(h) if h.is_file) || matches!(kind, Kind::LocalBlock(_));
        // hostPath data is the administrator's (kubelet's own hostPath volumes leave its
        // ownership alone too); a read-only publish cannot be relabelled and, as
        // kubelet's fsGroup, is left as it is.
        let group = requested_group
            .filter(|_| !req.readonly && !matches!(kind, Kind::HostPath(_) | Kind::LocalBlock(_)));
        let kubelet = self.kubelet_root()?;
        let source = self.source(&kubelet, kind, &req)?;
        let (parent, name) = Self::target_parent(&kubelet, relative)?;
        match parent.child(name, Links::Refused) {
            Ok(existing) if existing.is_mount_root()? => {
                same_publish(&source, &existing, req.readonly)?;
                // CSI NodePublishVolume: a volume "already published at the specified
                // target_path but is incompatible with the specified volume_capability"
                // is ALREADY_EXISTS; another volume_mount_group is such a capability.
                if let Some(gid) = group
                    && !group::holds(&existing, gid)?
                {
                    return Err(Error::AlreadyExists(format!(
                        "{} is already published for another volume_mount_group than {gid}",
                        existing.path().display()
                    )));
                }
                return self.mounts.record(&existing, None);
            }
            Ok(_) | Err(Error::PathMissing { .. }) => {}
            Err(e) => return Err(e),
        }
        if single_writer(capability)
            && let Source::Bind(handle) = &source
            && let Some(other) = self.published_elsewhere(handle, &req)?
        {
            // SINGLE_NODE_SINGLE_WRITER: one publication on the node, at one target path.
            return Err(Error::FailedPrecondition(format!(
                "volume {} is single-writer and already published at {}",
                req.volume_id,
                other.display()
            )));
        }
        // Another target of the same volume (a second pod) with another group: the
        // spec's MUST ("SP MUST ensure that the volume_mount_group parameter is passed
        // as the group identifier") holds for the publish being made, so the root goes
        // to the newest group, as kubelet's own fsGroup change does for each pod.
        if let (Some(gid), Source::Bind(handle)) = (group, &source) {
            group::apply(handle, gid)?;
        }
        let target = if is_file {
            parent.make_file(name)?
        } else {
            parent.make_dir(name, 0o750)?
        };
        let mounted = match &source {
            Source::Tmpfs { size_limit } => {
                mounter::tmpfs(&target, *size_limit, req.readonly, group)
            }
            Source::Bind(handle) => mounter::bind(handle, &target, req.readonly),
            Source::NewScratch => {
                self.publish_scratch(&req.volume_id, &target, req.readonly, group)
            }
        };
        mounted.inspect_err(|_| {
            // Nothing may leak from a publish that failed half-way.
            let _ = parent.remove(name);
        })?;
        self.mounts.record_child(&parent, name)
    }

    /// Creates an ephemeral volume's scratch directory and binds it at the target.
    fn publish_scratch(
        &self,
        volume_id: &str,
        target: &Handle,
        read_only: bool,
        group: Option<u32>,
    ) -> Result<()> {
        let data = self.ephemeral_dir(volume_id);
        let result = fs::create_dir(&data)
            .and_then(|()| {
                fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            })
            .map_err(|e| Error::io(format!("create {}", data.display()), e))
            .and_then(|()| {
                let handle = self
                    .ephemeral_root
                    .resolve(Path::new(volume_id), Links::Refused)?;
                if let Some(gid) = group {
                    group::apply(&handle, gid)?;
                }
                mounter::bind(&handle, target, read_only)
            });
        if result.is_err() {
            let _ = fs::remove_dir_all(&data);
        }
        result
    }

    /// Another mount of the same source under the kubelet directory, other than this
    /// request's target and staging paths.
    fn published_elsewhere(
        &self,
        source: &Handle,
        req: &csi::NodePublishVolumeRequest,
    ) -> Result<Option<PathBuf>> {
        let identity = source.mount_facts()?.identity;
        let except = [
            Path::new(&req.target_path),
            Path::new(&req.staging_target_path),
        ];
        Ok(self.mounts.mounted_elsewhere(identity, &except))
    }

    /// Unmounts whatever is mounted at `name` in `dir`, stacked mounts included. Each
    /// round is one `statx` of the path's fd and one umount2; the mount table is read
    /// only when an unmount fails because of mounts below (a pod mounted inside its
    /// volume), to find and unmount those first.
    fn unmount_all(&self, dir: &Handle, name: &OsStr) -> Result<()> {
        let path = dir.path().join(name);
        let mut busy = 0;
        for _ in 0..MAX_STACKED_MOUNTS {
            // Missing, not a mount, or a symlink (never a mount this plugin made): done.
            if !dir.child_mount_facts(name)?.is_some_and(|f| f.mount_root) {
                self.mounts.forget(&path);
                return Ok(());
            }
            match mounter::unmount(&path) {
                Err(Error::Mount {
                    source: nix::errno::Errno::EBUSY,
                    ..
                }) if busy < BUSY_RETRIES => {
                    if busy == 0 {
                        self.unmount_below(&path)?;
                    } else {
                        std::thread::sleep(std::time::Duration::from_millis(5 << busy));
                    }
                    busy += 1;
                }
                other => other?,
            }
        }
        Err(Error::FailedPrecondition(format!(
            "{} still holds a mount after {MAX_STACKED_MOUNTS} unmounts",
            path.display()
        )))
    }

    /// Unmounts the mounts below `path` (not the one at it), deepest first.
    fn unmount_below(&self, path: &Path) -> Result<()> {
        for entry in mount_table()?.under(path) {
            if entry.mount_point != path {
                mounter::unmount(&entry.mount_point)?;
            }
        }
        self.mounts.forget_below(path);
        Ok(())
    }

    fn unpublish(&self, req: csi::NodeUnpublishVolumeRequest) -> Result<()> {
        require("volume_id", &req.volume_id)?;
        let relative = self.kubelet_relative("target_path", &req.target_path)?;
        let _guard = self.claim(&req.volume_id)?;
        let parent = relative.parent().unwrap_or(Path::new(""));
        match self.beneath_kubelet("target_path", parent) {
            Ok(dir) => {
                if let Some(name) = relative.file_name() {
                    self.unmount_all(&dir, name)?;
                    dir.remove(name)?;
                }
            }
            // Nothing was published there: unpublishing is done.
            Err(Error::PathMissing { .. }) => {}
            Err(e) => return Err(e),
        }
        if validate_name("volume_id", &req.volume_id).is_ok() {
            let data = self.ephemeral_dir(&req.volume_id);
            if data.exists() {
                fs::remove_dir_all(&data)
                    .map_err(|e| Error::io(format!("remove {}", data.display()), e))?;
            }
        }
        Ok(())
    }

    /// The staging directory kubelet made, opened beneath the kubelet directory.
    fn staging_dir(&self, raw: &str) -> Result<Handle> {
        let relative = self.kubelet_relative("staging_target_path", raw)?;
        let dir = self
            .beneath_kubelet("staging_target_path", relative)
            .map_err(|e| match e {
                Error::PathMissing { .. } => {
                    Error::NotFound(format!("staging path {raw} does not exist"))
                }
                other => other,
            })?;
        if dir.file_type()? != rustix::fs::FileType::Directory {
            return Err(Error::NotADirectory {
                path: PathBuf::from(raw),
            });
        }
        Ok(dir)
    }

    fn stage(&self, req: csi::NodeStageVolumeRequest) -> Result<()> {
        require("volume_id", &req.volume_id)?;
        self.kubelet_relative("staging_target_path", &req.staging_target_path)?;
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
                self.staging_dir(&req.staging_target_path).map(drop)
            }
            Kind::LocalImage(image) => {
                let dir = self.staging_dir(&req.staging_target_path)?;
                staging::stage_image(&image, &dir)
            }
            Kind::LocalBlock(file) => staging::stage_block(&file).map(drop),
            Kind::Nfs(volume) => {
                let dir = self.staging_dir(&req.staging_target_path)?;
                if !dir.is_mount_root()? {
                    volume.mount(&dir, false)?;
                    let filesystem = Filesystem {
                        fs_type: "nfs".into(),
                        source: volume.source(),
                    };
                    let mounted = self.staging_dir(&req.staging_target_path)?;
                    return self.mounts.record(&mounted, Some(filesystem));
                }
                match self.mounts.filesystem_at(&dir)? {
                    Some(m) if m.fs_type.starts_with("nfs") && m.source == volume.source() => {
                        Ok(())
                    }
                    _ => Err(Error::AlreadyExists(format!(
                        "{} already holds another mount",
                        dir.path().display()
                    ))),
                }
            }
            Kind::Ephemeral { .. } => Err(Error::invalid(
                "volume_context",
                "ephemeral volumes are not staged",
            )),
        }
    }

    fn unstage(&self, req: csi::NodeUnstageVolumeRequest) -> Result<()> {
        require("volume_id", &req.volume_id)?;
        let relative = self.kubelet_relative("staging_target_path", &req.staging_target_path)?;
        let _guard = self.claim(&req.volume_id)?;
        // The path must not lead out of the kubelet directory; gone already is fine.
        match self.beneath_kubelet("staging_target_path", relative) {
            Ok(_) | Err(Error::PathMissing { .. }) => {}
            Err(e) => return Err(e),
        }
        let parent = relative.parent().unwrap_or(Path::new(""));
        match (
            self.beneath_kubelet("staging_target_path", parent),
            relative.file_name(),
        ) {
            (Ok(dir), Some(name)) => self.unmount_all(&dir, name)?,
            (Ok(_), None) | (Err(Error::PathMissing { .. }), _) => {}
            (Err(e), _) => return Err(e),
        }
        // A block volume's loop device has no mount to take it away: detach it by its file.
        let block_file = VolumeId::parse(&req.volume_id)
            .filter(|id| matches!(&id.location, Location::Local { node } if *node == self.config.node_id))
            .map(|id| volume_data_path(&self.config.local_root, id.key.as_str(), LocalLayout::Block));
        staging::detach_block(block_file.as_deref())
    }

    fn expand(&self, req: csi::NodeExpandVolumeRequest) -> Result<i64> {
        require("volume_id", &req.volume_id)?;
        let path = existing_volume_path(&req.volume_path)?;
        let _guard = self.claim(&req.volume_id)?;
        match staging::mounted_loop_device(path)? {
            Some(device) => staging::expand_mounted(&device),
            // Directories and tmpfs have nothing to grow; their size is bookkeeping.
            None => Ok(req.capacity_range.map(|r| r.required_bytes).unwrap_or(0)),
        }
    }

    fn stats(
        &self,
        req: csi::NodeGetVolumeStatsRequest,
    ) -> Result<csi::NodeGetVolumeStatsResponse> {
        require("volume_id", &req.volume_id)?;
        let path = existing_volume_path(&req.volume_path)?;
        let mounted = beneath::mount_facts_at(path)
            .map_err(|e| Error::io(format!("statx {}", path.display()), e))?
            .mount_root;
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
        // VOLUME_CONDITION: a stale NFS handle is abnormal; the node mounts the
        // volume again in place, so the pod's next open works without an unstage.
        let recovered = if nfsrecover::is_stale(path) {
            Some(self.recover_stale_nfs(&req, path)?)
        } else {
            None
        };
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
        let volume_condition = Some(match recovered {
            Some(done) => csi::VolumeCondition {
                abnormal: true,
                message: format!("stale NFS file handle at {}: {done}", path.display()),
            },
            None => csi::VolumeCondition {
                abnormal: !mounted,
                message: if mounted {
                    "mounted".into()
                } else {
                    format!("{} is no longer a mount point", path.display())
                },
            },
        });
        Ok(csi::NodeGetVolumeStatsResponse {
            usage,
            volume_condition,
        })
    }
}

impl NodeService {
    /// Mounts a stale NFS volume at `path` again, beneath the kubelet directory.
    fn recover_stale_nfs(
        &self,
        req: &csi::NodeGetVolumeStatsRequest,
        path: &Path,
    ) -> Result<String> {
        self.kubelet_relative("volume_path", &req.volume_path)?;
        let staging = match req.staging_target_path.as_str() {
            "" => None,
            raw => {
                self.kubelet_relative("staging_target_path", raw)?;
                Some(Path::new(raw))
            }
        };
        let kubelet = self.kubelet_root()?;
        nfsrecover::remount_stale(
            (&self.config.kubelet_dir, &kubelet),
            &self.mounts,
            path,
            staging,
        )
    }
}

/// A root that volume data is bound from, opened once: a detached copy of its mount
/// ([`Handle::detached_copy`]), or where the kernel cannot copy one, the root itself.
fn data_root(path: &Path) -> Result<Handle> {
    let root = Handle::open_root(path)?;
    Ok(root.detached_copy().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "binds come from the root's own mount");
        root
    }))
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

fn outside_kubelet(field: &'static str, e: Error) -> Error {
    match e {
        Error::PathEscapes { path } => Error::invalid(
            field,
            format!(
                "{} leads outside the kubelet directory (a symlink in the way)",
                path.display()
            ),
        ),
        other => other,
    }
}

fn not_staged(volume_id: &str, staging: &str) -> Error {
    Error::FailedPrecondition(format!("volume {volume_id} is not staged at {staging}"))
}

fn single_writer(capability: &csi::VolumeCapability) -> bool {
    capability.access_mode.as_ref().is_some_and(|m| {
        m.mode == csi::volume_capability::access_mode::Mode::SingleNodeSingleWriter as i32
    })
}

/// Publishing again is fine when it would produce the same mount; otherwise AlreadyExists.
fn same_publish(source: &Source, existing: &Handle, want_read_only: bool) -> Result<()> {
    let same_source = match source {
        Source::Tmpfs { .. } => existing.fs_magic()? == TMPFS_MAGIC,
        Source::NewScratch => false,
        Source::Bind(handle) => handle.identity()? == existing.identity()?,
    };
    if same_source && existing.read_only_mount()? == want_read_only {
        return Ok(());
    }
    Err(Error::AlreadyExists(format!(
        "{} is already published with other arguments",
        existing.path().display()
    )))
}

/// `statfs.f_type` of tmpfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;

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
            self.blocking(move |node| node.stage(request.into_inner()))
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
            self.blocking(move |node| node.unstage(request.into_inner()))
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
            self.blocking(move |node| node.publish(request.into_inner()))
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
            self.blocking(move |node| node.unpublish(request.into_inner()))
                .await
                .map(|()| csi::NodeUnpublishVolumeResponse {}),
        )
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        let request = request.into_inner();
        respond(
            "NodeGetVolumeStats",
            self.blocking(move |node| node.stats(request)).await,
        )
    }

    async fn node_expand_volume(
        &self,
        request: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        let request = request.into_inner();
        let result = self.blocking(move |node| node.expand(request)).await;
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
            // fsGroup is applied here (group::apply), not by kubelet's recursive chown.
            Cap::VolumeMountGroup,
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
