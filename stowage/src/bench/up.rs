//! Binding at scale under `stowage up`: the whole system started from this binary with
//! a temporary data directory, claims created through the API as a user's clients
//! would, and the time until every one is Bound, with the bound count along the way.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use super::concurrent;
use super::error::{Error, api, manifest};
use super::plot::{self, Chart, Series};
use super::process::{self, Served};

mod cpu;

#[derive(clap::Args)]
pub struct UpBench {
    /// Static PersistentVolumes, each with a claim of its own size, to bind.
    #[arg(long = "static", default_value_t = 0)]
    static_volumes: usize,
    /// Claims of --class to provision and bind (each run starts its own `stowage up`).
    #[arg(long, default_value_t = 0)]
    dynamic: usize,
    /// The class of the dynamic claims: Immediate, so that no consumer is needed.
    #[arg(long, default_value = "stowage-local-immediate")]
    class: String,
    /// Create requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Draw the bound count against time as a PNG here.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// Log filter of `stowage up` and every process it starts (their stderr is this one's),
    /// e.g. `info` or `provisioner=debug`.
    #[arg(long, default_value = "warn")]
    child_log: String,
}

/// One run: a name and the bound count against seconds since the first create.
struct Curve {
    label: String,
    points: Vec<(f64, f64)>,
}

#[derive(Clone, Copy)]
enum Kind {
    Static,
    Dynamic,
}

pub async fn run(args: UpBench) -> Result<(), Error> {
    if args.static_volumes == 0 && args.dynamic == 0 {
        return Err(Error::NothingToDo);
    }
    let mut curves = Vec::new();
    if args.static_volumes > 0 {
        curves.push(phase(&args, Kind::Static, args.static_volumes).await?);
    }
    if args.dynamic > 0 {
        curves.push(phase(&args, Kind::Dynamic, args.dynamic).await?);
    }
    if let Some(path) = &args.plot {
        let series: Vec<Series> = curves
            .into_iter()
            .map(|c| Series::new(c.label, c.points))
            .collect();
        let chart = Chart {
            title: "stowage up: claims Bound against time",
            x_label: "seconds since the first create",
            y_label: "claims Bound",
            series: &series,
        };
        plot::draw(path, &chart)?;
        println!("  curve drawn to {}", path.display());
    }
    Ok(())
}

async fn phase(args: &UpBench, kind: Kind, count: usize) -> Result<Curve, Error> {
    let dir = tempfile::TempDir::new().map_err(Error::TempDir)?;
    let data = dir.path().join("data");
    let served = process::serve("up", &data, &["--node-name", "bench"], &args.child_log).await?;
    wait_for_provisioners(&served).await?;
    let client = served.client.clone();
    let (label, what) = match kind {
        Kind::Static => (
            format!("{count} static PVs + {count} claims"),
            format!("{count} static PersistentVolumes and {count} claims of class \"\""),
        ),
        Kind::Dynamic => (
            format!("{count} dynamic claims ({})", args.class),
            format!("{count} claims of class {}", args.class),
        ),
    };
    println!(
        "up: {what}, {} creates in flight (kube-rs, one object per request)",
        args.concurrency
    );
    let cpu_before = served.pid().map(cpu::of_tree).unwrap_or_default();
    let (bound_tx, mut bound_rx) = watch::channel(0usize);
    let counter = tokio::spawn(count_bound(client.clone(), bound_tx));
    let started = Instant::now();
    let creating = tokio::spawn(create(
        client.clone(),
        kind,
        count,
        args.concurrency,
        args.class.clone(),
    ));
    let mut points = vec![(0.0, 0.0)];
    let mut next_report = count.div_ceil(10).max(1);
    let deadline = started + Duration::from_secs(args.timeout);
    let mut created_at = None;
    let mut creating = Some(creating);
    loop {
        let bound = *bound_rx.borrow_and_update();
        let seconds = started.elapsed().as_secs_f64();
        if points.last().is_none_or(|p| p.1 != bound as f64) {
            points.push((seconds, bound as f64));
        }
        while bound >= next_report && next_report <= count {
            println!("  {:>6} Bound at {:>7.2} s", next_report, seconds);
            next_report += count.div_ceil(10).max(1);
        }
        if bound >= count {
            break;
        }
        if Instant::now() > deadline {
            counter.abort();
            served.stop().await;
            return Err(Error::NotBound {
                bound,
                total: count,
                after: Duration::from_secs(args.timeout),
            });
        }
        if let Some(task) = creating.as_mut().filter(|t| t.is_finished()) {
            task.await??;
            created_at = Some(started.elapsed());
            creating = None;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), bound_rx.changed()).await;
    }
    let elapsed = started.elapsed();
    if let Some(task) = creating {
        task.await??;
        created_at = Some(started.elapsed());
    }
    counter.abort();
    points.push((elapsed.as_secs_f64(), count as f64));
    println!(
        "  all created in {:.2} s; all {count} Bound in {:.2} s ({:.0} claims/s)",
        created_at.unwrap_or_default().as_secs_f64(),
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    if let Some(pid) = served.pid() {
        cpu::report(&cpu_before, &cpu::of_tree(pid), elapsed);
    }
    served.stop().await;
    Ok(Curve { label, points })
}

