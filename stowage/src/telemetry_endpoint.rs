//! The /metrics, /healthz and /readyz endpoint every component may serve.

use std::net::SocketAddr;

/// The metrics endpoint could not listen on its address.
#[derive(Debug, thiserror::Error)]
#[error("metrics endpoint {address}: {source}")]
pub struct MetricsEndpointError {
    /// The address given with --metrics-address.
    pub address: SocketAddr,
    /// Why it could not be bound.
    pub source: std::io::Error,
}

/// Starts the metrics and health endpoint when an address is given; `extra`
/// registers the component's own metrics. The component says when it is ready.
pub async fn serve(
    address: Option<SocketAddr>,
    extra: impl FnOnce(&mut telemetry::Registry),
) -> Result<(telemetry::grpc::GrpcMetrics, telemetry::Health), MetricsEndpointError> {
    let mut registry = telemetry::Registry::default();
    let grpc = telemetry::grpc::GrpcMetrics::register(&mut registry);
    extra(&mut registry);
    let health = telemetry::Health::default();
    if let Some(address) = address {
        telemetry::http::spawn(address, registry, health.clone())
            .await
            .map_err(|source| MetricsEndpointError { address, source })?;
    }
    Ok((grpc, health))
}
