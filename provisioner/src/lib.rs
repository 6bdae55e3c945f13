//! Stowage provisioner: the binder that matches PersistentVolumeClaims to
//! PersistentVolumes as kube-controller-manager does, the reclaimer that carries
//! out Delete and Recycle, and dynamic provisioning.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backoff;
pub mod binder;
mod binding;
pub mod capacity;
pub mod controllers;
pub mod error;
pub mod events;
pub mod gone_nodes;
mod groupsnapshot;
pub mod leader;
pub mod metrics;
mod modify;
mod protection;
pub mod provision;
mod reclaim;
mod snapshot;
mod steps;
mod volumes;
mod watch;

use std::future::Future;
use std::sync::Arc;

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
    /// Central (the cluster's volumes) or one node's.
    pub scope: Scope,
    /// Where DeleteVolume goes: the controller (central) or this node's plugin.
    pub csi: Option<tonic::transport::Channel>,
    /// Prefixes below which local directories may be scrubbed (node scope).
    pub host_path_allow: Vec<std::path::PathBuf>,
    /// Where the controllers count what they do.
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
    let cx = Context {
        volumes: watch::reflect(Api::all(client.clone()), &changes),
        claims: watch::reflect(Api::all(client.clone()), &changes),
        classes: watch::reflect(Api::all(client.clone()), &changes),
        changes,
        client,
        config,
    };
    watch::ready(&cx.volumes).await?;
    watch::ready(&cx.claims).await?;
    watch::ready(&cx.classes).await?;
    cx.config.health.set_ready(true);
    tokio::pin!(shutdown);
    let Some(leader) = cx.config.leader.clone() else {
        cx.config.metrics.leader.set(1);
        return act(&cx, shutdown).await;
    };
    let mut elector = leader::Elector::new(cx.client.clone(), leader);
    tokio::select! {
        () = elector.acquire() => {}
        () = &mut shutdown => return Ok(()),
    }
    cx.config.metrics.leader.set(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let acting = act(&cx, async {
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
    cx.config.metrics.leader.set(0);
    result
}

/// What every controller is made from: the API, the caches all of them read (each
/// event of which pokes `changes`) and this instance's settings.
#[derive(Clone)]
pub(crate) struct Context {
    pub(crate) client: Client,
    pub(crate) volumes: Store<PersistentVolume>,
    pub(crate) claims: Store<PersistentVolumeClaim>,
    pub(crate) classes: Store<StorageClass>,
    pub(crate) changes: watch::Changes,
    pub(crate) config: Config,
}

/// Runs this scope's controllers until `shutdown` completes.
async fn act(cx: &Context, shutdown: impl Future<Output = ()>) -> Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopped_signal = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let enabled = |controller| cx.config.controllers.enabled(controller);
    let central = cx.config.scope == Scope::Central;
    let binding = run_if(
        central && enabled(Controller::Binder),
        stopped_signal(),
        || {
            let stores = (cx.volumes.clone(), cx.claims.clone(), cx.classes.clone());
            let deferral = cx
                .config
                .defer_binding_to
                .as_ref()
                .map(|lease| leader::LeaseObserver::new(cx.client.clone(), lease));
            binder::Binder::new(cx.client.clone(), stores, cx.config.metrics.clone())
                .defer_to(deferral)
                .run(cx.changes.subscribe(), stopped_signal())
        },
    );
    let protections = protection::Protections {
        claims: enabled(Controller::PvcProtection),
        volumes: enabled(Controller::PvProtection),
    };
    // As kube-controller-manager's, one instance for the cluster: the central one.
    let protecting = steps_if(
        central && (protections.claims || protections.volumes),
        cx,
        stopped_signal,
        || protection::Protector::new(cx, protections),
    );
    let reclaiming = steps_if(enabled(Controller::Reclaimer), cx, stopped_signal, || {
        reclaim::Reclaimer::new(cx)
    });
    let provisioning = steps_if(
        enabled(Controller::Provisioner) || enabled(Controller::Resizer),
        cx,
        stopped_signal,
        || provision::Provisioner::new(cx),
    );
    let snapshotting = steps_if(enabled(Controller::Snapshotter), cx, stopped_signal, || {
        snapshot::Snapshotter::new(cx)
    });
    let modifying = steps_if(enabled(Controller::Modifier), cx, stopped_signal, || {
        modify::Modifier::new(cx)
    });
    let group_snapshotting = steps_if(
        enabled(Controller::GroupSnapshotter),
        cx,
        stopped_signal,
        || groupsnapshot::GroupSnapshotter::new(cx),
    );
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

/// Runs the controller `start` makes when `enabled`; a disabled one ends when the
/// others are stopped, so that every controller of `act` ends together.
async fn run_if<F>(
    enabled: bool,
    stopped: impl Future<Output = ()>,
    start: impl FnOnce() -> F,
) -> Result<()>
where
    F: Future<Output = Result<()>>,
{
    if enabled {
        start().await
    } else {
        stopped.await;
        Ok(())
    }
}

/// [`run_if`] for a controller of keyed steps, woken by the caches' changes.
async fn steps_if<C, S, F>(
    enabled: bool,
    cx: &Context,
    stopped: S,
    start: impl FnOnce() -> Arc<C>,
) -> Result<()>
where
    C: steps::Stepped,
    S: Fn() -> F,
    F: Future<Output = ()>,
{
    run_if(enabled, stopped(), || {
        steps::run(start(), cx.changes.subscribe(), stopped())
    })
    .await
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
