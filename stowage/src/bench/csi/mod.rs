//! `stowage bench csi`: drives any CSI driver through whole volume lifecycles
//! and prints per-RPC latency, lifecycle throughput and the node plugin's memory.
//! With a baseline driver it runs the same work against both and prints ratios.

pub(super) mod driver;
pub(super) mod memory;
pub(super) mod stats;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use driver_contract::socket::socket_path;
use serde_json::{Value, json};
use stowage_common::quantity::parse_bytes;

use driver::{Driver, VolumeType, Workload};
use stats::{Stats, micros};

use super::error::Error;
use super::process::{self, create_dir};

#[derive(clap::Args)]
pub struct CsiBench {
    /// Controller endpoint of the driver under test, `unix:///path/csi.sock`.
    #[arg(long)]
    controller_endpoint: String,
    /// Node endpoint of the driver under test; the controller's when unset.
    #[arg(long)]
    node_endpoint: Option<String>,
    /// Lifecycles to run.
    #[arg(long, default_value_t = 1_000)]
    volumes: usize,
    /// Lifecycles in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// `local`: CreateVolume .. DeleteVolume; `ephemeral`: inline publish and unpublish.
    #[arg(long = "type", value_enum, default_value = "local")]
    kind: VolumeType,
    /// CreateVolume parameters (volume attributes for ephemeral volumes), `k=v[,k=v]`; repeatable.
    #[arg(long, value_delimiter = ',', value_parser = key_value)]
    parameters: Vec<(String, String)>,
    /// Capacity each volume asks for.
    #[arg(long, default_value = "1Mi")]
    capacity: String,
    /// Where staging and target paths go (a node plugin may insist on kubelet's root).
    #[arg(long, default_value = "/var/lib/kubelet/stowage-bench")]
    work_dir: PathBuf,
    /// Controller endpoint of a driver to compare with, e.g. the reference hostpath driver.
    #[arg(long)]
    baseline_controller_endpoint: Option<String>,
    /// Node endpoint of the baseline driver; its controller's when unset.
    #[arg(long)]
    baseline_node_endpoint: Option<String>,
    /// CreateVolume parameters for the baseline driver, `k=v[,k=v]`; repeatable.
    #[arg(long, value_delimiter = ',', value_parser = key_value)]
    baseline_parameters: Vec<(String, String)>,
    /// Clone every volume from one source volume holding this many bytes of data
    /// (written through its publish before the run): a copy load.
    #[arg(long)]
    clone_source_bytes: Option<String>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

/// A parameter flag's value that is not `key=value`.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("{0:?} is not key=value")]
struct NotKeyValue(String);

fn key_value(text: &str) -> Result<(String, String), NotKeyValue> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.into(), value.into())),
        _ => Err(NotKeyValue(text.into())),
    }
}

/// A size flag's bytes (`1Mi`, `1G`, `4096`).
fn size<T: TryFrom<u128>>(flag: &'static str, text: &str) -> Result<T, Error> {
    parse_bytes(text)
        .and_then(|bytes| T::try_from(bytes).ok())
        .ok_or_else(|| Error::NotASize {
            flag,
            text: text.into(),
        })
}

/// The endpoints of one driver and the parameters its volumes get.
struct Target {
    controller: PathBuf,
    node: PathBuf,
    parameters: HashMap<String, String>,
}

impl Target {
    fn new(
        controller: &str,
        node: Option<&str>,
        parameters: &[(String, String)],
    ) -> Result<Self, Error> {
        Ok(Self {
            controller: socket_path(controller)?,
            node: socket_path(node.unwrap_or(controller))?,
            parameters: parameters.iter().cloned().collect(),
        })
    }
}

/// What one run against one driver measured.
struct Measurement {
    stats: Stats,
    wall: Duration,
    memory: memory::NodeMemory,
}

pub async fn run(args: CsiBench) -> Result<(), Error> {
    let capacity = size("--capacity", &args.capacity)?;
    let target = Target::new(
        &args.controller_endpoint,
        args.node_endpoint.as_deref(),
        &args.parameters,
    )?;
    let baseline = match &args.baseline_controller_endpoint {
        Some(controller) => Some(Target::new(
            controller,
            args.baseline_node_endpoint.as_deref(),
            &args.baseline_parameters,
        )?),
        None => None,
    };
    let measured = measure(&target, &args, capacity).await?;
    let compared = match &baseline {
        Some(baseline) => Some(measure(baseline, &args, capacity).await?),
        None => None,
    };
    if args.json {
        println!("{}", report_json(&measured, compared.as_ref()));
    } else {
        print!("{}", report_text(&args, &measured, compared.as_ref()));
    }
    let errors = measured.stats.lifecycles.errors();
    if errors > 0 {
        return Err(Error::LifecyclesFailed(errors));
    }
    Ok(())
}

async fn measure(target: &Target, args: &CsiBench, capacity: i64) -> Result<Measurement, Error> {
    let driver = discover(&target.controller, &target.node, args.kind).await?;
    let run = run_id();
    let dir = args.work_dir.join(&run);
    create_dir(&dir)?;
    let mut workload = Workload {
        kind: args.kind,
        parameters: target.parameters.clone(),
        capacity_bytes: capacity,
        dir: dir.clone(),
        run,
        source: None,
    };
    let source = match &args.clone_source_bytes {
        Some(text) => {
            let bytes = size("--clone-source-bytes", text)?;
            let held = clone_source(&driver, &workload, bytes).await?;
            workload.source = Some(Driver::volume_id(&held).to_string());
            Some(held)
        }
        None => None,
    };
    let workload = Arc::new(workload);
    let mut memory = memory::NodeMemory::of(&target.node);
    let started = Instant::now();
    let stats = drive(
        driver.clone(),
        workload.clone(),
        args.volumes,
        args.concurrency,
    )
    .await?;
    let wall = started.elapsed();
    if let Some(held) = source
        && !driver.release(held, &mut Stats::default()).await
    {
        tracing::warn!("the clone source volume could not be removed");
    }
    memory.sample_after();
    remove_work_dir(&dir);
    Ok(Measurement {
        stats,
        wall,
        memory,
    })
}

