//! The Container Storage Interface v1.12: messages, servers and clients.

#[allow(clippy::all, clippy::unwrap_used, missing_docs)] // generated code
pub mod csi {
    pub mod v1 {
        tonic::include_proto!("csi.v1");
    }
}

pub use csi::v1;

/// The name this driver reports and Kubernetes objects refer to.
pub const DRIVER_NAME: &str = "csi.stowage.io";

/// The topology key of a node-local volume.
pub const TOPOLOGY_NODE_KEY: &str = "topology.stowage.io/node";

pub mod channel;
