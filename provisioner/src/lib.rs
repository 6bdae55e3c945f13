//! Stowage provisioner: the binder that matches PersistentVolumeClaims to
//! PersistentVolumes as kube-controller-manager does, the reclaimer that carries
//! out Delete and Recycle, and dynamic provisioning.

pub mod binder;
pub mod error;
pub mod events;
pub mod metrics;
pub mod reclaim;
pub mod volumes;
pub mod watch;

use std::future::Future;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::{Api, Client};

pub use error::{Error, Result};
pub use metrics::Metrics;
pub use reclaim::plan::Scope;

/// What an instance does and may touch.
#[derive(Clone)]
pub struct Config {
    pub scope: Scope,
    /// Where DeleteVolume goes: the controller (central) or this node's plugin.
    pub csi: Option<tonic::transport::Channel>,
    /// Prefixes below which local directories may be scrubbed (node scope).
    pub host_path_allow: Vec<std::path::PathBuf>,
    pub metrics: Metrics,
    /// Set ready once the caches have listed.
    pub health: telemetry::Health,
}

impl Config {
    /// No CSI endpoint, nothing scrubbable, metrics not exported.
    pub fn new(scope: Scope) -> Self {
        Self {
            scope,
            csi: None,
            host_path_allow: Vec::new(),
            metrics: Metrics::default(),
            health: telemetry::Health::default(),
        }
    }
}

/// Runs the controllers of `config.scope` until `shutdown` completes: the binder
/// and reclaimer centrally; on a node, the reclaimer for that node's volumes.
pub async fn run(client: Client, config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    let changes = watch::Changes::default();
    let volumes = watch::reflect(Api::<PersistentVolume>::all(client.clone()), &changes);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopped_signal = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let central = config.scope == Scope::Central;
    let (metrics, health) = (config.metrics.clone(), config.health.clone());
    let reclaimer = reclaim::Reclaimer::new(client.clone(), volumes.clone(), config);
    let reclaiming = reclaimer.run(changes.subscribe(), stopped_signal());
    let binding = async {
        if central {
            let binder = binder::Binder::start(client, volumes, &changes, metrics).await?;
            health.set_ready(true);
            binder.run(changes.subscribe(), stopped_signal()).await
        } else {
            watch::ready(&volumes).await?;
            health.set_ready(true);
            stopped_signal().await;
            Ok(())
        }
    };
    let work = async { tokio::try_join!(reclaiming, binding).map(drop) };
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => return result,
        () = shutdown => {}
    }
    let _ = stop.send(true);
    work.await
}
