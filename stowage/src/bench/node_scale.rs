//! `stowage bench node-scale`: the node plugin's lifecycle latency and memory against
//! the number of Stowage volumes published on the node (0 → 10,000), and the time a
//! restarted plugin takes to serve again with them all published.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::csi::drive;
use super::csi::driver::{Driver, Held, Workload};
use super::csi::stats::{Rpc, Stats};
use super::error::Error;
use super::millis;
use super::plot::{self, Chart, Series};
use super::process::{self, create_dir};
use super::scale::{Scale, ascending};

#[derive(clap::Args)]
pub struct NodeScaleBench {
    /// The node plugin to start and restart: `target/node/stowage-node`, or `stowage`
    /// (run as `stowage node`).
    #[arg(long)]
    plugin: PathBuf,
    /// Scratch directory for the plugin's local root, state, kubelet directory and socket.
    #[arg(long)]
    dir: PathBuf,
    /// Published volumes at which lifecycles are measured.
    #[arg(long, value_delimiter = ',', default_value = "0,1000,2000,5000,10000")]
    checkpoints: Vec<usize>,
    /// Lifecycles measured per checkpoint and concurrency.
    #[arg(long, default_value_t = 200)]
    lifecycles: usize,
    /// Concurrencies measured at each checkpoint.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    concurrency: Vec<usize>,
    /// Volumes published at once while filling up to the next checkpoint.
    #[arg(long, default_value_t = 16)]
    fill_concurrency: usize,
    /// Draw `node-scale-latency.png` and `node-scale-rss.png` into this directory.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

/// Lifecycle latency at one concurrency, and each RPC's (which call a rise is in).
struct Latency {
    concurrency: usize,
    p50: Duration,
    p99: Duration,
    errors: usize,
    rpcs: Vec<(Rpc, Duration, Duration)>,
}

/// What was measured with `published` volumes held.
struct Checkpoint {
    published: usize,
    latencies: Vec<Latency>,
    rss_kib: u64,
    fill: Duration,
}

/// The restart with every volume still published.
struct Restart {
    published: usize,
    serving: Duration,
    first_publish: Duration,
    rss_kib: u64,
}

pub async fn run(args: NodeScaleBench) -> Result<(), Error> {
    process::require_private_mount_namespace()?;
    let mut scale = Scale::start(&args.plugin, &args.dir, HashMap::new()).await?;
    let mut held: Vec<Held> = Vec::new();
    let mut measured = Vec::new();
    let hold = |driver: Driver, workload: Arc<Workload>, index| async move {
        driver.hold(&workload, index, &mut Stats::default()).await
    };
    for published in ascending(&args.checkpoints) {
        let started = Instant::now();
        scale
            .fill(&mut held, published, args.fill_concurrency, hold)
            .await?;
        let fill = started.elapsed();
        let point = Checkpoint {
            published,
            latencies: lifecycles(&scale, &args).await?,
            rss_kib: scale.rss_kib(),
            fill,
        };
        if !args.json {
            print_checkpoint(&point);
        }
        measured.push(point);
    }
    let (serving, since) = scale.restart().await?;
    let fresh = scale
        .driver
        .hold(&scale.workload, usize::MAX, &mut Stats::default())
        .await?;
    let restart = Restart {
        published: held.len(),
        serving,
        first_publish: serving + since.elapsed(),
        rss_kib: scale.rss_kib(),
    };
    held.push(fresh);
    let release =
        |driver: Driver, held| async move { driver.release(held, &mut Stats::default()).await };
    let released = scale.drain(held, args.fill_concurrency, release).await;
    report(&args, &measured, &restart)?;
    if released > 0 {
        return Err(Error::NotReleased(released));
    }
    let errors: usize = measured
        .iter()
        .flat_map(|c| c.latencies.iter().map(|l| l.errors))
        .sum();
    if errors > 0 {
        return Err(Error::LifecyclesFailed(errors));
    }
    Ok(())
}

/// Lifecycle latency at each concurrency asked for.
async fn lifecycles(scale: &Scale, args: &NodeScaleBench) -> Result<Vec<Latency>, Error> {
    let mut latencies = Vec::new();
    for &concurrency in &args.concurrency {
        let stats = drive(
            scale.driver.clone(),
            scale.workload.clone(),
            args.lifecycles,
            concurrency,
        )
        .await?;
        let summary = stats.lifecycles.summary();
        let rpcs = stats
            .called()
            .map(|(rpc, samples)| {
                let rpc_summary = samples.summary();
                (rpc, rpc_summary.p50, rpc_summary.p99)
            })
            .collect();
        latencies.push(Latency {
            concurrency,
            p50: summary.p50,
            p99: summary.p99,
            errors: summary.errors,
            rpcs,
        });
    }
    Ok(latencies)
}

fn print_checkpoint(point: &Checkpoint) {
    let latencies: Vec<String> = point
        .latencies
        .iter()
        .map(|l| {
            format!(
                "c{} p50 {:.2} ms p99 {:.2} ms{}",
                l.concurrency,
                millis(l.p50),
                millis(l.p99),
                if l.errors > 0 {
                    format!(" ({} errors)", l.errors)
                } else {
                    String::new()
                }
            )
        })
        .collect();
    println!(
        "{:>6} published (filled in {:.1} s): lifecycle {}; plugin RSS {:.1} MiB",
        point.published,
        point.fill.as_secs_f64(),
        latencies.join(", "),
        point.rss_kib as f64 / 1024.0
    );
}

fn report(args: &NodeScaleBench, measured: &[Checkpoint], restart: &Restart) -> Result<(), Error> {
    if args.json {
        println!("{}", to_json(measured, restart));
    } else {
        println!(
            "restart (SIGKILL) with {} published: serving (NodeGetCapabilities) {:.0} ms after spawn, \
             a new volume created, staged and published {:.0} ms after spawn; RSS {:.1} MiB",
            restart.published,
            millis(restart.serving),
            millis(restart.first_publish),
            restart.rss_kib as f64 / 1024.0
        );
    }
    if let Some(dir) = &args.plot {
        draw(dir, measured)?;
    }
    Ok(())
}

fn to_json(measured: &[Checkpoint], restart: &Restart) -> Value {
    json!({
        "checkpoints": measured.iter().map(|c| json!({
            "published": c.published,
            "fill_ms": c.fill.as_millis() as u64,
            "rss_kib": c.rss_kib,
            "lifecycle": c.latencies.iter().map(|l| json!({
                "concurrency": l.concurrency,
                "p50_ms": millis(l.p50),
                "p99_ms": millis(l.p99),
                "errors": l.errors,
                "rpcs": l.rpcs.iter().map(|(rpc, p50, p99)| (rpc.name().to_string(), json!({
                    "p50_ms": millis(*p50),
                    "p99_ms": millis(*p99),
                }))).collect::<serde_json::Map<_, _>>(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "restart": {
            "published": restart.published,
            "serving_ms": millis(restart.serving),
            "first_publish_ms": millis(restart.first_publish),
            "rss_kib": restart.rss_kib,
        },
    })
}

fn draw(dir: &std::path::Path, measured: &[Checkpoint]) -> Result<(), Error> {
    create_dir(dir)?;
    let mut series = Vec::new();
    let concurrencies: Vec<usize> = measured
        .first()
        .map(|c| c.latencies.iter().map(|l| l.concurrency).collect())
        .unwrap_or_default();
    for (i, concurrency) in concurrencies.iter().enumerate() {
        for (name, pick) in [("p50", 0), ("p99", 1)] {
            let points = measured
                .iter()
                .filter_map(|c| c.latencies.get(i))
                .zip(measured)
                .map(|(l, c)| {
                    let value = if pick == 0 { l.p50 } else { l.p99 };
                    (c.published as f64, millis(value))
                })
                .collect();
            series.push(Series::new(
                format!("lifecycle {name}, concurrency {concurrency}"),
                points,
            ));
        }
    }
    let latency = dir.join("node-scale-latency.png");
    plot::draw(
        &latency,
        &Chart {
            title: "node plugin: lifecycle latency against published volumes",
            x_label: "Stowage volumes published on the node",
            y_label: "ms",
            series: &series,
        },
    )?;
    let rss = dir.join("node-scale-rss.png");
    let points = measured
        .iter()
        .map(|c| (c.published as f64, c.rss_kib as f64 / 1024.0))
        .collect();
    plot::draw(
        &rss,
        &Chart {
            title: "node plugin: resident memory against published volumes",
            x_label: "Stowage volumes published on the node",
            y_label: "MiB",
            series: &[Series::new("RSS after the checkpoint's lifecycles", points)],
        },
    )?;
    println!(
        "curves drawn to {} and {}",
        latency.display(),
        rss.display()
    );
    Ok(())
}
