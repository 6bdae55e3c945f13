//! The /metrics, /healthz and /readyz endpoint every component may serve.

/// Starts the metrics and health endpoint when an address is given; `extra`
/// registers the component's own metrics. The component says when it is ready.
pub async fn serve(
    address: Option<std::net::SocketAddr>,
    extra: impl FnOnce(&mut telemetry::Registry),
) -> Result<(telemetry::grpc::GrpcMetrics, telemetry::Health), String> {
    let mut registry = telemetry::Registry::default();
    let grpc = telemetry::grpc::GrpcMetrics::register(&mut registry);
    extra(&mut registry);
    let health = telemetry::Health::default();
    if let Some(address) = address {
        telemetry::http::spawn(address, registry, health.clone())
            .await
            .map_err(|e| format!("metrics endpoint {address}: {e}"))?;
    }
    Ok((grpc, health))
}
