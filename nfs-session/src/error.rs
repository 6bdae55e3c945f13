//! What can go wrong talking to an NFS server.

use nfs3_types::nfs3::nfsstat3;

/// NFS failures, classed by what the caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum NfsError {
    /// Connecting or talking to the server failed: retry later.
    #[error("NFS server unavailable: {0}")]
    Unreachable(String),
    /// The server answered with an error status.
    #[error("NFS {op} failed: {status:?}")]
    Status {
        /// The NFS procedure that failed (`LOOKUP`, `MKDIR` ...).
        op: &'static str,
        /// What the server answered.
        status: nfsstat3,
    },
}

impl NfsError {
    /// The server refused `op` with `status`.
    pub fn status(op: &'static str, status: nfsstat3) -> Self {
        Self::Status { op, status }
    }
}
