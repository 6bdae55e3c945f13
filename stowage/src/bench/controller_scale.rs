//! `stowage bench controller-scale`: CreateVolume latency and a full paged ListVolumes
//! walk against the number of existing local volumes (0 → 100,000), and the time a
//! restarted plugin takes to serve again with them all.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csi_proto::v1 as csi;
use serde_json::{Value, json};

use super::csi::concurrent;
use super::csi::driver::{Driver, VolumeType, Workload};
use super::csi::memory::NodeMemory;
use super::csi::run_id;
use super::csi::stats::{Rpc, Stats};
use super::millis;
use super::plot::{self, Chart, Series};
use super::process::{self, Plugin};

#[derive(clap::Args)]
pub struct ControllerScaleBench {
    /// The plugin serving the local controller: `target/node/stowage-node`, or
    /// `stowage` (run as `stowage node`).
    #[arg(long)]
    plugin: PathBuf,
    /// Scratch directory for the plugin's local root (the volumes go here: a tmpfs or
    /// a disk, as you choose), state and socket.
    #[arg(long)]
    dir: PathBuf,
    /// Existing volumes at which CreateVolume and ListVolumes are measured.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,10000,25000,50000,100000"
    )]
    checkpoints: Vec<usize>,
    /// CreateVolume (each followed by its DeleteVolume) measured per checkpoint, one at a time.
    #[arg(long, default_value_t = 200)]
    creates: usize,
    /// ListVolumes max_entries for the paged walk.
    #[arg(long, default_value_t = 500)]
    page_size: i32,
    /// Volumes created at once while filling up to the next checkpoint.
    #[arg(long, default_value_t = 32)]
    fill_concurrency: usize,
    /// Draw `controller-scale.png` into this directory.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    json: bool,
}

struct Checkpoint {
    volumes: usize,
    fill: Duration,
    create_p50: Duration,
    create_p99: Duration,
    delete_p50: Duration,
    walk: Duration,
    pages: usize,
    listed: usize,
    rss_kib: u64,
}

pub async fn run(args: ControllerScaleBench) -> Result<(), String> {
    let mut checkpoints = args.checkpoints.clone();
    checkpoints.sort_unstable();
    checkpoints.dedup();
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("create {}: {e}", args.dir.display()))?;
    let mut plugin = Plugin::new(&args.plugin, &args.dir);
    plugin.start().await?;
    let workload = Arc::new(Workload {
        kind: VolumeType::Local,
        parameters: [("capacityEnforcement".to_string(), "none".to_string())].into(),
        capacity_bytes: 1 << 20,
        dir: plugin.kubelet_dir().join("bench"),
        run: run_id(),
        source: None,
    });
    let mut driver = discover(&plugin.socket()).await?;
    let mut ids: Vec<String> = Vec::new();
    let mut measured = Vec::new();
    for &volumes in &checkpoints {
        let started = Instant::now();
        fill(&driver, &workload, &mut ids, volumes, args.fill_concurrency).await?;
        let fill_time = started.elapsed();
        let mut stats = Stats::default();
        for i in 0..args.creates {
            let name = format!("probe-{}-{volumes}-{i}", workload.run);
            let Some(id) = driver.create_only(&workload, name, &mut stats).await else {
                return Err("CreateVolume failed".into());
            };
            if !driver.delete_only(id, &mut stats).await {
                return Err("DeleteVolume failed".into());
            }
        }
        let (walk, pages, listed) = walk(&driver, args.page_size).await?;
        let create = stats.rpc(Rpc::CreateVolume).summary();
        let point = Checkpoint {
            volumes,
            fill: fill_time,
            create_p50: create.p50,
            create_p99: create.p99,
            delete_p50: stats.rpc(Rpc::DeleteVolume).summary().p50,
            walk,
            pages,
            listed,
            rss_kib: rss_kib(&plugin.socket()),
        };
        if listed != volumes {
            return Err(format!(
                "ListVolumes walked {listed} volumes, {volumes} exist"
            ));
        }
        if !args.json {
            print_checkpoint(&point);
        }
        measured.push(point);
    }
    plugin.kill().await;
    let serving = plugin.start().await?;
    driver = discover(&plugin.socket()).await?;
    let (_, _, listed) = walk(&driver, args.page_size).await?;
    if listed != ids.len() {
        return Err(format!(
            "after the restart ListVolumes walked {listed} of {} volumes",
            ids.len()
        ));
    }
    let started = Instant::now();
    let total = ids.len();
    let failed = delete_all(&driver, ids, args.fill_concurrency).await;
    let emptied = started.elapsed();
    report(&args, &measured, serving, total, emptied)?;
    if failed > 0 {
        return Err(format!("{failed} volumes could not be deleted"));
    }
    Ok(())
}

async fn discover(socket: &Path) -> Result<Driver, String> {
    Driver::discover(
        process::connect(socket).await?,
        process::connect(socket).await?,
        VolumeType::Local,
    )
    .await
}

