//! Stowage provisioner: the binder that matches PersistentVolumeClaims to
//! PersistentVolumes as kube-controller-manager does, the reclaimer that carries
//! out Delete and Recycle, and dynamic provisioning.

mod backoff;
pub mod binder;
pub mod error;
pub mod events;
pub mod metrics;
pub mod provision;
pub mod reclaim;
pub mod volumes;
pub mod watch;

use std::future::Future;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
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

/// Runs the controllers of `config.scope` until `shutdown` completes: centrally the
/// binder, the provisioner (NFS) and the reclaimer; on a node, the provisioner and
/// reclaimer for that node's volumes.
pub async fn run(client: Client, config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    let changes = watch::Changes::default();
    let volumes = watch::reflect(Api::<PersistentVolume>::all(client.clone()), &changes);
    let claims = watch::reflect(Api::<PersistentVolumeClaim>::all(client.clone()), &changes);
    let classes = watch::reflect(Api::<StorageClass>::all(client.clone()), &changes);
    watch::ready(&volumes).await?;
    watch::ready(&claims).await?;
    watch::ready(&classes).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopped_signal = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let reclaimer = reclaim::Reclaimer::new(client.clone(), volumes.clone(), config.clone());
    let provisioner = provision::Provisioner::new(
        client.clone(),
        (claims.clone(), classes.clone(), volumes.clone()),
        config.clone(),
    );
    let binding = async {
        if config.scope == Scope::Central {
            let stores = (volumes, claims, classes);
            binder::Binder::new(client.clone(), stores, config.metrics.clone())
                .run(changes.subscribe(), stopped_signal())
                .await
        } else {
            stopped_signal().await;
            Ok(())
        }
    };
    config.health.set_ready(true);
    let work = async {
        tokio::try_join!(
            reclaimer.run(changes.subscribe(), stopped_signal()),
            provisioner.run(changes.subscribe(), stopped_signal()),
            binding,
        )
        .map(drop)
    };
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => return result,
        () = shutdown => {}
    }
    let _ = stop.send(true);
    work.await
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
