//! Create throughput and watch delivery of the embedded API server, measured
//! through the kube-rs client over HTTPS as the provisioner uses it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::concurrent;
use super::error::{Error, api, manifest};
use super::{millis, percentile};

#[derive(clap::Args)]
pub struct ApiserverBench {
    /// Objects to create.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Creates in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Instead: run `stowage apiserver` as its own process and grow it to this many
    /// PersistentVolumes and as many claims, measuring at each checkpoint.
    #[arg(long)]
    sweep: Option<usize>,
    /// Checkpoints of the sweep after the empty one.
    #[arg(long, default_value_t = 10)]
    checkpoints: usize,
    /// Watch-delivery samples per checkpoint of the sweep.
    #[arg(long, default_value_t = 200)]
    probes: usize,
    /// Page size of the sweep's paged LISTs.
    #[arg(long, default_value_t = 500)]
    page: u32,
    /// With --sweep: draw the curves as PREFIX-memory.png, -list.png, -page.png, -watch.png.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// With --sweep: the log filter of the `stowage apiserver` it starts (its stderr is this one's).
    #[arg(long, default_value = "warn")]
    child_log: String,
}

type SendTimes = Arc<Mutex<HashMap<String, Instant>>>;

pub async fn run(args: ApiserverBench) -> Result<(), Error> {
    if let Some(objects) = args.sweep {
        return super::apiserver_sweep::run(super::apiserver_sweep::Sweep {
            objects,
            checkpoints: args.checkpoints,
            concurrency: args.concurrency,
            probes: args.probes,
            page: args.page,
            plot: args.plot,
            log: args.child_log,
        })
        .await;
    }
    let dir = tempfile::TempDir::new().map_err(Error::TempDir)?;
    let (store, kubeconfig) = start_server(dir.path().to_path_buf())?;
    let client = crate::kubeconfig::client(&kubeconfig).await?;
    let pvs: Api<PersistentVolume> = Api::all(client);

    let start_version = pvs
        .list(&ListParams::default().limit(1))
        .await
        .map_err(api("list volumes"))?
        .metadata
        .resource_version
        .unwrap_or_default();
    let sent: SendTimes = Arc::default();
    let watcher = tokio::spawn(receive(
        pvs.clone(),
        start_version,
        sent.clone(),
        store,
        args.objects,
    ));

    let started = Instant::now();
    let create = move |index| create_volume(pvs.clone(), index, sent.clone());
    concurrent::fill(0, args.objects, args.concurrency, create).await?;
    let create_elapsed = started.elapsed();
    let received = watcher.await??;
    let watch_elapsed = received.last.duration_since(started);
    let (mut end_to_end, mut delivery) = (received.end_to_end, received.delivery);
    end_to_end.sort();
    delivery.sort();

    println!(
        "apiserver: {} PersistentVolumes, {} creates in flight",
        args.objects, args.concurrency
    );
    println!(
        "  create:  {:.0} objects/s ({:.2} s, each durable before its answer)",
        args.objects as f64 / create_elapsed.as_secs_f64(),
        create_elapsed.as_secs_f64()
    );
    println!(
        "  watch:   {:.0} events/s delivered ({:.2} s until the last event)",
        args.objects as f64 / watch_elapsed.as_secs_f64(),
        watch_elapsed.as_secs_f64()
    );
    for (what, samples) in [
        ("commit -> watch event received", &delivery),
        ("create sent -> watch event received", &end_to_end),
    ] {
        println!(
            "  {what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            millis(percentile(samples, 50)),
            millis(percentile(samples, 99)),
            millis(percentile(samples, 100)),
        );
    }
    Ok(())
}

/// The embedded API server on a loopback port, with its own runtime and threads as it
/// would have in its own process, so the client's work does not queue behind it on the
/// same executor.
pub(super) fn start_server(
    dir: std::path::PathBuf,
) -> Result<(apiserver::Store, std::path::PathBuf), Error> {
    let (started, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = started.send(Err(Error::Runtime(e)));
                return;
            }
        };
        let config = apiserver::Config::new(SocketAddr::from(([127, 0, 0, 1], 0)), dir);
        runtime.block_on(async move {
            match apiserver::ApiServer::bind(config).await {
                Ok(server) => {
                    let _ = started.send(Ok((
                        server.store().clone(),
                        server.kubeconfig().to_path_buf(),
                    )));
                    let _ = server.run(std::future::pending()).await;
                }
                Err(e) => {
                    let _ = started.send(Err(Error::ApiServer(e)));
                }
            }
        });
    });
    ready.recv().map_err(|_| Error::ApiServerGone)?
}

/// Creates volume `index`, noting when its request left.
async fn create_volume(
    pvs: Api<PersistentVolume>,
    index: usize,
    sent: SendTimes,
) -> Result<(), Error> {
    let name = format!("bench-{index:06}");
    let volume: PersistentVolume = manifest(
        "volume",
        json!({
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": format!("{}Gi", 1 + index % 100)},
                "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": format!("/srv/{name}")},
            }
        }),
    )?;
    // A writer that panicked holding the lock ends the run through its JoinError.
    sent.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(name, Instant::now());
    pvs.create(&PostParams::default(), &volume)
        .await
        .map_err(api(format!("create volume {index}")))?;
    Ok(())
}

struct Received {
    /// From the create request leaving the client to its event arriving: includes
    /// queueing behind the other creates and the fsync.
    end_to_end: Vec<Duration>,
    /// From the change becoming durable in the store to its event arriving:
    /// the watch path alone (same process, so one clock).
    delivery: Vec<Duration>,
    last: Instant,
}

/// Receives ADDED events until all objects arrived.
async fn receive(
    pvs: Api<PersistentVolume>,
    from: String,
    sent: SendTimes,
    store: apiserver::Store,
    total: usize,
) -> Result<Received, Error> {
    let mut received = Received {
        end_to_end: Vec::with_capacity(total),
        delivery: Vec::with_capacity(total),
        last: Instant::now(),
    };
    let params = WatchParams::default().timeout(290);
    let mut events = pvs
        .watch(&params, &from)
        .await
        .map_err(Error::Watch)?
        .boxed();
    while received.end_to_end.len() < total {
        match events.next().await {
            Some(Ok(WatchEvent::Added(object))) => {
                let now = Instant::now();
                received.last = now;
                let sent_at = sent
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&object.name_any());
                if let Some(sent_at) = sent_at {
                    received.end_to_end.push(now.duration_since(sent_at));
                }
                let revision = object
                    .resource_version()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if let Some(committed) = store.log().at(revision).and_then(|c| c.committed) {
                    received.delivery.push(now.duration_since(committed));
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(Error::Watch(e)),
            None => return Err(Error::WatchEnded),
        }
    }
    Ok(received)
}
