//! What every Stowage process exposes: Prometheus metrics and health over HTTP
//! (`http`), and per-RPC metrics for its gRPC server (`grpc`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod grpc;
pub mod http;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use prometheus_client::registry::Registry;

/// Readiness as /readyz reports it; liveness (/healthz) is the server answering.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<AtomicBool>);

impl Health {
    /// Says whether `/readyz` answers ready.
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    /// What `/readyz` answers.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
