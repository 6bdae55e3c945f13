//! The node plugin: CSI Identity and Node, and the Controller service for this node's
//! local volumes, on one socket. `stowage node` and `stowage-node` both run this.

use std::num::NonZeroU8;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use csi_controller::{
    ControllerConfig, ControllerService, Driver, GroupControllerService, IdentityService,
};
use csi_node::{NodeConfig, NodeService};
use csi_proto::v1::controller_server::ControllerServer;
use csi_proto::v1::group_controller_server::GroupControllerServer;
use csi_proto::v1::identity_server::IdentityServer;
use csi_proto::v1::node_server::NodeServer;
use tonic::service::Routes;

use crate::serve::{ServeError, serve_endpoint};

/// The node plugin's flags, the same for `stowage node` and `stowage-node`.
#[derive(clap::Args)]
pub struct NodeArgs {
    /// CSI endpoint, `unix:///path/csi.sock`.
    #[arg(long)]
    pub endpoint: String,
    /// This node's name (the Kubernetes node name).
    #[arg(long)]
    pub node_id: String,
    /// Directory holding this node's local volumes.
    #[arg(long, default_value = "/var/lib/stowage/local")]
    pub local_root: PathBuf,
    /// Directory for the node plugin's state (ephemeral volumes, controller state).
    #[arg(long, default_value = "/var/lib/stowage/node")]
    pub state_dir: PathBuf,
    /// kubelet's root: target and staging paths must lie below it.
    #[arg(long, default_value = "/var/lib/kubelet")]
    pub kubelet_dir: PathBuf,
    /// A prefix hostPath volumes may use; repeat for more. None are allowed by default.
    #[arg(long = "host-path-allow")]
    pub host_path_allow: Vec<PathBuf>,
    /// Maximum volumes on this node reported to the scheduler (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_volumes: i64,
    /// Serve /metrics, /healthz and /readyz on this address (e.g. `0.0.0.0:9810`); off when unset.
    #[arg(long)]
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Serve Identity and Node only: the Controller service of this node's local volumes
    /// runs in another process (`stowage controller --local-root` on the same root),
    /// which alone may open the root's record log.
    #[arg(long)]
    pub without_controller: bool,
}

/// The node plugin runs on every node for as long as the node lives. Every call runs on
/// the blocking pool (a mount, mkfs or copy may block for long), so the runtime's one
/// thread only frames gRPC: a second worker added its wake-ups (17 % of the plugin's
/// CPU at one call at a time) and its allocator arena, and no latency at 16 calls in
/// flight (BENCHMARKS.md). The pool is wide enough that a few calls stuck on a dead NFS
/// server or a frozen filesystem leave room for the rest, and its threads exit after
/// 2 s idle. Sixteen, not more: each thread keeps a stack, and on a node's few cores
/// more threads than concurrent calls only add memory (32 threads held 0.4 MiB more
/// after 16 concurrent lifecycles, for no change in latency). The threads share one
/// malloc arena: they come and go, and each would otherwise leave an arena behind
/// holding what it last used (0.3 MiB after 16 calls at once).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    if let Err(e) = stowage_sys::allocator::limit_arenas(NonZeroU8::MIN) {
        tracing::debug!(error = %e, "every thread may take a malloc arena of its own");
    }
    tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(16)
        .thread_keep_alive(Duration::from_secs(2))
        .enable_all()
        .build()
}

/// Why the node plugin could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum NodePluginError {
    /// --local-root could not be created (with --without-controller).
    #[error("create {}: {source}", .path.display())]
    LocalRoot {
        /// The directory.
        path: PathBuf,
        /// Why it could not be created.
        source: std::io::Error,
    },
    /// The controller service for this node's local volumes could not open its state.
    #[error("controller: {0}")]
    Controller(csi_controller::Error),
    /// The node service could not open its state.
    #[error("node: {0}")]
    Node(csi_node::error::Error),
    /// The socket or the metrics endpoint could not be served.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Opens the node plugin's services and serves them on its socket until SIGTERM or SIGINT.
pub async fn run(args: NodeArgs) -> Result<(), NodePluginError> {
    let controller = if args.without_controller {
        // The controller process may start later; the node holds the root open.
        std::fs::create_dir_all(&args.local_root).map_err(|source| NodePluginError::LocalRoot {
            path: args.local_root.clone(),
            source,
        })?;
        None
    } else {
        let driver = Driver::open(&ControllerConfig {
            node_id: Some(args.node_id.clone()),
            local_root: Some(args.local_root.clone()),
            state_dir: args.state_dir.join("controller"),
            enable_attach: false,
            max_volumes_per_node: 0,
        })
        .map_err(NodePluginError::Controller)?;
        Some(driver)
    };
    let node = NodeService::new(NodeConfig {
        node_id: args.node_id,
        kubelet_dir: args.kubelet_dir,
        state_dir: args.state_dir,
        local_root: args.local_root,
        host_path_allow: args.host_path_allow,
        max_volumes: args.max_volumes,
    })
    .map_err(NodePluginError::Node)?;
    let routes = node_routes(node, controller);
    Ok(serve_endpoint("node", &args.endpoint, args.metrics_address, routes).await?)
}

/// Identity, Node and (for local volumes) Controller and GroupController services on
/// one endpoint: CSI lets a plugin serve any subset, and kubelet and the sidecars of
/// one node find them all on the node plugin's socket.
pub fn node_routes(node: NodeService, controller: Option<Arc<Driver>>) -> Routes {
    let routes = Routes::new(IdentityServer::new(IdentityService::new(
        controller.clone(),
    )))
    .add_service(NodeServer::new(node));
    let Some(controller) = controller else {
        return routes;
    };
    routes
        .add_service(ControllerServer::new(ControllerService::new(
            controller.clone(),
        )))
        .add_service(GroupControllerServer::new(GroupControllerService::new(
            controller,
        )))
}
