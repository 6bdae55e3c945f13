//! `stowage-node`: the node plugin alone, for the DaemonSet. It takes the flags of
//! `stowage node` and links none of the API server, provisioner or kube client.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use stowage::node_plugin::{self, NodeArgs, NodePluginError};

#[derive(Parser)]
#[command(
    name = "stowage-node",
    version,
    about = "Stowage node plugin: CSI Identity and Node, and the Controller service for this node's local volumes"
)]
struct Cli {
    /// Log filter, e.g. `info` or `csi_node=debug`.
    #[arg(long, env = "STOWAGE_LOG", default_value = "info")]
    log: String,
    #[command(flatten)]
    node: NodeArgs,
}

/// Why the node plugin stopped: the one place it becomes the message of the process.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    NodePlugin(#[from] NodePluginError),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    stowage::init_logging(&cli.log);
    let result = match node_plugin::runtime() {
        Ok(runtime) => runtime
            .block_on(node_plugin::run(cli.node))
            .map_err(Failure::from),
        Err(e) => Err(Failure::Runtime(e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("stowage-node: {e}");
            ExitCode::FAILURE
        }
    }
}
