//! The provisioner's error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("a watch cache closed before it was ready")]
    CacheClosed,
    #[error("lost the leader lease; exiting so that a fresh instance campaigns")]
    LostLeadership,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
