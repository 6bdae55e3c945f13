//! The Stowage CSI node plugin: the Node service (ephemeral, hostPath and local
//! volumes), plus, on the same socket, the controller for this node's local volumes.

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
use std::sync::Arc;

use csi_controller::Driver;
use csi_proto::v1::controller_server::ControllerServer;
use csi_proto::v1::group_controller_server::GroupControllerServer;
use csi_proto::v1::identity_server::IdentityServer;
use csi_proto::v1::node_server::NodeServer;
use tonic::service::Routes;

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

/// Identity, Node and (for local volumes) Controller and GroupController services on
/// one endpoint.
pub fn node_routes(node: NodeService, controller: Option<Arc<Driver>>) -> Routes {
    let routes = Routes::new(IdentityServer::new(csi_controller::IdentityService::new(
        controller.clone(),
    )))
    .add_service(NodeServer::new(node));
    let Some(controller) = controller else {
        return routes;
    };
    routes
        .add_service(ControllerServer::new(
            csi_controller::ControllerService::new(controller.clone()),
        ))
        .add_service(GroupControllerServer::new(
            csi_controller::GroupControllerService::new(controller),
        ))
}
