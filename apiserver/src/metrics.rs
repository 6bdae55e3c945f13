//! The API server's Prometheus metrics, named after kube-apiserver's: requests by verb
//! and code, and the latency of everything but watches (which last as long as the
//! client keeps them).

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: &'static str,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: &'static str,
}

type LatencyFamily = Family<VerbLabels, Histogram, fn() -> Histogram>;

/// Cheap to clone: shared handles. Unregistered, it counts into nothing anyone reads.
#[derive(Debug, Clone)]
pub struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            // 50 µs to about 26 s.
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
            }),
        }
    }
}

impl ApiMetrics {
    /// Fresh counters, registered in `registry` for export.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "stowage_apiserver_requests",
            "API requests served, by verb and HTTP status code",
            metrics.requests.clone(),
        );
        registry.register(
            "stowage_apiserver_request_duration_seconds",
            "API request latency by verb, watches excepted",
            metrics.latency.clone(),
        );
        metrics
    }

    /// Counts one request of `verb` answered with `code`, and its latency but for watches.
    pub fn record(&self, verb: &'static str, code: u16, started: Instant) {
        if verb != "WATCH" {
            self.latency
                .get_or_create(&VerbLabels { verb })
                .observe(started.elapsed().as_secs_f64());
        }
        self.requests
            .get_or_create(&RequestLabels { verb, code })
            .inc();
    }
}

/// kube-apiserver's verb for a request: the HTTP method, or WATCH for `?watch=true`.
pub fn verb(method: &axum::http::Method, query: Option<&str>) -> &'static str {
    let watching = query.is_some_and(|q| {
        q.split('&')
            .any(|pair| matches!(pair, "watch=true" | "watch=1"))
    });
    match method.as_str() {
        "GET" if watching => "WATCH",
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn watches_are_told_from_reads() {
        assert_eq!(
            verb(&Method::GET, Some("watch=true&resourceVersion=5")),
            "WATCH"
        );
        assert_eq!(
            verb(&Method::GET, Some("labelSelector=watch%3Dtrue")),
            "GET"
        );
        assert_eq!(verb(&Method::GET, None), "GET");
        assert_eq!(verb(&Method::PATCH, None), "PATCH");
    }
}