fn rss_kib(socket: &Path) -> u64 {
    let mut memory = NodeMemory::of(socket);
    memory.sample_after();
    memory.after_kib.unwrap_or_default()
}

/// Creates volumes until `target` exist, `concurrency` at a time.
async fn fill(
    driver: &Driver,
    workload: &Arc<Workload>,
    ids: &mut Vec<String>,
    target: usize,
    concurrency: usize,
) -> Result<(), String> {
    let (driver, workload) = (driver.clone(), workload.clone());
    let create = move |index: usize| {
        let (driver, workload) = (driver.clone(), workload.clone());
        async move {
            let name = format!("fill-{}-{index}", workload.run);
            driver
                .create_only(&workload, name, &mut Stats::default())
                .await
                .ok_or_else(|| format!("CreateVolume of volume {index} failed"))
        }
    };
    ids.extend(concurrent::fill(ids.len(), target, concurrency, create).await?);
    Ok(())
}

/// Walks ListVolumes page by page; returns the time, the pages and the volumes seen.
async fn walk(driver: &Driver, page_size: i32) -> Result<(Duration, usize, usize), String> {
    let mut controller = driver.controller();
    let started = Instant::now();
    let (mut token, mut pages, mut listed) = (String::new(), 0, 0);
    loop {
        let page = controller
            .list_volumes(csi::ListVolumesRequest {
                max_entries: page_size,
                starting_token: token,
            })
            .await
            .map_err(|e| format!("ListVolumes: {}", e.message()))?
            .into_inner();
        pages += 1;
        listed += page.entries.len();
        if page.next_token.is_empty() {
            return Ok((started.elapsed(), pages, listed));
        }
        token = page.next_token;
    }
}

async fn delete_all(driver: &Driver, ids: Vec<String>, concurrency: usize) -> usize {
    let driver = driver.clone();
    concurrent::drain(ids, concurrency, move |id| {
        let driver = driver.clone();
        async move { driver.delete_only(id, &mut Stats::default()).await }
    })
    .await
}

fn print_checkpoint(c: &Checkpoint) {
    println!(
        "{:>7} volumes (filled in {:.1} s, {:.0}/s): CreateVolume p50 {:.2} ms p99 {:.2} ms, \
         DeleteVolume p50 {:.2} ms; ListVolumes walk {:.0} ms ({} pages, {} volumes); plugin RSS {:.1} MiB",
        c.volumes,
        c.fill.as_secs_f64(),
        c.volumes as f64 / c.fill.as_secs_f64().max(f64::EPSILON),
        millis(c.create_p50),
        millis(c.create_p99),
        millis(c.delete_p50),
        millis(c.walk),
        c.pages,
        c.listed,
        c.rss_kib as f64 / 1024.0
    );
}

fn report(
    args: &ControllerScaleBench,
    measured: &[Checkpoint],
    serving: Duration,
    total: usize,
    emptied: Duration,
) -> Result<(), String> {
    if args.json {
        let points: Vec<Value> = measured
            .iter()
            .map(|c| {
                json!({
                    "volumes": c.volumes,
                    "fill_ms": c.fill.as_millis() as u64,
                    "create_p50_ms": millis(c.create_p50),
                    "create_p99_ms": millis(c.create_p99),
                    "delete_p50_ms": millis(c.delete_p50),
                    "list_walk_ms": millis(c.walk),
                    "list_pages": c.pages,
                    "rss_kib": c.rss_kib,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "checkpoints": points,
                "restart_serving_ms": millis(serving),
                "restart_volumes": total,
                "delete_all_ms": emptied.as_millis() as u64,
            })
        );
    } else {
        println!(
            "restart (SIGKILL) with {total} volumes: serving {:.0} ms after spawn; all deleted in {:.1} s",
            millis(serving),
            emptied.as_secs_f64()
        );
    }
    if let Some(dir) = &args.plot {
        draw(dir, measured)?;
    }
    Ok(())
}

fn draw(dir: &Path, measured: &[Checkpoint]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let line = |pick: fn(&Checkpoint) -> f64| -> Vec<(f64, f64)> {
        measured
            .iter()
            .map(|c| (c.volumes as f64, pick(c)))
            .collect()
    };
    let series = [
        Series::new("CreateVolume p50 (ms)", line(|c| millis(c.create_p50))),
        Series::new("CreateVolume p99 (ms)", line(|c| millis(c.create_p99))),
        Series::new(
            "ListVolumes full walk (ms / 100)",
            line(|c| millis(c.walk) / 100.0),
        ),
        Series::new(
            "plugin RSS (MiB / 10)",
            line(|c| c.rss_kib as f64 / 10_240.0),
        ),
    ];
    let path = dir.join("controller-scale.png");
    plot::draw(
        &path,
        &Chart {
            title: "local controller: CreateVolume, ListVolumes walk and memory against volumes",
            x_label: "existing local volumes",
            y_label: "ms (walk: ms / 100; RSS: MiB / 10)",
            series: &series,
        },
    )
    .map_err(|e| e.to_string())?;
    println!("curve drawn to {}", path.display());
    Ok(())
}
