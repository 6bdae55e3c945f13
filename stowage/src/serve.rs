//! Serving a plugin's gRPC services on its CSI socket until shutdown, every call counted
//! and timed. The socket itself (path forms, stale-socket hygiene, mode) is the driver
//! contract's ([`driver_contract::socket`]).

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::Routes;

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
