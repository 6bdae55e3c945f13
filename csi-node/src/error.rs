//! The node plugin's errors and their gRPC codes, decided in one place.

use driver_contract::RequestError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("an operation for {0} is already in progress")]
    Aborted(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Unimplemented(String),
    /// A trusted root (kubelet directory, allow-listed prefix, local root) cannot be opened.
    #[error("{root} cannot be opened: {source}")]
    RootUnavailable {
        root: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path} does not exist")]
    PathMissing { path: std::path::PathBuf },
    /// Resolving the path would leave its root, or meet a symlink it may not follow.
    #[error("{path} leads outside its allowed directory (a symlink or mount in the way)")]
    PathEscapes { path: std::path::PathBuf },
    #[error("{path} is not a directory")]
    NotADirectory { path: std::path::PathBuf },
    #[error("{path} is not a regular file")]
    NotARegularFile { path: std::path::PathBuf },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Mount {
        context: String,
        source: nix::errno::Errno,
    },
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

    pub fn mount(context: impl Into<String>, source: nix::errno::Errno) -> Self {
        Self::Mount {
            context: context.into(),
            source,
        }
    }

    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::Aborted(_) => Code::Aborted,
            Self::OutOfRange(_) => Code::OutOfRange,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Unimplemented(_) => Code::Unimplemented,
            Self::PathMissing { .. } => Code::NotFound,
            Self::PathEscapes { .. } => Code::PermissionDenied,
            Self::RootUnavailable { .. }
            | Self::NotADirectory { .. }
            | Self::NotARegularFile { .. } => Code::FailedPrecondition,
            Self::Io { source, .. }
                if source.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) =>
            {
                Code::ResourceExhausted
            }
            Self::Io { .. } | Self::Mount { .. } => Code::Internal,
        }
    }
}

impl From<RequestError> for Error {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::InvalidField { field, reason } => Self::InvalidArgument { field, reason },
            RequestError::OperationPending { what } => Self::Aborted(what),
            // The node plugin sizes nothing; keep the contract's code if it ever does.
            RequestError::CapacityUnmet { .. } => Self::OutOfRange(e.to_string()),
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

    #[test]
    fn every_variant_has_its_code() {
        let cases = [
            (Error::invalid("target_path", "x"), Code::InvalidArgument),
            (Error::NotFound("x".into()), Code::NotFound),
            (Error::AlreadyExists("x".into()), Code::AlreadyExists),
            (
                Error::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
            ),
            (Error::PermissionDenied("x".into()), Code::PermissionDenied),
            (Error::Aborted("x".into()), Code::Aborted),
            (Error::Unavailable("x".into()), Code::Unavailable),
            (Error::Unimplemented("x".into()), Code::Unimplemented),
            (
                Error::io("x", std::io::Error::from_raw_os_error(28)),
                Code::ResourceExhausted,
            ),
            (Error::io("x", std::io::Error::other("x")), Code::Internal),
            (Error::PathMissing { path: "/x".into() }, Code::NotFound),
            (
                Error::PathEscapes { path: "/x".into() },
                Code::PermissionDenied,
            ),
            (
                Error::RootUnavailable {
                    root: "/x".into(),
                    source: std::io::ErrorKind::NotFound.into(),
                },
                Code::FailedPrecondition,
            ),
            (
                Error::NotADirectory { path: "/x".into() },
                Code::FailedPrecondition,
            ),
            (
                Error::NotARegularFile { path: "/x".into() },
                Code::FailedPrecondition,
            ),
            (Error::mount("x", nix::errno::Errno::EPERM), Code::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
    }
}
