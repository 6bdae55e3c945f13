//! The crate's error type and the one place that decides every gRPC status code.

use driver_contract::RequestError;
use tonic::{Code, Status};

use crate::local::quota::ToolFailure;
use nfs_session::{NfsError, nfsstat3};

/// Everything a controller call can fail with. Each variant says whether the
/// caller can fix the request (InvalidArgument...), must wait (Aborted,
/// Unavailable) or will never succeed as asked (AlreadyExists, OutOfRange...).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is missing or malformed.
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// A volume, snapshot or node named by the request does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The name is taken by an object with incompatible properties.
    #[error("{0}")]
    AlreadyExists(String),
    /// The system is not in a state that allows this call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The requested capacity cannot be honoured.
    #[error("{0}")]
    OutOfRange(String),
    /// Another call for the same volume or snapshot is in flight.
    #[error("an operation for {0} is already in progress")]
    Aborted(String),
    /// No space, or no place that satisfies the topology.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A call this driver does not serve in its configuration.
    #[error("{0}")]
    Unimplemented(String),
    /// Local filesystem failure.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// A metadata file could not be decoded.
    #[error("corrupt metadata {path}: {reason}")]
    CorruptMetadata { path: String, reason: String },
    /// A helper program (mkfs, resize2fs) failed.
    #[error("{0}")]
    Tool(String),
    /// `xfs_quota` failed: its exit status and stderr, kept apart.
    #[error(transparent)]
    QuotaTool(#[from] ToolFailure),
    /// The NFS server failed or could not be reached.
    #[error(transparent)]
    Nfs(#[from] NfsError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

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
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::OutOfRange(_) => Code::OutOfRange,
            Self::Aborted(_) => Code::Aborted,
            Self::ResourceExhausted(_) => Code::ResourceExhausted,
            Self::Unimplemented(_) => Code::Unimplemented,
            Self::Io { source, .. } => io_code(source),
            Self::CorruptMetadata { .. } | Self::Tool(_) | Self::QuotaTool(_) => Code::Internal,
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
            RequestError::CapacityUnmet { .. } => Self::OutOfRange(e.to_string()),
            RequestError::OperationPending { what } => Self::Aborted(what),
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
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_code() {
        let cases = [
            (Error::invalid("name", "empty"), Code::InvalidArgument),
            (Error::NotFound("v".into()), Code::NotFound),
            (Error::AlreadyExists("v".into()), Code::AlreadyExists),
            (
                Error::FailedPrecondition("v".into()),
                Code::FailedPrecondition,
            ),
            (Error::OutOfRange("v".into()), Code::OutOfRange),
            (Error::Aborted("v".into()), Code::Aborted),
            (
                Error::ResourceExhausted("v".into()),
                Code::ResourceExhausted,
            ),
            (Error::Unimplemented("v".into()), Code::Unimplemented),
            (
                Error::io("x", std::io::Error::from_raw_os_error(28)),
                Code::ResourceExhausted,
            ),
            (
                Error::io("x", std::io::Error::other("boom")),
                Code::Internal,
            ),
            (
                Error::CorruptMetadata {
                    path: "p".into(),
                    reason: "r".into(),
                },
                Code::Internal,
            ),
            (Error::Tool("mkfs".into()), Code::Internal),
            (
                Error::QuotaTool(ToolFailure {
                    program: "xfs_quota",
                    status: Some(1),
                    stderr: "no such project".into(),
                }),
                Code::Internal,
            ),
            (
                Error::Nfs(NfsError::Unreachable("down".into())),
                Code::Unavailable,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let status = Status::from(Error::invalid("capacity_range", "limit below required"));
        assert!(
            status.message().starts_with("capacity_range:"),
            "{}",
            status.message()
        );
    }
}
