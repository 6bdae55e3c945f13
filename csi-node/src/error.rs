//! The node plugin's errors, named by what went wrong and carrying the object it went
//! wrong with; [`Error::code`] decides each one's gRPC code, once, with no catch-all.
//!
//! The code policy: a request the caller can correct is InvalidArgument; a volume, path
//! or export that is not there is NotFound; a target or staging path that already holds
//! something else is AlreadyExists; a step the CO has not taken yet (stage before
//! publish) or a host that cannot do it is FailedPrecondition; what the administrator
//! forbids is PermissionDenied; a concurrent call on the same volume is Aborted; an NFS
//! server that cannot be reached is Unavailable; everything else is Internal.

use std::path::PathBuf;

use driver_contract::RequestError;
use nix::errno::Errno;
use stowage_common::tool::ToolError;
use tonic::{Code, Status};

/// Everything a node call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is missing or malformed.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The request field, as the spec names it.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A rule of the driver contract refused the request (a malformed capability or
    /// ID, a capacity, another call in flight on the same volume).
    #[error(transparent)]
    Refused(#[from] RequestError),
    /// A local volume ID names another node (or no local volume at all).
    #[error("volume {volume_id} does not live on node {node}")]
    VolumeNotOnNode {
        /// The volume asked about.
        volume_id: String,
        /// This node.
        node: String,
    },
    /// The volume ID is not one of Stowage's.
    #[error("volume {volume_id} is not a Stowage volume")]
    NotAStowageVolume {
        /// The volume asked about.
        volume_id: String,
    },
    /// A volume this node should hold has no data under the local root.
    #[error("volume {volume_id} has no data on this node")]
    VolumeDataMissing {
        /// The volume asked about.
        volume_id: String,
    },
    /// NodeGetVolumeStats of a volume this node knows nothing of.
    #[error("volume {volume_id} is not on this node")]
    VolumeUnknown {
        /// The volume asked about.
        volume_id: String,
    },
    /// The volume path of a stats or expand call does not exist.
    #[error("volume path {} does not exist", path.display())]
    VolumePathMissing {
        /// The request's volume_path.
        path: PathBuf,
    },
    /// The staging path kubelet should have made does not exist.
    #[error("staging path {} does not exist", path.display())]
    StagingPathMissing {
        /// The request's staging_target_path.
        path: PathBuf,
    },
    /// The subdirectory an NFS volume names is not in the mounted export.
    #[error("{} is not in the NFS export", sub_dir.display())]
    NfsSubDirMissing {
        /// The volume context's subDir.
        sub_dir: PathBuf,
    },
    /// A publish that needs the volume staged found it not staged.
    #[error("volume {volume_id} is not staged at {}", staging.display())]
    NotStaged {
        /// The volume being published.
        volume_id: String,
        /// Where it should be staged.
        staging: PathBuf,
    },
    /// The staging path holds a mount of something other than this volume.
    #[error("{} already holds another mount", path.display())]
    StagingInUse {
        /// The staging path.
        path: PathBuf,
    },
    /// The target holds this or another volume published with other arguments.
    #[error("{} is already published with other arguments", target.display())]
    TargetInUse {
        /// The target path.
        target: PathBuf,
    },
    /// The target holds the volume published for another volume_mount_group.
    #[error("{} is already published for another volume_mount_group than {gid}", target.display())]
    TargetHasOtherGroup {
        /// The target path.
        target: PathBuf,
        /// The group this request asks for.
        gid: u32,
    },
    /// A SINGLE_NODE_SINGLE_WRITER volume is already published at another target.
    #[error("volume {volume_id} is single-writer and already published at {}", other.display())]
    SingleWriterInUse {
        /// The volume being published.
        volume_id: String,
        /// Where it is published already.
        other: PathBuf,
    },
    /// Something mounts at a path as fast as the plugin unmounts it.
    #[error("{} still holds a mount after {unmounts} unmounts", path.display())]
    MountsKeepComing {
        /// The path being unmounted.
        path: PathBuf,
        /// How many unmounts were made.
        unmounts: usize,
    },
    /// A hostPath volume names a path under no allowed prefix.
    #[error("host path {} is not under an allowed prefix (--host-path-allow)", path.display())]
    HostPathNotAllowed {
        /// The volume context's path.
        path: PathBuf,
    },
    /// A hostPath volume's path leads out of its allowed prefix through a symlink.
    #[error("host path {} resolves outside the allowed prefix {} (a symlink leads out)", path.display(), prefix.display())]
    HostPathEscapes {
        /// The volume context's path.
        path: PathBuf,
        /// The prefix it left.
        prefix: PathBuf,
    },
    /// A hostPath volume's path does not exist (and its type does not create it).
    #[error("host path {} does not exist", path.display())]
    HostPathMissing {
        /// The volume context's path.
        path: PathBuf,
    },
    /// A hostPath volume's path is not of the type its hostPathType promises.
    #[error("host path {} is not {expected}", path.display())]
    HostPathWrongType {
        /// The volume context's path.
        path: PathBuf,
        /// What the type promised ("a directory", "a socket"...).
        expected: &'static str,
    },
    /// The NFS server's name does not resolve.
    #[error("cannot resolve NFS server {host}")]
    NfsServerUnresolved {
        /// The server's host name.
        host: String,
    },
    /// The kernel has no NFS client.
    #[error("this node's kernel has no NFS client (mount: ENODEV)")]
    NoNfsClient,
    /// The NFS server refused the mount.
    #[error("the NFS server refused {export}: {errno}")]
    NfsRefused {
        /// `host:/share`.
        export: String,
        /// The mount's error.
        errno: Errno,
    },
    /// The NFS server did not answer.
    #[error("NFS server for {export} unreachable: {errno}")]
    NfsUnreachable {
        /// `host:/share`.
        export: String,
        /// The mount's error.
        errno: Errno,
    },
    /// A stale volume path to recover is not an NFS mount.
    #[error("{} is not an NFS mount", path.display())]
    NotNfsMount {
        /// The volume path.
        path: PathBuf,
    },
    /// No staged mount of the export holds a stale NFS volume's bind.
    #[error("no staged mount of {export} holds {}", target.display())]
    NfsExportNotStaged {
        /// The export the bind shows.
        export: String,
        /// The volume path.
        target: PathBuf,
    },
    /// Growing a mounted ext4 needs CAP_SYS_RESOURCE, which this process lacks.
    #[error(
        "growing the mounted filesystem on {} needs CAP_SYS_RESOURCE, which this node plugin lacks; \
         it will grow when the volume is next staged",
        device.display()
    )]
    GrowthNeedsCapability {
        /// The loop device.
        device: PathBuf,
    },
    /// The kernel reported a device size that is not a number of sectors.
    #[error("size of {} is {text:?} in sysfs, not a number of sectors", device.display())]
    DeviceSizeUnreadable {
        /// The device.
        device: PathBuf,
        /// What sysfs said.
        text: String,
    },
    /// A host program (e2fsck, resize2fs) failed.
    #[error("{} on {}: {source}", source_program(source), device.display())]
    Tool {
        /// The device or file it ran on.
        device: PathBuf,
        /// How it failed: its exit status and stderr.
        source: ToolError,
    },
    /// A trusted root (kubelet directory, allow-listed prefix, local root) cannot be opened.
    #[error("{} cannot be opened: {source}", root.display())]
    RootUnavailable {
        /// The root.
        root: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A path below a root does not exist.
    #[error("{} does not exist", path.display())]
    PathMissing {
        /// The path.
        path: PathBuf,
    },
    /// Resolving the path would leave its root, or meet a symlink it may not follow.
    #[error("{} leads outside its allowed directory (a symlink or mount in the way)", path.display())]
    PathEscapes {
        /// The path.
        path: PathBuf,
    },
    /// A path was renamed while it was being walked; a retry will walk it again.
    #[error("{}: renamed while being resolved, retry", path.display())]
    RenamedDuringWalk {
        /// The path.
        path: PathBuf,
    },
    /// A directory was expected.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A regular file was expected.
    #[error("{} is not a regular file", path.display())]
    NotARegularFile {
        /// The path.
        path: PathBuf,
    },
    /// A node call's task ended without an answer (it panicked).
    #[error("node call ended without an answer: {reason}")]
    CallLost {
        /// The runtime's account of it.
        reason: String,
    },
    /// A filesystem call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, to what.
        context: String,
        /// The kernel's error.
        source: std::io::Error,
    },
    /// A mount or unmount failed.
    #[error("{context}: {source}")]
    Mount {
        /// What was being mounted where.
        context: String,
        /// The kernel's error.
        source: Errno,
    },
}

