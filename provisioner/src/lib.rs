//! Stowage provisioner: the binder that matches PersistentVolumeClaims to
//! PersistentVolumes as kube-controller-manager does, the reclaimer that carries
//! out Delete and Recycle, and dynamic provisioning.

mod backoff;
pub mod binder;
pub mod binding;
pub mod capacity;
pub mod controllers;
pub mod error;
pub mod events;
pub mod gone_nodes;
pub mod groupsnapshot;
pub mod leader;
pub mod metrics;
pub mod modify;
pub mod protection;
pub mod provision;
pub mod reclaim;
pub mod snapshot;
mod steps;
pub mod volumes;
pub mod watch;

use std::future::Future;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::reflector::Store;
use kube::{Api, Client};

pub use controllers::{Controller, Controllers};
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
    /// Act only while holding this lease; `None`: always act (one instance).
    pub leader: Option<leader::LeaderConfig>,
    /// The controllers this instance runs (`--controllers`).
    pub controllers: Controllers,
    /// The binder stands down while this Lease is held (kube-controller-manager's,
    /// whose PV controller then binds) and binds when it is not; `None`: it binds.
    pub defer_binding_to: Option<leader::LeaseRef>,
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
            leader: None,
            controllers: Controllers::default(),
            defer_binding_to: None,
        }
    }
}

/// Runs the controllers of `config.scope` that `config.controllers` enables until
/// `shutdown` completes: centrally the binder, the provisioner and resizer (NFS)
/// and the reclaimer; on a node, the provisioner, resizer and reclaimer for that
/// node's volumes.
pub async fn run(client: Client, config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    let changes = watch::Changes::default();
    let stores = Stores {
        volumes: watch::reflect(Api::all(client.clone()), &changes),
        claims: watch::reflect(Api::all(client.clone()), &changes),
        classes: watch::reflect(Api::all(client.clone()), &changes),
    };
    watch::ready(&stores.volumes).await?;
    watch::ready(&stores.claims).await?;
    watch::ready(&stores.classes).await?;
    config.health.set_ready(true);
    tokio::pin!(shutdown);
    let Some(leader) = config.leader.clone() else {
        config.metrics.leader.set(1);
        return act(&client, &config, stores, &changes, shutdown).await;
    };
    let mut elector = leader::Elector::new(client.clone(), leader);
    tokio::select! {
        () = elector.acquire() => {}
        () = &mut shutdown => return Ok(()),
    }
    config.metrics.leader.set(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let acting = act(&client, &config, stores, &changes, async {
        let _ = stopped.await;
    });
    tokio::pin!(acting);
    tokio::select! {
        result = &mut acting => return result,
        // As upstream, a lost lease ends the process: its replacement starts clean.
        () = elector.hold() => return Err(Error::LostLeadership),
        () = &mut shutdown => {}
    }
    let _ = stop.send(());
    let result = acting.await;
    elector.release().await;
    config.metrics.leader.set(0);
    result
}

/// The caches every controller reads.
struct Stores {
    volumes: Store<PersistentVolume>,
    claims: Store<PersistentVolumeClaim>,
    classes: Store<StorageClass>,
}

/// Runs this scope's controllers until `shutdown` completes.
async fn act(
    client: &Client,
    config: &Config,
    stores: Stores,
    changes: &watch::Changes,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let Stores {
        volumes,
        claims,
        classes,
    } = stores;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopped_signal = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let enabled = |controller| config.controllers.enabled(controller);
    let reclaiming = async {
        if enabled(Controller::Reclaimer) {
            reclaim::Reclaimer::new(client.clone(), volumes.clone(), config.clone())
                .run(changes.subscribe(), stopped_signal())
                .await
        } else {
            stopped_signal().await;
            Ok(())
        }
    };
    let provisioning = async {
        if enabled(Controller::Provisioner) || enabled(Controller::Resizer) {
            let stores = (claims.clone(), classes.clone(), volumes.clone());
            provision::Provisioner::new(client.clone(), stores, config.clone())
                .run(changes.subscribe(), stopped_signal())
                .await
        } else {
            stopped_signal().await;
            Ok(())
        }
    };
    let binding = async {
        if config.scope == Scope::Central && enabled(Controller::Binder) {
            let stores = (volumes.clone(), claims.clone(), classes.clone());
            let deferral = config
                .defer_binding_to
                .as_ref()
                .map(|lease| leader::LeaseObserver::new(client.clone(), lease));
            binder::Binder::new(client.clone(), stores, config.metrics.clone())
                .defer_to(deferral)
                .run(changes.subscribe(), stopped_signal())
                .await
        } else {
            stopped_signal().await;
            Ok(())
        }
    };
    let snapshotting = async {
        if enabled(Controller::Snapshotter) {
            let stores = (claims.clone(), volumes.clone());
            let controller =
                snapshot::Snapshotter::new(client.clone(), stores, changes, config.clone());
            steps::run(controller, changes.subscribe(), stopped_signal()).await
        } else {
            stopped_signal().await;
            Ok(())
        }
    };
    let modifying = async {
        if enabled(Controller::Modifier) {
            let stores = (claims.clone(), volumes.clone());
            let controller = modify::Modifier::new(client.clone(), stores, changes, config.clone());
            steps::run(controller, changes.subscribe(), stopped_signal()).await
        } else {
            stopped_signal().await;
            Ok(())
        }
    };
    let group_snapshotting = async {
        if enabled(Controller::GroupSnapshotter) {
            let stores = (claims.clone(), volumes.clone());
            let controller = groupsnapshot::GroupSnapshotter::new(
                client.clone(),
                stores,
                changes,
                config.clone(),
            );
            steps::run(controller, changes.subscribe(), stopped_signal()).await
        } else {
            stopped_signal().await;
            Ok(())
        }
    };
    let protecting = async {
        let protections = protection::Protections {
            claims: enabled(Controller::PvcProtection),
            volumes: enabled(Controller::PvProtection),
        };
        // As kube-controller-manager's, one instance for the cluster: the central one.
        if config.scope == Scope::Central && (protections.claims || protections.volumes) {
            let stores = (claims.clone(), volumes.clone());
            let controller =
                protection::Protector::new(client.clone(), stores, changes, protections);
            steps::run(controller, changes.subscribe(), stopped_signal()).await
        } else {
            stopped_signal().await;
            Ok(())
        }
    };
    let work = async {
        tokio::try_join!(
            protecting,
            reclaiming,
            provisioning,
            binding,
            snapshotting,
            modifying,
            group_snapshotting
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
