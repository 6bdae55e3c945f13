//! The API server as the object count grows: `stowage apiserver` in its own process,
//! filled with PersistentVolumes and claims in steps; at each checkpoint its memory,
//! the latency of full and paged LISTs, and of watch delivery.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::concurrent;
use super::error::{Error, api, manifest};
use super::plot::{self, Chart, Series};
use super::process::{self, MIB, Memory};
use super::{millis, percentile};

/// What the sweep is told.
pub struct Sweep {
    /// PersistentVolumes at the end (and as many claims).
    pub objects: usize,
    pub checkpoints: usize,
    pub concurrency: usize,
    /// Watch-delivery samples per checkpoint.
    pub probes: usize,
    /// Page size of the paged LISTs.
    pub page: u32,
    /// Where the charts go: `PREFIX-memory.png`, `-list.png`, `-watch.png`.
    pub plot: Option<std::path::PathBuf>,
    /// The log filter of the `stowage apiserver` it starts.
    pub log: String,
}

/// One checkpoint's figures.
struct Point {
    volumes: usize,
    claims: usize,
    memory: Memory,
    /// Peak resident memory after the LISTs of this checkpoint.
    hwm_after_lists: u64,
    create_rate: f64,
    pv_full: Duration,
    pv_paged: Duration,
    pv_page_p50: Duration,
    pvc_full: Duration,
    pvc_paged: Duration,
    watch_p50: Duration,
    watch_p99: Duration,
}

pub async fn run(sweep: Sweep) -> Result<(), Error> {
    let dir = tempfile::TempDir::new().map_err(Error::TempDir)?;
    let served = process::serve("apiserver", &dir.path().join("api"), &[], &sweep.log).await?;
    let pid = served.pid().ok_or(Error::ApiServerGone)?;
    let client = served.client.clone();
    let probe = Probe::create(&client).await?;
    println!(
        "apiserver sweep: 0 -> {n} PersistentVolumes + {n} claims, {} creates in flight, \
         paged LISTs of {} items, {} watch probes per checkpoint; server pid {pid}",
        sweep.concurrency,
        sweep.page,
        sweep.probes,
        n = sweep.objects
    );
    println!(
        "{:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "PVs",
        "PVCs",
        "RSS MiB",
        "HWM MiB",
        "create/s",
        "PV list",
        "PV paged",
        "page p50",
        "PVC list",
        "PVC paged",
        "watch50",
        "watch99"
    );
    let mut points = Vec::new();
    let mut have = 0;
    for step in 0..=sweep.checkpoints.max(1) {
        let target = sweep.objects * step / sweep.checkpoints.max(1);
        let started = Instant::now();
        fill(&client, have, target, sweep.concurrency).await?;
        let create_rate = if target > have {
            (2 * (target - have)) as f64 / started.elapsed().as_secs_f64()
        } else {
            0.0
        };
        have = target;
        let point = measure(&client, pid, &probe, &sweep, target, create_rate).await?;
        print_point(&point);
        points.push(point);
    }
    served.stop().await;
    if let Some(prefix) = &sweep.plot {
        draw(prefix, &points)?;
    }
    Ok(())
}

async fn measure(
    client: &Client,
    pid: u32,
    probe: &Probe,
    sweep: &Sweep,
    count: usize,
    create_rate: f64,
) -> Result<Point, Error> {
    // Let the server's allocator settle after the burst of creates.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let memory = process::memory(pid)?;
    let pv_full = list_full(client, "/api/v1/persistentvolumes", count + 1).await?;
    let (pv_paged, pv_page_p50) =
        list_paged(client, "/api/v1/persistentvolumes", sweep.page, count + 1).await?;
    let pvc_full = list_full(client, "/api/v1/persistentvolumeclaims", count).await?;
    let (pvc_paged, _) =
        list_paged(client, "/api/v1/persistentvolumeclaims", sweep.page, count).await?;
    let hwm_after_lists = process::memory(pid)?.hwm;
    let mut delays = probe.delays(sweep.probes).await?;
    delays.sort();
    Ok(Point {
        volumes: count,
        claims: count,
        memory,
        hwm_after_lists,
        create_rate,
        pv_full,
        pv_paged,
        pv_page_p50,
        pvc_full,
        pvc_paged,
        watch_p50: percentile(&delays, 50),
        watch_p99: percentile(&delays, 99),
    })
}

