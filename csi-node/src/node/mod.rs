//! The CSI Node service. Whether a path is mounted is asked of the kernel with one
//! `statx` of the path's fd; which other targets hold a volume is kept in memory
//! ([`MountIndex`]). Every call runs on the blocking pool: mounts, unmounts, loop
//! devices and filesystem tools block, and the runtime's thread must stay free for the
//! other calls. Every mount effect goes through the service's [`Mounts`], so the
//! handlers' rules are unit-tested against a recording fake (`tests.rs`).

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
use crate::host::{HostMounts, Mounts};
use crate::kind::{Kind, classify};
use crate::mounts::{Filesystem, MountIndex};
use crate::{NodeConfig, group, nfsrecover, staging};

#[cfg(test)]
mod tests;

/// The CSI Node service of this node.
///
/// The host's effects are held as `Arc<dyn Mounts>` rather than a type parameter: each
/// is a syscall or a program run, next to which a virtual call costs nothing, and the
/// service's type (which `stowage` and `node_routes` name) stays one type.
#[derive(Debug, Clone)]
pub struct NodeService {
    config: Arc<NodeConfig>,
    inflight: InFlight,
    host: Arc<dyn Mounts>,
    index: Arc<MountIndex>,
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
    /// The service over this host's mounts, loop devices and tools.
    pub fn new(config: NodeConfig) -> Result<Self> {
        Self::with_mounts(config, Arc::new(HostMounts))
    }

    /// The service over `host`'s effects.
    pub fn with_mounts(config: NodeConfig, host: Arc<dyn Mounts>) -> Result<Self> {
        let ephemeral = config.state_dir.join("ephemeral");
        fs::create_dir_all(&ephemeral)
            .map_err(|e| Error::io(format!("create {}", ephemeral.display()), e))?;
        // The one read of the mount table: what an earlier run of the plugin mounted.
        let index = MountIndex::load(&config)?;
        tracing::info!(volume_mounts = index.len(), "mounts found at start");
        Ok(Self {
            local_root: Arc::new(data_root(&*host, &config.local_root)?),
            ephemeral_root: Arc::new(data_root(&*host, &ephemeral)?),
            config: Arc::new(config),
            inflight: InFlight::default(),
            host,
            index: Arc::new(index),
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
            .map_err(|e| Error::CallLost {
                reason: e.to_string(),
            })?
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
        if !self.host.facts(&staging)?.mount_root {
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
                    Error::PathMissing { .. } => Error::NfsSubDirMissing {
                        sub_dir: volume.sub_dir.clone(),
                    },
                    other => other,
                })?,
            Kind::LocalBlock(file) => {
                let attached = self
                    .host
                    .loop_device_of(&file)
                    .ok_or_else(|| not_staged(&req.volume_id, &req.staging_target_path))?;
                beneath::open_trusted(&attached.device)?
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
            Ok(existing) if self.host.facts(&existing)?.mount_root => {
                // CSI NodePublishVolume: published already with the same arguments is
                // success; with others, ALREADY_EXISTS.
                self.same_publish(&source, &existing, req.readonly)?;
                // CSI NodePublishVolume: a volume "already published at the specified
                // target_path but is incompatible with the specified volume_capability"
                // is ALREADY_EXISTS; another volume_mount_group is such a capability.
                if let Some(gid) = group
                    && !group::holds(self.published_root(&source, &existing), gid)?
                {
                    return Err(Error::TargetHasOtherGroup {
                        target: existing.path().into(),
                        gid,
                    });
                }
                let facts = self.host.facts(&existing)?;
                self.index.record(existing.path(), facts, None);
                return Ok(());
            }
            Ok(_) | Err(Error::PathMissing { .. }) => {}
            Err(e) => return Err(e),
        }
        if single_writer(capability)
            && let Source::Bind(handle) = &source
            && let Some(other) = self.published_elsewhere(handle, &req)?
        {
            // SINGLE_NODE_SINGLE_WRITER: one publication on the node, at one target path.
            return Err(Error::SingleWriterInUse {
                volume_id: req.volume_id.clone(),
                other,
            });
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
                self.host.tmpfs(&target, *size_limit, req.readonly, group)
            }
            Source::Bind(handle) => self.host.bind(handle, &target, req.readonly),
            Source::NewScratch => {
                self.publish_scratch(&req.volume_id, &target, req.readonly, group)
            }
        };
        mounted.inspect_err(|_| {
            // Nothing may leak from a publish that failed half-way.
            let _ = parent.remove(name);
        })?;
        self.record_child(&parent, name)
    }

