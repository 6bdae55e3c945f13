//! A tower layer for tonic servers: requests by method and gRPC code, and latency
//! by method.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

type LatencyFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

/// Calls and their durations per gRPC method and code: a tower layer for the tonic server.
#[derive(Clone)]
pub struct GrpcMetrics {
    calls: Family<CallLabels, Counter>,
    latency: LatencyFamily,
}

impl Default for GrpcMetrics {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            latency: Family::new_with_constructor(|| {
                // 50 µs to about 26 s.
                Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
            }),
        }
    }
}

impl GrpcMetrics {
    /// The metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "stowage_grpc_requests",
            "gRPC requests served, by method and status code",
            metrics.calls.clone(),
        );
        registry.register(
            "stowage_grpc_request_duration_seconds",
            "gRPC request latency, by method",
            metrics.latency.clone(),
        );
        metrics
    }

    fn record(&self, method: String, code: tonic::Code, started: Instant) {
        self.latency
            .get_or_create(&MethodLabels {
                method: method.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
        self.calls
            .get_or_create(&CallLabels {
                method,
                code: format!("{code:?}"),
            })
            .inc();
    }
}

impl<S> tower::Layer<S> for GrpcMetrics {
    type Service = Measured<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Measured {
            inner,
            metrics: self.clone(),
        }
    }
}

/// A service wrapped by [`GrpcMetrics`]: each call counted and timed.
#[derive(Clone)]
pub struct Measured<S> {
    inner: S,
    metrics: GrpcMetrics,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for Measured<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await;
            metrics.record(method, code_of(response.as_ref().ok()), started);
            response
        })
    }
}

/// A failed unary call answers trailers-only: the code is in the headers. A
/// successful one has grpc-status 0 in its trailers, which a layer cannot wait for.
fn code_of<R>(response: Option<&http::Response<R>>) -> tonic::Code {
    match response {
        None => tonic::Code::Unknown,
        Some(response) => response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map_or(tonic::Code::Ok, tonic::Code::from_i32),
    }
}