fn print_point(p: &Point) {
    println!(
        "{:>8} {:>8} {:>8.1} {:>8.1} {:>8.0} {:>7.1}ms {:>7.1}ms {:>7.2}ms {:>7.1}ms {:>7.1}ms {:>6.2}ms {:>6.2}ms",
        p.volumes,
        p.claims,
        p.memory.rss as f64 / MIB,
        p.hwm_after_lists as f64 / MIB,
        p.create_rate,
        millis(p.pv_full),
        millis(p.pv_paged),
        millis(p.pv_page_p50),
        millis(p.pvc_full),
        millis(p.pvc_paged),
        millis(p.watch_p50),
        millis(p.watch_p99),
    );
}

/// Creates volumes and claims `from..to` with `concurrency` requests in flight.
async fn fill(client: &Client, from: usize, to: usize, concurrency: usize) -> Result<(), Error> {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let create = move |i: usize| {
        let (pvs, pvcs) = (pvs.clone(), pvcs.clone());
        async move {
            let (volume, claim) = pair(i)?;
            pvs.create(&PostParams::default(), &volume)
                .await
                .map_err(api(format!("create volume {i}")))?;
            pvcs.create(&PostParams::default(), &claim)
                .await
                .map_err(api(format!("create claim {i}")))?;
            Ok(())
        }
    };
    concurrent::fill(from, to, concurrency, create).await?;
    Ok(())
}

/// A volume and a claim of realistic size (≈ 0.6 and 0.5 KiB of JSON).
fn pair(i: usize) -> Result<(PersistentVolume, PersistentVolumeClaim), Error> {
    let volume = manifest(
        "volume",
        json!({
            "metadata": {
                "name": format!("pv-{i:07}"),
                "labels": {"app": format!("app-{}", i % 100), "tier": "bench"},
                "annotations": {"pv.kubernetes.io/provisioned-by": "csi.stowage.io"},
            },
            "spec": {
                "capacity": {"storage": format!("{}Gi", 1 + i % 100)},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "csi": {
                    "driver": "csi.stowage.io",
                    "volumeHandle": format!("local/bench/{i:07}"),
                    "volumeAttributes": {"type": "local"},
                },
            }
        }),
    )?;
    let claim = manifest(
        "claim",
        json!({
            "metadata": {
                "name": format!("claim-{i:07}"),
                "labels": {"app": format!("app-{}", i % 100)},
            },
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "resources": {"requests": {"storage": format!("{}Gi", 1 + i % 100)}},
                "selector": {"matchLabels": {"app": format!("app-{}", i % 100)}},
            }
        }),
    )?;
    Ok((volume, claim))
}

