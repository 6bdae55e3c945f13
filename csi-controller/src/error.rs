//! The crate's error type and the one place that decides every gRPC status code.
//!
//! Variants say what went wrong and carry the object it went wrong with; the code a
//! client sees is chosen in [`Error::code`] alone, an exhaustive match (no wildcard),
//! and every NFS status is listed in `nfs_code`. The policy, as the CSI spec asks:
//! InvalidArgument the request is malformed (fix it); NotFound an object it names does
//! not exist; AlreadyExists a name is taken by something else; FailedPrecondition the
//! system is not in the state the call needs (change that first); OutOfRange no size
//! meets the capacity asked; Aborted another call for the object is in flight, or a
//! token is stale (retry); ResourceExhausted no room or no place (retry elsewhere or
//! later); Unavailable the server is unreachable (retry); Internal a failure here.

use driver_contract::RequestError;
use tonic::{Code, Status};

use crate::params::{MutableParamError, ParamError};

use nfs_session::{NfsError, nfsstat3};
use stowage_common::tool::ToolError;

/// Everything a controller call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is missing or malformed.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The request field, as the CSI spec names it.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// CreateVolume's parameters (its StorageClass's) are not ones the driver takes.
    #[error("parameters: {0}")]
    Parameters(#[from] ParamError),
    /// The mutable parameters (a VolumeAttributesClass's) are not ones the volume takes.
    #[error("mutable_parameters: {0}")]
    MutableParameters(#[from] MutableParamError),
    /// The volume the request names does not exist here (or its ID is not one this
    /// driver issues).
    #[error("volume {id} does not exist")]
    VolumeNotFound {
        /// The volume ID as the request gave it.
        id: String,
    },
    /// The snapshot the request names does not exist.
    #[error("snapshot {id} does not exist")]
    SnapshotNotFound {
        /// The snapshot ID as the request gave it.
        id: String,
    },
    /// The group snapshot the request names does not exist.
    #[error("group snapshot {id} does not exist")]
    GroupSnapshotNotFound {
        /// The group snapshot ID as the request gave it.
        id: String,
    },
    /// CreateVolume's source volume does not exist (where this controller can reach it).
    #[error("source volume {id} does not exist")]
    SourceVolumeNotFound {
        /// The source's volume ID.
        id: String,
    },
    /// CreateVolume's source snapshot does not exist.
    #[error("source snapshot {id} does not exist")]
    SourceSnapshotNotFound {
        /// The source's snapshot ID.
        id: String,
    },
    /// ControllerPublish to a node that does not hold the local volume.
    #[error("node {node} does not hold local volume {volume}")]
    NotOnNode {
        /// The node the request names.
        node: String,
        /// The local volume's ID.
        volume: String,
    },
    /// The data a record names is gone from the NFS share.
    #[error("{what} data {path} is gone")]
    DataGone {
        /// Whose data: "source" (a clone's) or "volume" (a snapshot's).
        what: &'static str,
        /// Its path on the share.
        path: String,
    },
    /// The name is taken by an object with other properties than the request's.
    #[error("{kind} {name} exists {conflict}")]
    NameTaken {
        /// "volume", "snapshot" or "group snapshot".
        kind: &'static str,
        /// The name the request gave.
        name: String,
        /// How the existing object differs.
        conflict: String,
    },
    /// The volume is published to the node already, with other options.
    #[error("volume {volume} is published to node {node} with other options")]
    PublishedOtherwise {
        /// The volume ID.
        volume: String,
        /// The node it is published to.
        node: String,
    },
    /// The volume cannot be published as asked (a single-node volume elsewhere).
    #[error("volume {volume} {reason}")]
    NotPublishable {
        /// The volume ID.
        volume: String,
        /// Why not.
        reason: String,
    },
    /// DeleteVolume of a volume still published to nodes.
    #[error("volume {id} is still published to {}", nodes.join(", "))]
    VolumeInUse {
        /// The volume ID.
        id: String,
        /// The nodes it is published to.
        nodes: Vec<String>,
    },
    /// The local volume lives on another node than this controller serves.
    #[error("the volume lives on node {node}; this controller serves {}", serves_text(serves.as_deref()))]
    OtherNode {
        /// The node in the volume's ID.
        node: String,
        /// The node whose local volumes this controller serves, if any.
        serves: Option<String>,
    },
    /// DeleteSnapshot of a member of a group snapshot: the group goes as a whole.
    #[error("snapshot {id} belongs to group snapshot {group}: delete the group")]
    SnapshotInGroup {
        /// The snapshot ID.
        id: String,
        /// The group snapshot ID.
        group: String,
    },
    /// A quota volume on a root without enforced project quotas.
    #[error("quota volume on node {node} without project quotas: {why}")]
    QuotaUnavailable {
        /// This node.
        node: String,
        /// Why the root has none.
        why: String,
    },
    /// A path `xfs_quota -c` cannot be given (it splits its command on whitespace).
    #[error(
        "{path} cannot be named to xfs_quota: quota volumes need a local root whose path has no whitespace"
    )]
    QuotaPathUnnameable {
        /// The path.
        path: String,
    },
    /// Another process has the local root open.
    #[error("another process holds {lock} ({errno}): one controller per local root")]
    RootHeld {
        /// The lock file.
        lock: String,
        /// What flock said.
        errno: String,
    },
    /// A clone or restore source holds more than the capacity range's limit.
    #[error("the source holds {source_bytes} bytes, more than limit_bytes {limit}")]
    SourceTooLarge {
        /// The source's size.
        source_bytes: i64,
        /// The request's limit_bytes.
        limit: i64,
    },
    /// ControllerExpandVolume with a limit below the volume's size.
    #[error("volume is {capacity} bytes and cannot shrink to {limit}")]
    CannotShrink {
        /// The volume's size.
        capacity: i64,
        /// The request's limit_bytes.
        limit: i64,
    },
    /// Refused by a rule of the driver contract: a capacity range no volume of the
    /// kind can meet, or another call in flight on the same object. (Its malformed
    /// fields arrive as [`Error::InvalidArgument`].)
    #[error(transparent)]
    Refused(RequestError),
    /// A list call's starting_token is not one this driver issued (or went stale).
    #[error("starting_token {token:?} is not a token this driver issued")]
    StaleToken {
        /// The token as given.
        token: String,
    },
    /// The node's local root lacks the free space the volume needs.
    #[error("node {node} has less than {bytes} bytes free")]
    NoSpace {
        /// This node.
        node: String,
        /// The bytes needed.
        bytes: i64,
    },
    /// Every XFS project id a quota volume could take is in use.
    #[error("every XFS project id is in use")]
    ProjectIdsExhausted,
    /// The requisite topologies exclude the only node a local volume can go to.
    #[error(
        "no requisite topology admits node {node}, the only node this controller can place a local volume on"
    )]
    TopologyUnreachable {
        /// This node.
        node: String,
    },
    /// The node has as many volumes published as its attach limit allows.
    #[error("node {node} already has {published} volumes published, its limit")]
    AttachLimit {
        /// The node.
        node: String,
        /// Volumes published to it.
        published: usize,
    },
    /// ControllerPublish/Unpublish on a controller started without attach bookkeeping.
    #[error("ControllerPublish/Unpublish: start the controller with --enable-attach")]
    AttachDisabled,
    /// Local filesystem failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, on which path.
        context: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// A metadata file could not be decoded (or a record encoded).
    #[error("corrupt metadata {path}: {reason}")]
    CorruptMetadata {
        /// The file, or where the record was.
        path: String,
        /// What serde said.
        reason: String,
    },
    /// A host program (mkfs.ext4, e2fsck, resize2fs, fsfreeze, xfs_quota) did not
    /// succeed on `path`: not installed, not started, or its exit status and stderr.
    #[error("{}: {source}", path.display())]
    Tool {
        /// The file, device or mount point it worked on.
        path: std::path::PathBuf,
        /// How the run went wrong.
        source: ToolError,
    },
    /// `xfs_quota` accepted a project's limit that the filesystem then does not report.
    #[error("xfs_quota set project {project}'s limit to {bytes} bytes, but {} reports {reported}", dir.display())]
    QuotaLimitNotApplied {
        /// The project.
        project: u32,
        /// The limit asked for.
        bytes: u64,
        /// The project's tree.
        dir: std::path::PathBuf,
        /// The limit statvfs reports there.
        reported: u64,
    },
    /// The NFS server failed or could not be reached.
    #[error(transparent)]
    Nfs(#[from] NfsError),
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn serves_text(node: Option<&str>) -> String {
    match node {
        Some(node) => format!("node {node}"),
        None => "no local volumes".to_string(),
    }
}

impl Error {
    /// A request field that is missing or malformed.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    /// A local filesystem failure while doing `context`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// The gRPC code for this error; exhaustive on purpose, so a new variant
    /// must decide its code here.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument { .. } | Self::Parameters(_) | Self::MutableParameters(_) => {
                Code::InvalidArgument
            }
            Self::VolumeNotFound { .. }
            | Self::SnapshotNotFound { .. }
            | Self::GroupSnapshotNotFound { .. }
            | Self::SourceVolumeNotFound { .. }
            | Self::SourceSnapshotNotFound { .. }
            | Self::NotOnNode { .. }
            | Self::DataGone { .. } => Code::NotFound,
            Self::NameTaken { .. } | Self::PublishedOtherwise { .. } => Code::AlreadyExists,
            Self::NotPublishable { .. }
            | Self::VolumeInUse { .. }
            | Self::OtherNode { .. }
            | Self::SnapshotInGroup { .. }
            | Self::QuotaUnavailable { .. }
            | Self::QuotaPathUnnameable { .. }
            | Self::RootHeld { .. } => Code::FailedPrecondition,
            Self::SourceTooLarge { .. } | Self::CannotShrink { .. } => Code::OutOfRange,
            // CSI: an operation pending for the object, and an invalid starting_token,
            // are both Aborted.
            Self::StaleToken { .. } => Code::Aborted,
            Self::Refused(e) => e.code(),
            Self::NoSpace { .. }
            | Self::ProjectIdsExhausted
            | Self::TopologyUnreachable { .. }
            | Self::AttachLimit { .. } => Code::ResourceExhausted,
            Self::AttachDisabled => Code::Unimplemented,
            Self::Io { source, .. } => io_code(source),
            Self::CorruptMetadata { .. }
            | Self::Tool { .. }
            | Self::QuotaLimitNotApplied { .. } => Code::Internal,
            Self::Nfs(e) => nfs_code(e),
        }
    }
}

