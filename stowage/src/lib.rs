//! What the two binaries share. `stowage` carries every component; `stowage-node`
//! carries only the node plugin, so the process that runs on every node for as long as
//! the node lives maps a fraction of the code (its resident memory follows the
//! binary's size, see BENCHMARKS.md).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod node_plugin;
pub mod serve;
pub mod telemetry_endpoint;

/// Logs to stderr with `filter`: a default level and `target=level` directives, e.g.
/// `info` or `info,csi_node=debug`. Targets, not an `EnvFilter`: the span and field
/// matching of the latter links a regex engine into every binary, ~180 KiB of code
/// resident in the node plugin for a feature its logs do not use. A filter that does
/// not parse logs at `info` and says so.
pub fn init_logging(filter: &str) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (targets, refused) = match filter.parse::<Targets>() {
        Ok(targets) => (targets, None),
        Err(error) => (
            Targets::new().with_default(tracing::Level::INFO),
            Some(error),
        ),
    };
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(targets)
        .init();
    if let Some(error) = refused {
        tracing::warn!(filter, %error, "log filter not understood; logging at info");
    }
}