/// What a LIST answer needs to be walked: its items counted, its continue token.
#[derive(serde::Deserialize)]
struct ListHead {
    metadata: ListMeta,
    items: Vec<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct ListMeta {
    #[serde(rename = "continue")]
    continue_token: Option<String>,
}

/// One LIST of everything, timed from request to the last byte of the answer.
async fn list_full(
    client: &Client,
    path: &'static str,
    expected: usize,
) -> Result<Duration, Error> {
    let started = Instant::now();
    let text = list_text(client, path, &ListParams::default()).await?;
    let elapsed = started.elapsed();
    let head = list_head(path, &text)?;
    check_count(path, head.items.len(), expected)?;
    Ok(elapsed)
}

/// LISTs of `page` items following continue tokens to the end: the total time and the
/// median page's.
async fn list_paged(
    client: &Client,
    path: &'static str,
    page: u32,
    expected: usize,
) -> Result<(Duration, Duration), Error> {
    let mut pages = Vec::new();
    let mut seen = 0;
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(page);
        if let Some(token) = token.take() {
            params = params.continue_token(&token);
        }
        let started = Instant::now();
        let text = list_text(client, path, &params).await?;
        pages.push(started.elapsed());
        let head = list_head(path, &text)?;
        seen += head.items.len();
        match head.metadata.continue_token.filter(|t| !t.is_empty()) {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    check_count(path, seen, expected)?;
    let total = pages.iter().sum();
    pages.sort();
    Ok((total, percentile(&pages, 50)))
}

fn list_head(path: &'static str, text: &str) -> Result<ListHead, Error> {
    serde_json::from_str(text).map_err(|source| Error::ListAnswer { path, source })
}

fn check_count(path: &'static str, got: usize, expected: usize) -> Result<(), Error> {
    if got == expected {
        Ok(())
    } else {
        Err(Error::ListCount {
            path,
            got,
            expected,
        })
    }
}

/// The text of one LIST answer (the server's JSON, not decoded into objects).
async fn list_text(
    client: &Client,
    path: &'static str,
    params: &ListParams,
) -> Result<String, Error> {
    let request = kube::core::Request::new(path)
        .list(params)
        .map_err(|source| Error::ListRequest { path, source })?;
    client
        .request_text(request)
        .await
        .map_err(api(format!("LIST {path}")))
}

/// One volume whose label is changed to time watch delivery: from sending the patch
/// to a watcher of every volume receiving the change (one client clock).
struct Probe {
    volumes: Api<PersistentVolume>,
    sequence: AtomicUsize,
}

const PROBE: &str = "probe";
/// How long a probe's change may take to arrive on the watch.
const WATCH_SILENCE: Duration = Duration::from_secs(30);

impl Probe {
    async fn create(client: &Client) -> Result<Self, Error> {
        let volumes: Api<PersistentVolume> = Api::all(client.clone());
        let volume: PersistentVolume = manifest(
            "probe",
            json!({
                "metadata": {"name": PROBE},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "",
                    "hostPath": {"path": "/srv/probe"},
                }
            }),
        )?;
        volumes
            .create(&PostParams::default(), &volume)
            .await
            .map_err(api("create the probe"))?;
        Ok(Self {
            volumes,
            sequence: AtomicUsize::new(0),
        })
    }

    /// `count` changes one after the other, each waited for on the watch.
    async fn delays(&self, count: usize) -> Result<Vec<Duration>, Error> {
        let from = self
            .volumes
            .get(PROBE)
            .await
            .map_err(api("get the probe"))?
            .resource_version()
            .unwrap_or_default();
        let mut events = self
            .volumes
            .watch(&WatchParams::default().timeout(290), &from)
            .await
            .map_err(Error::Watch)?
            .boxed();
        let mut delays = Vec::with_capacity(count);
        for _ in 0..count {
            let sequence = self.sequence.fetch_add(1, Ordering::Relaxed).to_string();
            let patch = json!({"metadata": {"labels": {"sequence": sequence}}});
            let sent = Instant::now();
            self.volumes
                .patch(PROBE, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api("patch the probe"))?;
            loop {
                match tokio::time::timeout(WATCH_SILENCE, events.next()).await {
                    Ok(Some(Ok(WatchEvent::Modified(object))))
                        if object.name_any() == PROBE
                            && object.labels().get("sequence") == Some(&sequence) =>
                    {
                        delays.push(sent.elapsed());
                        break;
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(e))) => return Err(Error::Watch(e)),
                    Ok(None) => return Err(Error::WatchEnded),
                    Err(_) => return Err(Error::WatchSilent(WATCH_SILENCE)),
                }
            }
        }
        Ok(delays)
    }
}

fn draw(prefix: &std::path::Path, points: &[Point]) -> Result<(), Error> {
    let x = |p: &Point| (p.volumes + p.claims) as f64;
    let curve = |label: &str, y: &dyn Fn(&Point) -> f64| {
        Series::new(label, points.iter().map(|p| (x(p), y(p))).collect())
    };
    let charts = [
        (
            "memory",
            "API server memory against stored objects",
            "MiB",
            vec![
                curve("RSS after the creates", &|p| p.memory.rss as f64 / MIB),
                curve("peak RSS after the LISTs", &|p| {
                    p.hwm_after_lists as f64 / MIB
                }),
            ],
        ),
        (
            "list",
            "LIST latency against stored objects (PVs + PVCs)",
            "ms",
            vec![
                curve("PVs, one LIST", &|p| millis(p.pv_full)),
                curve("PVs, all pages", &|p| millis(p.pv_paged)),
                curve("PVCs, one LIST", &|p| millis(p.pvc_full)),
                curve("PVCs, all pages", &|p| millis(p.pvc_paged)),
            ],
        ),
        (
            "page",
            "one LIST page against stored objects",
            "ms",
            vec![curve("PV page p50", &|p| millis(p.pv_page_p50))],
        ),
        (
            "watch",
            "watch delivery (patch sent -> event received)",
            "ms",
            vec![
                curve("p50", &|p| millis(p.watch_p50)),
                curve("p99", &|p| millis(p.watch_p99)),
            ],
        ),
    ];
    for (suffix, title, y_label, series) in &charts {
        let mut path = prefix.as_os_str().to_owned();
        path.push(format!("-{suffix}.png"));
        let path = std::path::PathBuf::from(path);
        let chart = Chart {
            title,
            x_label: "stored objects (PVs + PVCs)",
            y_label,
            series,
        };
        plot::draw(&path, &chart)?;
        println!("  curve drawn to {}", path.display());
    }
    Ok(())
}