    /// Publishing again is fine when it would produce the same mount; otherwise the
    /// target is in use.
    fn same_publish(&self, source: &Source, existing: &Handle, want_read_only: bool) -> Result<()> {
        let same_source = match source {
            Source::Tmpfs { .. } => self.host.fs_magic(existing)? == TMPFS_MAGIC,
            Source::NewScratch => false,
            Source::Bind(handle) => {
                self.host.facts(handle)?.identity == self.host.facts(existing)?.identity
            }
        };
        if same_source && self.host.read_only(existing)? == want_read_only {
            return Ok(());
        }
        Err(Error::TargetInUse {
            target: existing.path().into(),
        })
    }

    /// The root directory a publish shows at its target: a bind's source (the same
    /// file as the target's mount root, as [`Self::same_publish`] checked), or the
    /// target's own tmpfs.
    fn published_root<'a>(&self, source: &'a Source, existing: &'a Handle) -> &'a Handle {
        match source {
            Source::Bind(handle) => handle,
            Source::Tmpfs { .. } | Source::NewScratch => existing,
        }
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
                self.host.bind(&handle, target, read_only)
            });
        if result.is_err() {
            let _ = fs::remove_dir_all(&data);
        }
        result
    }

    /// Records the mount now at `name` in `dir` in the index, without opening it (see
    /// [`Handle::child_mount_facts`]); forgets the path if nothing is mounted there.
    fn record_child(&self, dir: &Handle, name: &OsStr) -> Result<()> {
        let point = dir.path().join(name);
        match self.host.child_facts(dir, name)? {
            Some(facts) if facts.mount_root => self.index.record(&point, facts, None),
            _ => self.index.forget(&point),
        }
        Ok(())
    }

    /// Another mount of the same source under the kubelet directory, other than this
    /// request's target and staging paths.
    fn published_elsewhere(
        &self,
        source: &Handle,
        req: &csi::NodePublishVolumeRequest,
    ) -> Result<Option<PathBuf>> {
        let identity = self.host.facts(source)?.identity;
        let except = [
            Path::new(&req.target_path),
            Path::new(&req.staging_target_path),
        ];
        Ok(self
            .index
            .mounted_elsewhere(identity, &except, |p| self.host.facts_at(p)))
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
            if !self
                .host
                .child_facts(dir, name)?
                .is_some_and(|f| f.mount_root)
            {
                self.index.forget(&path);
                return Ok(());
            }
            match self.host.unmount(&path) {
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
        Err(Error::MountsKeepComing {
            path,
            unmounts: MAX_STACKED_MOUNTS,
        })
    }

    /// Unmounts the mounts below `path` (not the one at it), deepest first.
    fn unmount_below(&self, path: &Path) -> Result<()> {
        for entry in self.host.table()?.under(path) {
            if entry.mount_point != path {
                self.host.unmount(&entry.mount_point)?;
            }
        }
        self.index.forget_below(path);
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
            // CSI NodeUnpublishVolume: a target that does not exist is success (idempotent).
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
                Error::PathMissing { .. } => Error::StagingPathMissing { path: raw.into() },
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
                staging::stage_image(&*self.host, &image, &dir)
            }
            Kind::LocalBlock(file) => staging::stage_block(&*self.host, &file).map(drop),
            Kind::Nfs(volume) => self.stage_nfs(&volume, &req.staging_target_path),
            Kind::Ephemeral { .. } => Err(Error::invalid(
                "volume_context",
                "ephemeral volumes are not staged",
            )),
        }
    }

    /// Mounts an NFS export at the staging path, once.
    fn stage_nfs(&self, volume: &crate::nfsmount::NfsVolume, raw: &str) -> Result<()> {
        let dir = self.staging_dir(raw)?;
        let facts = self.host.facts(&dir)?;
        if !facts.mount_root {
            volume.mount(&*self.host, &dir, false)?;
            let filesystem = Filesystem {
                fs_type: "nfs".into(),
                source: volume.source(),
            };
            let mounted = self.staging_dir(raw)?;
            let facts = self.host.facts(&mounted)?;
            self.index.record(mounted.path(), facts, Some(filesystem));
            return Ok(());
        }
        // CSI NodeStageVolume: staged already with the same export is success; anything
        // else mounted there is ALREADY_EXISTS.
        match self.index.filesystem_at(dir.path(), facts) {
            Some(m) if m.fs_type.starts_with("nfs") && m.source == volume.source() => Ok(()),
            _ => Err(Error::StagingInUse {
                path: dir.path().into(),
            }),
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
        // CSI NodeUnstageVolume: a staging path that is gone or holds no mount is success.
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
        staging::detach_block(&*self.host, block_file.as_deref())
    }

    fn expand(&self, req: csi::NodeExpandVolumeRequest) -> Result<i64> {
        require("volume_id", &req.volume_id)?;
        let path = existing_volume_path(&req.volume_path)?;
        let _guard = self.claim(&req.volume_id)?;
        match self.host.mounted_loop_device(path)? {
            Some(device) => staging::expand_mounted(&*self.host, &device),
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
        let mounted = self
            .host
            .facts_at(path)
            .map_err(|e| Error::io(format!("statx {}", path.display()), e))?
            .mount_root;
        // CSI NodeGetVolumeStats: a volume this node does not know is NOT_FOUND. It
        // knows a Stowage ID, an ephemeral volume with data here, or whatever is
        // mounted at the path.
        let known = VolumeId::parse(&req.volume_id).is_some()
            || mounted
            || (validate_name("volume_id", &req.volume_id).is_ok()
                && self.ephemeral_dir(&req.volume_id).is_dir());
        if !known {
            return Err(Error::VolumeUnknown {
                volume_id: req.volume_id.clone(),
            });
        }
        // VOLUME_CONDITION: a stale NFS handle is abnormal; the node mounts the
        // volume again in place, so the pod's next open works without an unstage.
        let (stat, recovered) = match self.host.usage(path) {
            Err(nix::errno::Errno::ESTALE) => {
                let done = self.recover_stale_nfs(&req, path)?;
                (self.host.usage(path), Some(done))
            }
            other => (other, None),
        };
        let stat = stat.map_err(|e| Error::io(format!("statvfs {}", path.display()), e.into()))?;
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
            usage: usage(&stat),
            volume_condition,
        })
    }
}