fn source_program(e: &ToolError) -> &'static str {
    match e {
        ToolError::NotInstalled(program) => program.name,
        ToolError::Spawn { program, .. } => program,
        ToolError::Failed(failure) => failure.program,
    }
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A request field that is missing or malformed.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    /// A filesystem call that failed.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// A mount call that failed.
    pub fn mount(context: impl Into<String>, source: Errno) -> Self {
        Self::Mount {
            context: context.into(),
            source,
        }
    }

    /// The gRPC code of this error: every variant listed, no catch-all.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::Refused(e) => e.code(),
            Self::RenamedDuringWalk { .. } => Code::Aborted,
            Self::VolumeNotOnNode { .. }
            | Self::NotAStowageVolume { .. }
            | Self::VolumeDataMissing { .. }
            | Self::VolumeUnknown { .. }
            | Self::VolumePathMissing { .. }
            | Self::StagingPathMissing { .. }
            | Self::NfsSubDirMissing { .. }
            | Self::HostPathMissing { .. }
            | Self::PathMissing { .. } => Code::NotFound,
            Self::StagingInUse { .. }
            | Self::TargetInUse { .. }
            | Self::TargetHasOtherGroup { .. } => Code::AlreadyExists,
            Self::NotStaged { .. }
            | Self::SingleWriterInUse { .. }
            | Self::MountsKeepComing { .. }
            | Self::HostPathWrongType { .. }
            | Self::NoNfsClient
            | Self::NotNfsMount { .. }
            | Self::NfsExportNotStaged { .. }
            | Self::RootUnavailable { .. }
            | Self::NotADirectory { .. }
            | Self::NotARegularFile { .. } => Code::FailedPrecondition,
            Self::HostPathNotAllowed { .. }
            | Self::HostPathEscapes { .. }
            | Self::PathEscapes { .. }
            | Self::NfsRefused { .. }
            | Self::GrowthNeedsCapability { .. } => Code::PermissionDenied,
            Self::NfsServerUnresolved { .. } | Self::NfsUnreachable { .. } => Code::Unavailable,
            Self::Io { source, .. } if source.raw_os_error() == Some(Errno::ENOSPC as i32) => {
                Code::ResourceExhausted
            }
            Self::Io { .. }
            | Self::Mount { .. }
            | Self::Tool { .. }
            | Self::DeviceSizeUnreadable { .. }
            | Self::CallLost { .. } => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = e.code();
        if code == Code::Internal {
            tracing::warn!(error = %e, "node call failed");
        }
        Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_common::tool::ToolFailure;

    #[test]
    fn every_variant_has_its_code() {
        let p = || PathBuf::from("/x");
        let v = || "v".to_string();
        let cases = [
            (Error::invalid("target_path", "x"), Code::InvalidArgument),
            (
                Error::from(RequestError::OperationPending { what: "x".into() }),
                Code::Aborted,
            ),
            (
                Error::from(RequestError::invalid("volume_id", "x")),
                Code::InvalidArgument,
            ),
            (Error::RenamedDuringWalk { path: p() }, Code::Aborted),
            (
                Error::VolumeNotOnNode {
                    volume_id: v(),
                    node: "n".into(),
                },
                Code::NotFound,
            ),
            (Error::NotAStowageVolume { volume_id: v() }, Code::NotFound),
            (Error::VolumeDataMissing { volume_id: v() }, Code::NotFound),
            (Error::VolumeUnknown { volume_id: v() }, Code::NotFound),
            (Error::VolumePathMissing { path: p() }, Code::NotFound),
            (Error::StagingPathMissing { path: p() }, Code::NotFound),
            (Error::NfsSubDirMissing { sub_dir: p() }, Code::NotFound),
            (Error::HostPathMissing { path: p() }, Code::NotFound),
            (Error::PathMissing { path: p() }, Code::NotFound),
            (Error::StagingInUse { path: p() }, Code::AlreadyExists),
            (Error::TargetInUse { target: p() }, Code::AlreadyExists),
            (
                Error::TargetHasOtherGroup {
                    target: p(),
                    gid: 5,
                },
                Code::AlreadyExists,
            ),
            (
                Error::NotStaged {
                    volume_id: v(),
                    staging: p(),
                },
                Code::FailedPrecondition,
            ),
            (
                Error::SingleWriterInUse {
                    volume_id: v(),
                    other: p(),
                },
                Code::FailedPrecondition,
            ),
            (
                Error::MountsKeepComing {
                    path: p(),
                    unmounts: 64,
                },
                Code::FailedPrecondition,
            ),
            (
                Error::HostPathWrongType {
                    path: p(),
                    expected: "a socket",
                },
                Code::FailedPrecondition,
            ),
            (Error::NoNfsClient, Code::FailedPrecondition),
            (Error::NotNfsMount { path: p() }, Code::FailedPrecondition),
            (
                Error::NfsExportNotStaged {
                    export: "h:/e".into(),
                    target: p(),
                },
                Code::FailedPrecondition,
            ),
            (
                Error::RootUnavailable {
                    root: p(),
                    source: std::io::ErrorKind::NotFound.into(),
                },
                Code::FailedPrecondition,
            ),
            (Error::NotADirectory { path: p() }, Code::FailedPrecondition),
            (
                Error::NotARegularFile { path: p() },
                Code::FailedPrecondition,
            ),
            (
                Error::HostPathNotAllowed { path: p() },
                Code::PermissionDenied,
            ),
            (
                Error::HostPathEscapes {
                    path: p(),
                    prefix: p(),
                },
                Code::PermissionDenied,
            ),
            (Error::PathEscapes { path: p() }, Code::PermissionDenied),
            (
                Error::NfsRefused {
                    export: "h:/e".into(),
                    errno: Errno::EACCES,
                },
                Code::PermissionDenied,
            ),
            (
                Error::GrowthNeedsCapability { device: p() },
                Code::PermissionDenied,
            ),
            (
                Error::NfsServerUnresolved { host: "h".into() },
                Code::Unavailable,
            ),
            (
                Error::NfsUnreachable {
                    export: "h:/e".into(),
                    errno: Errno::ETIMEDOUT,
                },
                Code::Unavailable,
            ),
            (
                Error::io("x", std::io::Error::from_raw_os_error(28)),
                Code::ResourceExhausted,
            ),
            (Error::io("x", std::io::Error::other("x")), Code::Internal),
            (Error::mount("x", Errno::EPERM), Code::Internal),
            (
                Error::Tool {
                    device: p(),
                    source: ToolError::Failed(ToolFailure {
                        program: "resize2fs",
                        status: Some(1),
                        stderr: "Permission denied".into(),
                    }),
                },
                Code::Internal,
            ),
            (
                Error::DeviceSizeUnreadable {
                    device: p(),
                    text: "lots".into(),
                },
                Code::Internal,
            ),
            (Error::CallLost { reason: "x".into() }, Code::Internal),
        ];
        for (error, code) in cases {
            let shown = error.to_string();
            assert_eq!(Status::from(error).code(), code, "{shown}");
        }
    }
}