/// `up` answers before its provisioners run: wait for `stowage status` to pass, as a user would.
async fn wait_for_provisioners(served: &Served) -> Result<(), Error> {
    const WITHIN: Duration = Duration::from_secs(120);
    let exe = std::env::current_exe().map_err(Error::OwnPath)?;
    let deadline = Instant::now() + WITHIN;
    loop {
        let status = tokio::process::Command::new(&exe)
            .arg("status")
            .arg("--data")
            .arg(&served.data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .map_err(|source| Error::Spawn {
                name: "stowage status".into(),
                source,
            })?;
        if status.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::StatusFailing(WITHIN));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Keeps `bound` at the number of claims in phase Bound, from a watch of claims.
async fn count_bound(client: Client, bound: watch::Sender<usize>) {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, "default");
    let mut names = HashSet::new();
    let mut events = watcher(claims, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        let (claim, present) = match event {
            Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => (c, true),
            Ok(watcher::Event::Delete(c)) => (c, false),
            Ok(_) | Err(_) => continue,
        };
        let is_bound =
            present && claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let changed = if is_bound {
            names.insert(claim.name_any())
        } else {
            names.remove(&claim.name_any())
        };
        if changed {
            bound.send_replace(names.len());
        }
    }
}

/// Creates the objects with `concurrency` requests in flight: for static binding a
/// volume then its claim, for dynamic provisioning a claim.
async fn create(
    client: Client,
    kind: Kind,
    count: usize,
    concurrency: usize,
    class: String,
) -> Result<(), Error> {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, "default");
    let create = move |i: usize| {
        let (volumes, claims, class) = (volumes.clone(), claims.clone(), class.clone());
        async move {
            let class = match kind {
                Kind::Static => {
                    volumes
                        .create(&PostParams::default(), &static_volume(i)?)
                        .await
                        .map_err(api(format!("create volume {i}")))?;
                    ""
                }
                Kind::Dynamic => class.as_str(),
            };
            claims
                .create(&PostParams::default(), &claim(i, class)?)
                .await
                .map_err(api(format!("create claim {i}")))?;
            Ok(())
        }
    };
    concurrent::fill(0, count, concurrency, create).await?;
    Ok(())
}

fn static_volume(i: usize) -> Result<PersistentVolume, Error> {
    manifest(
        "volume",
        json!({
            "metadata": {"name": format!("static-{i:06}")},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": format!("/srv/static-{i:06}")},
            }
        }),
    )
}

fn claim(i: usize, class: &str) -> Result<PersistentVolumeClaim, Error> {
    manifest(
        "claim",
        json!({
            "metadata": {"name": format!("claim-{i:06}")},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": class,
                "resources": {"requests": {"storage": if class.is_empty() { "1Gi" } else { "1Mi" }}},
            }
        }),
    )
}
