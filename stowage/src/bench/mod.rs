//! `stowage bench`: figures the issues ask for, printed, on this machine.

mod apiserver;
mod apiserver_sweep;
mod binder;
mod concurrent;
mod controller_scale;
mod csi;
mod error;
mod node_scale;
mod plot;
mod process;
mod provision;
mod scale;
mod up;

pub use apiserver::{ApiserverBench, run as run_apiserver};
pub use binder::{BinderBench, run as run_binder};
pub use controller_scale::{ControllerScaleBench, run as run_controller_scale};
pub use csi::{CsiBench, run as run_csi};
pub use error::Error;
pub use node_scale::{NodeScaleBench, run as run_node_scale};
pub use provision::{ProvisionBench, run as run_provision};
pub use up::{UpBench, run as run_up};

/// The p-th percentile (0..=100) of sorted samples.
fn percentile(sorted: &[std::time::Duration], p: usize) -> std::time::Duration {
    if sorted.is_empty() {
        return std::time::Duration::ZERO;
    }
    let rank = (sorted.len() * p).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn millis(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
