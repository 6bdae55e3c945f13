//! Serving a plugin's gRPC services on its CSI socket until shutdown, every call counted
//! and timed. The socket itself (path forms, stale-socket hygiene, mode) is the driver
//! contract's ([`driver_contract::socket`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use driver_contract::socket::{self, NotAUnixEndpoint};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::Routes;

use crate::telemetry_endpoint::{self, MetricsEndpointError};

/// Why a plugin could not serve its CSI endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// --endpoint is not a unix socket path.
    #[error(transparent)]
    Endpoint(#[from] NotAUnixEndpoint),
    /// The socket could not be bound (a non-socket in its place, a missing directory).
    #[error("bind {}: {source}", .path.display())]
    Bind {
        /// The socket's path.
        path: PathBuf,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] MetricsEndpointError),
    /// The gRPC server failed while serving.
    #[error("serve: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `routes` on the CSI `endpoint` until SIGTERM or SIGINT, with the metrics and
/// health endpoint on `metrics_address` when given; `plugin` names it in the log.
pub async fn serve_endpoint(
    plugin: &'static str,
    endpoint: &str,
    metrics_address: Option<SocketAddr>,
    routes: Routes,
) -> Result<(), ServeError> {
    let path = socket::socket_path(endpoint)?;
    let listener = socket::bind(&path).map_err(|source| ServeError::Bind {
        path: path.clone(),
        source,
    })?;
    let (grpc, health) = telemetry_endpoint::serve(metrics_address, |_| {}).await?;
    health.set_ready(true);
    tracing::info!(endpoint = %path.display(), "{plugin} serving");
    Ok(serve(listener, routes, grpc, socket::shutdown_signal()).await?)
}

/// Serves `routes` until `shutdown` resolves, letting in-flight calls finish.
pub async fn serve(
    listener: UnixListener,
    routes: Routes,
    metrics: telemetry::grpc::GrpcMetrics,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .layer(metrics)
        .add_routes(routes)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
}
