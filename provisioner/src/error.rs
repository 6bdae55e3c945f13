//! The provisioner's error type.

/// Why a controller stopped, or one object's work was deferred to a later pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API request failed.
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// A cache's watch ended before it had listed.
    #[error("a watch cache closed before it was ready")]
    CacheClosed,
    /// Another instance took the lease: this one exits and a fresh one campaigns.
    #[error("lost the leader lease; exiting so that a fresh instance campaigns")]
    LostLeadership,
}

/// The provisioner's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
