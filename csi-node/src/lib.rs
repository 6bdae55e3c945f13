//! The Stowage CSI node plugin: the Node service for ephemeral, hostPath, local and
//! NFS volumes. It shares only the driver contract with the controller; which services
//! share its socket is the binary's business (`stowage/src/node_plugin.rs`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod beneath;
pub mod error;
#[cfg(test)]
mod fake;
mod group;
pub mod host;
pub mod hostpath;
mod kind;
pub mod loopback;
pub mod mounter;
pub mod mounts;
pub use stowage_common::mountinfo;
pub mod nfsmount;
pub mod nfsrecover;
pub mod node;
pub mod staging;

use std::path::PathBuf;

pub use node::NodeService;

/// How the node plugin was started.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's name, as the CO knows it.
    pub node_id: String,
    /// Target and staging paths must lie under this directory (kubelet's root).
    pub kubelet_dir: PathBuf,
    /// Ephemeral volume data lives under `<state_dir>/ephemeral`.
    pub state_dir: PathBuf,
    /// The directory of this node's local volumes (shared with the controller).
    pub local_root: PathBuf,
    /// hostPath volumes may only name paths under these prefixes (none by default).
    pub host_path_allow: Vec<PathBuf>,
    /// Reported in NodeGetInfo; 0 means no limit.
    pub max_volumes: i64,
}
