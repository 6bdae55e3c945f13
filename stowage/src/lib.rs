//! What the two binaries share. `stowage` carries every component; `stowage-node`
//! carries only the node plugin, so the process that runs on every node for as long as
//! the node lives maps a fraction of the code (its resident memory follows the
//! binary's size, see BENCHMARKS.md).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod node_plugin;
pub mod serve;
pub mod telemetry_endpoint;

/// Logs to stderr with `filter` (e.g. `info` or `csi_node=debug`).
pub fn init_logging(filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}