/// The bytes and inodes of a volume, as NodeGetVolumeStats reports them.
fn usage(stat: &crate::host::Usage) -> Vec<csi::VolumeUsage> {
    let fragment = u128::from(stat.fragment_size);
    let clamp = |n: u128| i64::try_from(n).unwrap_or(i64::MAX);
    let total = u128::from(stat.blocks) * fragment;
    let free = u128::from(stat.blocks_free) * fragment;
    let available = u128::from(stat.blocks_available) * fragment;
    vec![
        csi::VolumeUsage {
            available: clamp(available),
            total: clamp(total),
            used: clamp(total.saturating_sub(free)),
            unit: csi::volume_usage::Unit::Bytes as i32,
        },
        csi::VolumeUsage {
            available: clamp(u128::from(stat.files_available)),
            total: clamp(u128::from(stat.files)),
            used: clamp(u128::from(stat.files.saturating_sub(stat.files_free))),
            unit: csi::volume_usage::Unit::Inodes as i32,
        },
    ]
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
            &*self.host,
            (&self.config.kubelet_dir, &kubelet),
            &self.index,
            path,
            staging,
        )
    }
}

/// A root that volume data is bound from, opened once: a detached copy of its mount
/// ([`Handle::detached_copy`]), or where the kernel cannot copy one, the root itself.
fn data_root(host: &dyn Mounts, path: &Path) -> Result<Handle> {
    let root = Handle::open_root(path)?;
    Ok(host.detached_copy(&root).unwrap_or_else(|e| {
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
        return Err(Error::VolumePathMissing { path: path.into() });
    }
    Ok(path)
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
    Error::NotStaged {
        volume_id: volume_id.into(),
        staging: staging.into(),
    }
}

fn single_writer(capability: &csi::VolumeCapability) -> bool {
    capability.access_mode.as_ref().is_some_and(|m| {
        m.mode == csi::volume_capability::access_mode::Mode::SingleNodeSingleWriter as i32
    })
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
    /// CSI NodeStageVolume: the volume already staged at the path is success; another
    /// mount there is ALREADY_EXISTS.
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

    /// CSI NodeUnstageVolume: a staging path that is gone or holds no mount is success.
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

    /// CSI NodePublishVolume: the same publication again is success; the target holding
    /// it with other arguments is ALREADY_EXISTS; a volume that needs staging and is
    /// not staged is FAILED_PRECONDITION.
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

    /// CSI NodeUnpublishVolume: a target that is not mounted, or gone, is success.
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

    /// CSI NodeGetVolumeStats: a volume this node does not know is NOT_FOUND; with
    /// VOLUME_CONDITION, a volume no longer mounted (or a stale NFS handle) is abnormal.
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

    /// CSI NodeExpandVolume: returns the volume's capacity; what has nothing to grow
    /// (a directory, a tmpfs) answers the requested size.
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

    /// CSI NodeGetCapabilities: the same set from every instance.
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

    /// CSI NodeGetInfo: this node's ID, volume limit and topology segment.
    async fn node_get_info(
        &self,
        _: Request<csi::NodeGetInfoRequest>,
    ) -> Result<Response<csi::NodeGetInfoResponse>, Status> {
        Ok(Response::new(csi::NodeGetInfoResponse {
            node_id: self.config.node_id.clone(),
            max_volumes_per_node: self.config.max_volumes,
            accessible_topology: Some(Topology {
                segments: HashMap::from([(
                    driver_contract::TOPOLOGY_NODE_KEY.to_string(),
                    self.config.node_id.clone(),
                )]),
            }),
        }))
    }
}
