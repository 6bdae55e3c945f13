//! Why `stowage mount`, `unmount` or `status` failed: one variant per thing that went
//! wrong, each saying what the user can look at.

use std::path::PathBuf;
use std::time::Duration;

use driver_contract::DRIVER_NAME;

use super::record::RecordError;
use crate::capabilities::Refused;
use crate::kubeconfig::KubeconfigError;
use crate::layout::NotRunning;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    NotRunning(#[from] NotRunning),
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Capabilities(#[from] Refused),
    #[error("create {}: {source}", .path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    Target {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} already holds a stowage mount", .0.display())]
    AlreadyMounted(PathBuf),
    #[error("nothing was mounted at {} by stowage mount", .0.display())]
    NotMounted(PathBuf),
    /// An API request about `what` (a claim, a volume, a list) failed.
    #[error("{what}: {source}")]
    Api { what: String, source: kube::Error },
    #[error("list volumes: {0} (is `stowage up` running?)")]
    ApiDown(kube::Error),
    #[error("claim {0} is Lost: its volume is gone")]
    Lost(String),
    #[error("claim {name} not bound after {timeout:?}; see `kubectl describe pvc {name}`")]
    NotBound { name: String, timeout: Duration },
    #[error("volume {volume} is pinned to another node than {node}")]
    PinnedElsewhere { volume: String, node: String },
    #[error(
        "no static volume on node {node} fits, and class {class} is not provisioned by {DRIVER_NAME}"
    )]
    NoPlace { node: String, class: String },
    /// The node's published capacity for the class is smaller than the claim (also a
    /// Warning event on the claim).
    #[error(transparent)]
    NoRoom(#[from] provisioner::capacity::room::NoRoom),
    #[error("node plugin at {}: {source} (is `stowage up` running?)", .socket.display())]
    Plugin {
        socket: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("the volume has no spec")]
    NoSpec,
    #[error("a Block claim has no filesystem to mount; give it to a pod")]
    Block,
    #[error("volume {0} is not a {DRIVER_NAME} volume")]
    NotOurs(String),
    #[error("{rpc}: {}", .status.message())]
    Csi {
        rpc: &'static str,
        status: tonic::Status,
    },
    #[error("unmount {}: {source}", .target.display())]
    Unmount {
        target: PathBuf,
        source: nix::errno::Errno,
    },
    #[error("bind onto {}: {source}", .target.display())]
    Bind {
        target: PathBuf,
        source: nix::errno::Errno,
    },
}

/// An API request about `what` failed.
pub fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Api { what, source }
}

/// A CSI call `rpc` was refused.
pub fn csi(rpc: &'static str) -> impl FnOnce(tonic::Status) -> Error {
    move |status| Error::Csi { rpc, status }
}
