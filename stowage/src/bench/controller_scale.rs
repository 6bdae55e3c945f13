//! `stowage bench controller-scale`: CreateVolume latency and a full paged ListVolumes
//! walk against the number of existing local volumes (0 → 100,000), and the time a
//! restarted plugin takes to serve again with them all.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csi_proto::v1 as csi;
use serde_json::{Value, json};

use super::csi::driver::{Driver, Workload};
use super::csi::stats::{Rpc, Stats};
use super::error::Error;
use super::millis;
use super::plot::{self, Chart, Series};
use super::process::create_dir;
use super::scale::{Scale, ascending};

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
    /// The median ListVolumes page of the walk.
    page_p50: Duration,
    pages: usize,
    listed: usize,
    rss_kib: u64,
}

pub async fn run(args: ControllerScaleBench) -> Result<(), Error> {
    let parameters = [("capacityEnforcement".to_string(), "none".to_string())].into();
    let mut scale = Scale::start(&args.plugin, &args.dir, parameters).await?;
    let mut ids: Vec<String> = Vec::new();
    let mut measured = Vec::new();
    let create = |driver: Driver, workload: Arc<Workload>, index| async move {
        let name = format!("fill-{}-{index}", workload.run);
        driver
            .create_only(&workload, name, &mut Stats::default())
            .await
    };
    for volumes in ascending(&args.checkpoints) {
        let started = Instant::now();
        scale
            .fill(&mut ids, volumes, args.fill_concurrency, create)
            .await?;
        let point = checkpoint(&scale, &args, volumes, started.elapsed()).await?;
        if !args.json {
            print_checkpoint(&point);
        }
        measured.push(point);
    }
    let (serving, _) = scale.restart().await?;
    // The same volumes after the restart, whose replay laid their records down again
    // one after another: a page dearer before it than after it costs what the fill
    // did to the plugin's heap, not what the count does.
    let restarted = walk(&scale.driver, args.page_size).await?;
    if restarted.listed != ids.len() {
        return Err(Error::ListVolumes {
            listed: restarted.listed,
            exist: ids.len(),
            when: "after the restart",
        });
    }
    let started = Instant::now();
    let total = ids.len();
    let delete = |driver: Driver, id| async move {
        driver.delete_only(id, &mut Stats::default()).await.is_ok()
    };
    let failed = scale.drain(ids, args.fill_concurrency, delete).await;
    let emptied = started.elapsed();
    let restart = Restart {
        serving,
        page_p50: restarted.page_p50,
        volumes: total,
        emptied,
    };
    report(&args, &measured, &restart)?;
    if failed > 0 {
        return Err(Error::NotDeleted(failed));
    }
    Ok(())
}

/// CreateVolume and DeleteVolume one at a time, and a ListVolumes walk, with `volumes`
/// existing (made in `fill`).
async fn checkpoint(
    scale: &Scale,
    args: &ControllerScaleBench,
    volumes: usize,
    fill: Duration,
) -> Result<Checkpoint, Error> {
    let (driver, workload) = (&scale.driver, &scale.workload);
    let mut stats = Stats::default();
    for i in 0..args.creates {
        let name = format!("probe-{}-{volumes}-{i}", workload.run);
        let id = driver.create_only(workload, name, &mut stats).await?;
        driver.delete_only(id, &mut stats).await?;
    }
    let Walk {
        total: walk,
        page_p50,
        pages,
        listed,
    } = walk(driver, args.page_size).await?;
    if listed != volumes {
        return Err(Error::ListVolumes {
            listed,
            exist: volumes,
            when: "at the checkpoint",
        });
    }
    let create = stats.rpc(Rpc::CreateVolume).summary();
    Ok(Checkpoint {
        volumes,
        fill,
        create_p50: create.p50,
        create_p99: create.p99,
        delete_p50: stats.rpc(Rpc::DeleteVolume).summary().p50,
        walk,
        page_p50,
        pages,
        listed,
        rss_kib: scale.rss_kib(),
    })
}

/// The restart with every volume: serving after spawn, the median page of a walk just
/// after, and the time to delete them all.
struct Restart {
    serving: Duration,
    page_p50: Duration,
    volumes: usize,
    emptied: Duration,
}

/// A paged ListVolumes walk: its time, its median page, the pages and volumes seen.
struct Walk {
    total: Duration,
    page_p50: Duration,
    pages: usize,
    listed: usize,
}

/// Walks ListVolumes page by page.
async fn walk(driver: &Driver, page_size: i32) -> Result<Walk, Error> {
    let mut controller = driver.controller();
    let started = Instant::now();
    let (mut token, mut listed) = (String::new(), 0);
    let mut pages = Vec::new();
    loop {
        let asked = Instant::now();
        let page = controller
            .list_volumes(csi::ListVolumesRequest {
                max_entries: page_size,
                starting_token: token,
            })
            .await
            .map_err(|status| Error::Rpc {
                call: "ListVolumes",
                status,
            })?
            .into_inner();
        pages.push(asked.elapsed());
        listed += page.entries.len();
        if page.next_token.is_empty() {
            pages.sort();
            return Ok(Walk {
                total: started.elapsed(),
                page_p50: pages.get(pages.len() / 2).copied().unwrap_or_default(),
                pages: pages.len(),
                listed,
            });
        }
        token = page.next_token;
    }
}

fn print_checkpoint(c: &Checkpoint) {
    println!(
        "{:>7} volumes (filled in {:.1} s, {:.0}/s): CreateVolume p50 {:.2} ms p99 {:.2} ms, \
         DeleteVolume p50 {:.2} ms; ListVolumes walk {:.0} ms ({} pages, {} volumes, page p50 {:.2} ms); \
         plugin RSS {:.1} MiB",
        c.volumes,
        c.fill.as_secs_f64(),
        c.volumes as f64 / c.fill.as_secs_f64().max(f64::EPSILON),
        millis(c.create_p50),
        millis(c.create_p99),
        millis(c.delete_p50),
        millis(c.walk),
        c.pages,
        c.listed,
        millis(c.page_p50),
        c.rss_kib as f64 / 1024.0
    );
}

fn report(
    args: &ControllerScaleBench,
    measured: &[Checkpoint],
    restart: &Restart,
) -> Result<(), Error> {
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
                    "list_page_p50_ms": millis(c.page_p50),
                    "rss_kib": c.rss_kib,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "checkpoints": points,
                "restart_serving_ms": millis(restart.serving),
                "restart_list_page_p50_ms": millis(restart.page_p50),
                "restart_volumes": restart.volumes,
                "delete_all_ms": restart.emptied.as_millis() as u64,
            })
        );
    } else {
        println!(
            "restart (SIGKILL) with {} volumes: serving {:.0} ms after spawn; ListVolumes page p50 \
             {:.2} ms just after; all deleted in {:.1} s",
            restart.volumes,
            millis(restart.serving),
            millis(restart.page_p50),
            restart.emptied.as_secs_f64()
        );
    }
    if let Some(dir) = &args.plot {
        draw(dir, measured)?;
    }
    Ok(())
}

fn draw(dir: &Path, measured: &[Checkpoint]) -> Result<(), Error> {
    create_dir(dir)?;
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
    )?;
    println!("curve drawn to {}", path.display());
    Ok(())
}