fn nfs_code(e: &NfsError) -> Code {
    use nfsstat3::*;
    let status = match e {
        NfsError::Unreachable(_) => return Code::Unavailable,
        NfsError::Status { status, .. } => status,
    };
    match status {
        NFS3ERR_NOSPC | NFS3ERR_DQUOT => Code::ResourceExhausted,
        NFS3ERR_ACCES | NFS3ERR_PERM | NFS3ERR_ROFS => Code::PermissionDenied,
        // The server is busy, or restarted under a handle: a retry resolves again.
        NFS3ERR_JUKEBOX | NFS3ERR_STALE => Code::Unavailable,
        // The export holds something the driver did not lay out there (a file where
        // its directory should be, a name it never writes ...), or the server failed:
        // nothing the caller can change.
        NFS3ERR_NOENT | NFS3ERR_EXIST | NFS3ERR_NOTDIR | NFS3ERR_ISDIR | NFS3ERR_NOTEMPTY
        | NFS3ERR_MLINK | NFS3ERR_NAMETOOLONG | NFS3ERR_XDEV | NFS3ERR_BADTYPE
        | NFS3ERR_BADHANDLE | NFS3ERR_NOT_SYNC | NFS3ERR_BAD_COOKIE | NFS3ERR_TOOSMALL
        | NFS3ERR_INVAL | NFS3ERR_FBIG | NFS3ERR_IO | NFS3ERR_NXIO | NFS3ERR_NODEV
        | NFS3ERR_REMOTE | NFS3ERR_NOTSUPP | NFS3ERR_SERVERFAULT => Code::Internal,
        // A call that succeeded is never made an error; one that was is a bug here.
        NFS3_OK => Code::Internal,
    }
}

fn io_code(e: &std::io::Error) -> Code {
    match e.raw_os_error().map(nix::errno::Errno::from_raw) {
        Some(nix::errno::Errno::ENOSPC | nix::errno::Errno::EDQUOT) => Code::ResourceExhausted,
        _ => Code::Internal,
    }
}

impl From<RequestError> for Error {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::InvalidField { field, reason } => Self::InvalidArgument { field, reason },
            refused => Self::Refused(refused),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = e.code();
        if matches!(code, Code::Internal | Code::Unavailable) {
            tracing::warn!(error = %e, ?code, "call failed");
        } else {
            tracing::debug!(error = %e, ?code, "call refused");
        }
        Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests;