/// A published volume with `bytes` of incompressible data in one file.
async fn clone_source(
    driver: &Driver,
    workload: &Workload,
    bytes: u64,
) -> Result<driver::Held, Error> {
    let held = driver
        .hold(workload, usize::MAX, &mut Stats::default())
        .await?;
    let path = Driver::target(&held).join("data");
    let write = move || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&path)?;
        let mut block = vec![0u8; 1 << 20];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut written = 0;
        while written < bytes {
            for chunk in block.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
            }
            let n = usize::try_from((bytes - written).min(block.len() as u64)).unwrap_or(0);
            file.write_all(&block[..n])?;
            written += n as u64;
        }
        file.sync_all()
    };
    tokio::task::spawn_blocking(write)
        .await?
        .map_err(Error::CloneSource)?;
    Ok(held)
}

/// Runs `count` lifecycles on `concurrency` workers, each numbering from a shared counter.
pub(super) async fn drive(
    driver: Driver,
    workload: Arc<Workload>,
    count: usize,
    concurrency: usize,
) -> Result<Stats, Error> {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency.clamp(1, count.max(1)))
        .map(|_| {
            let (driver, workload, next) = (driver.clone(), workload.clone(), next.clone());
            tokio::spawn(async move {
                let mut stats = Stats::default();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= count {
                        return stats;
                    }
                    driver.lifecycle(&workload, index, &mut stats).await;
                }
            })
        })
        .collect();
    let mut total = Stats::default();
    for worker in workers {
        total.merge(worker.await?);
    }
    Ok(total)
}

/// Removes the run's directories (those of the held clone source first); anything a
/// failed driver left mounted there stays, and is named.
fn remove_work_dir(dir: &Path) {
    let held = dir.join(driver::HELD);
    let below = |parent: &Path| driver::PATH_DIRS.map(|sub| parent.join(sub));
    let paths = below(&held)
        .into_iter()
        .chain([held.clone()])
        .chain(below(dir))
        .chain([dir.to_path_buf()]);
    for path in paths {
        if let Err(e) = std::fs::remove_dir(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("left behind in {}: {e}", path.display());
        }
    }
}

/// The driver behind a controller and a node socket (the same one for a node plugin
/// that serves both), and what it offers.
pub(super) async fn discover(
    controller: &Path,
    node: &Path,
    kind: VolumeType,
) -> Result<Driver, Error> {
    let controller = process::connect(controller).await?;
    let node = process::connect(node).await?;
    Driver::discover(controller, node, kind).await
}

pub(super) fn run_id() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    format!("{:x}{:x}", secs & 0xffff_ffff, std::process::id())
}

fn report_json(measured: &Measurement, baseline: Option<&Measurement>) -> Value {
    let mut out = measurement_json(measured);
    if let Some(baseline) = baseline {
        out["baseline"] = measurement_json(baseline);
        out["ratios"] = ratios(measured, baseline)
            .into_iter()
            .map(|(name, value)| (name.to_string(), json!(value)))
            .collect();
    }
    out
}

fn measurement_json(m: &Measurement) -> Value {
    let mut out = m.stats.to_json(m.wall);
    out["wall_ms"] = json!(m.wall.as_millis() as u64);
    out["memory"] = m.memory.to_json();
    out
}

fn report_text(args: &CsiBench, measured: &Measurement, baseline: Option<&Measurement>) -> String {
    let mut out = format!(
        "csi: {} {:?} lifecycles, {} in flight\n\n",
        args.volumes, args.kind, args.concurrency
    );
    out.push_str(&measured.stats.table(measured.wall));
    out.push_str(&measured.memory.describe());
    if let Some(baseline) = baseline {
        out.push_str("\nbaseline:\n");
        out.push_str(&baseline.stats.table(baseline.wall));
        out.push_str(&baseline.memory.describe());
        let ratios = ratios(measured, baseline);
        out.push_str("\nratios (driver / baseline):");
        for (name, value) in ratios {
            match value {
                Some(value) => out.push_str(&format!(" {name} {value:.3};")),
                None => out.push_str(&format!(" {name} n/a;")),
            }
        }
        out.push('\n');
    }
    out
}

/// The driver's figures over the baseline's: below 1 is better for latency and memory.
fn ratios(measured: &Measurement, baseline: &Measurement) -> [(&'static str, Option<f64>); 3] {
    let rss = |m: &Measurement| m.memory.after_kib.unwrap_or_default() as f64;
    [
        ("lifecycle_p50", ratio(p50(measured), p50(baseline))),
        (
            "per_second",
            ratio(per_second(measured), per_second(baseline)),
        ),
        ("node_rss", ratio(rss(measured), rss(baseline))),
    ]
}

fn p50(m: &Measurement) -> f64 {
    micros(m.stats.lifecycles.summary().p50) as f64
}

fn per_second(m: &Measurement) -> f64 {
    let ok = m.stats.lifecycles.count() - m.stats.lifecycles.errors();
    ok as f64 / m.wall.as_secs_f64().max(f64::EPSILON)
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}
