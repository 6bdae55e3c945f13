//! The reclaimer: carries out Delete and Recycle for Released (and, to retry,
//! Failed) volumes that this instance owns (see `plan`). Each operation runs as
//! its own task, at most one per volume; a failure marks the volume Failed with
//! upstream's reason and an event, and is retried with exponential backoff.

pub mod plan;
pub mod scrub;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use csi_proto::v1::DeleteVolumeRequest;
use csi_proto::v1::controller_client::ControllerClient;
use driver_contract::export::METADATA_DIR;
use k8s_openapi::api::core::v1::{Node, PersistentVolume};
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use kube::{Api, ResourceExt};
use nfs_session::{NfsError, Session};

use self::plan::{FAILED_DELETE, FAILED_RECYCLE, Nodes, Plan, plan};
use crate::Context;
use crate::binder::{ReclaimPolicy, VolumePhase};
use crate::events::EventRecorder;
use crate::provision::secrets;
use crate::steps::{Stepped, Steps};
use crate::{Result, volumes};

/// The finalizer external-provisioner puts on the volumes it made; removed once
/// DeleteVolume succeeded.
pub const PROVISIONER_FINALIZER: &str = "external-provisioner.volume.kubernetes.io/finalizer";

/// Why a reclaim operation failed; the message goes into the volume's status.
#[derive(Debug, thiserror::Error)]
pub enum ReclaimError {
    /// A local path that is relative or climbs with `..`.
    #[error("{0:?} must be an absolute path without '..'")]
    NotAbsolute(String),
    /// A local path that names no entry (`/`).
    #[error("{0:?} names no entry to remove")]
    NoEntry(String),
    /// A local path not strictly below a `--host-path-allow` prefix.
    #[error(
        "{raw:?} (resolved {}) is not strictly below a --host-path-allow prefix",
        .resolved.display()
    )]
    NotAllowed { raw: String, resolved: PathBuf },
    /// A tree deeper than a scrub descends.
    #[error("{} is more than {} directories deep", .0.display(), scrub::MAX_DEPTH)]
    TooDeep(PathBuf),
    /// Another filesystem mounted inside what would be scrubbed.
    #[error("{} is a mount point; unmount it first", .0.display())]
    MountPoint(PathBuf),
    /// The NFS directory to scrub is not there.
    #[error("{export}/{path} does not exist")]
    NfsMissing { export: String, path: String },
    /// The NFS directory holds dynamic volumes: it is a class's root, not a volume.
    #[error(
        "{export}/{path} holds Stowage's dynamic volumes ({METADATA_DIR}); refusing to scrub it"
    )]
    DynamicRoot { export: String, path: String },
    #[error("{path}: {error}")]
    Io { path: String, error: String },
    #[error(transparent)]
    Nfs(#[from] NfsError),
    #[error("DeleteVolume failed: {}: {}", .0.code(), .0.message())]
    Csi(tonic::Status),
    #[error("no CSI endpoint is configured to call DeleteVolume on")]
    NoCsiEndpoint,
    #[error(transparent)]
    Secret(#[from] secrets::SecretError),
    #[error("{what} task failed: {error}")]
    Task {
        what: &'static str,
        error: tokio::task::JoinError,
    },
}

pub struct Reclaimer {
    cx: Context,
    events: EventRecorder,
    /// The volumes worked on, by name, and their backoff.
    steps: Steps,
    /// The cluster's nodes as last asked, and when; asked only when a volume's
    /// owner depends on them (a hostPath volume without node affinity), at most
    /// once per `NODES_TTL` while one does.
    nodes: Mutex<(Nodes, Option<Instant>)>,
    asking_nodes: AtomicBool,
}

/// How long an answer about the nodes is used before it is asked again.
const NODES_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl Reclaimer {
    pub fn new(cx: &Context) -> Arc<Self> {
        Arc::new(Self {
            events: EventRecorder::new(cx.client.clone()),
            cx: cx.clone(),
            steps: Steps::new("reclaim"),
            nodes: Mutex::new((Nodes::Unknown, None)),
            asking_nodes: AtomicBool::new(false),
        })
    }

    /// Starts an operation for every volume that needs one and has none running.
    fn start_work(self: &Arc<Self>) {
        let now = Instant::now();
        let state = self.cx.volumes.state();
        // A stale answer is no answer: the volumes that depend on it ask again.
        let nodes = match crate::lock(&self.nodes).clone() {
            (nodes, Some(at)) if now.duration_since(at) <= NODES_TTL => nodes,
            _ => Nodes::Unknown,
        };
        let mut ask_nodes = false;
        self.steps
            .backoff()
            .retain(|name| state.iter().any(|pv| pv.name_any() == name));
        for pv in state {
            let phase = VolumePhase::parse(pv.status.as_ref().and_then(|s| s.phase.as_deref()));
            if !matches!(phase, VolumePhase::Released | VolumePhase::Failed)
                || pv.metadata.deletion_timestamp.is_some() && !has_our_finalizer(&pv)
            {
                continue;
            }
            let policy = ReclaimPolicy::parse(
                pv.spec
                    .as_ref()
                    .and_then(|s| s.persistent_volume_reclaim_policy.as_deref()),
            );
            let plan = plan(&pv, policy, &self.cx.config.scope, &nodes);
            let name = pv.name_any();
            if plan == Plan::AskNodes {
                ask_nodes = true;
                continue;
            }
            if plan == Plan::NotOurs
                || already_failed_so(&pv, &plan)
                || !self.steps.ready(&name)
                || !self.steps.begin(&name)
            {
                continue;
            }
            let this = self.clone();
            self.cx.config.metrics.reclaims_in_flight.inc();
            tokio::spawn(async move {
                if let Err(error) = this.reclaim(&pv, plan).await {
                    tracing::debug!(volume = %name, %error, "reclaim deferred");
                }
                this.cx.config.metrics.reclaims_in_flight.dec();
                this.steps.end(&name);
            });
        }
        if ask_nodes {
            self.ask_nodes();
        }
    }

    /// Counts the nodes (two are enough to know there is not one) in the
    /// background; the pass after the answer uses it.
    fn ask_nodes(self: &Arc<Self>) {
        if self.asking_nodes.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let api: Api<Node> = Api::all(this.cx.client.clone());
            match api.list_metadata(&ListParams::default().limit(2)).await {
                Ok(list) => {
                    let nodes = match list.items.as_slice() {
                        [only] if list.metadata.continue_.as_deref().is_none_or(str::is_empty) => {
                            Nodes::One(only.name_any())
                        }
                        _ => Nodes::NotOne,
                    };
                    *crate::lock(&this.nodes) = (nodes, Some(Instant::now()));
                }
                Err(error) => tracing::warn!(%error, "could not count the nodes"),
            }
            this.asking_nodes.store(false, Ordering::Release);
            this.steps.wake();
        });
    }

    fn api(&self) -> Api<PersistentVolume> {
        Api::all(self.cx.client.clone())
    }

    /// Carries out `plan` on a fresh read of the volume; API errors only defer.
    async fn reclaim(&self, cached: &PersistentVolume, plan: Plan) -> Result<()> {
        let api = self.api();
        let Some(pv) = api.get_opt(&cached.name_any()).await? else {
            return Ok(());
        };
        if pv.resource_version() != cached.resource_version() {
            return Ok(()); // changed since the pass looked: the next pass decides again
        }
        let name = pv.name_any();
        let (reason, outcome) = match plan {
            Plan::NotOurs | Plan::AskNodes => return Ok(()),
            Plan::Impossible { reason, message } => {
                return self.fail(&pv, reason, &message).await;
            }
            Plan::DeleteCsi { handle } => (FAILED_DELETE, self.delete_volume(&pv, &handle).await),
            Plan::DeleteLocal { path } => {
                tracing::info!(volume = %name, %path, "deleting: removing the hostPath directory");
                let allow = self.cx.config.host_path_allow.clone();
                let removed = off_thread("remove", move || scrub::remove(&path, &allow)).await;
                (FAILED_DELETE, removed)
            }
            Plan::RecycleNfs { export, path } => {
                tracing::info!(volume = %name, %export, "recycling: scrubbing the NFS directory");
                (FAILED_RECYCLE, scrub_nfs(&export, &path).await)
            }
            Plan::RecycleLocal { path } => {
                tracing::info!(volume = %name, %path, "recycling: scrubbing the local directory");
                let allow = self.cx.config.host_path_allow.clone();
                let scrubbed = off_thread("scrub", move || scrub::scrub(&path, &allow)).await;
                (FAILED_RECYCLE, scrubbed)
            }
        };
        let operation = if reason == FAILED_DELETE {
            "delete"
        } else {
            "recycle"
        };
        let metrics = &self.cx.config.metrics;
        if let Err(error) = outcome {
            metrics.reclaimed(operation, "failure");
            let wait = self.steps.backoff().failed(&name, Instant::now());
            tracing::warn!(volume = %name, %error, retry_in = ?wait, "reclaim failed");
            return self.fail(&pv, reason, &error.to_string()).await;
        }
        metrics.reclaimed(operation, "success");
        self.steps.backoff().succeeded(&name);
        if reason == FAILED_DELETE {
            self.remove(&api, pv).await
        } else {
            self.events
                .normal(
                    &crate::events::volume_reference(&pv),
                    "VolumeRecycled",
                    "Volume recycled",
                )
                .await;
            volumes::unbind(&api, &pv).await.map(drop)
        }
    }

    async fn delete_volume(&self, pv: &PersistentVolume, handle: &str) -> Result<(), ReclaimError> {
        let channel = self
            .cx
            .config
            .csi
            .clone()
            .ok_or(ReclaimError::NoCsiEndpoint)?;
        let secrets = match secrets::deletion_reference(pv.annotations()) {
            Some(reference) => secrets::fetch(&self.cx.client, &reference).await?,
            None => Default::default(),
        };
        let request = DeleteVolumeRequest {
            volume_id: handle.to_string(),
            secrets,
        };
        match ControllerClient::new(channel).delete_volume(request).await {
            Ok(_) => Ok(()),
            // The spec makes DeleteVolume of an unknown volume OK; be lenient anyway.
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(status) => Err(ReclaimError::Csi(status)),
        }
    }

    /// Removes the PersistentVolume once its storage is gone.
    async fn remove(&self, api: &Api<PersistentVolume>, mut pv: PersistentVolume) -> Result<()> {
        let name = pv.name_any();
        if has_our_finalizer(&pv) {
            pv.finalizers_mut().retain(|f| f != PROVISIONER_FINALIZER);
            pv = api.replace(&name, &PostParams::default(), &pv).await?;
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pv.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                tracing::info!(volume = %name, "volume deleted");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn fail(&self, pv: &PersistentVolume, reason: &'static str, message: &str) -> Result<()> {
        self.events
            .warning(&crate::events::volume_reference(pv), reason, message)
            .await;
        volumes::set_phase(&self.api(), pv, VolumePhase::Failed, Some(message))
            .await
            .map(drop)
    }
}

impl Stepped for Reclaimer {
    fn steps(&self) -> &Steps {
        &self.steps
    }
    fn pass(self: &Arc<Self>) {
        self.start_work();
    }
}

/// Runs blocking file work (`what`: how a failed task is named) off the async threads.
async fn off_thread(
    what: &'static str,
    work: impl FnOnce() -> Result<(), ReclaimError> + Send + 'static,
) -> Result<(), ReclaimError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|error| Err(ReclaimError::Task { what, error }))
}

fn has_our_finalizer(pv: &PersistentVolume) -> bool {
    pv.finalizers().iter().any(|f| f == PROVISIONER_FINALIZER)
}

/// An impossible reclaim already recorded needs no second write.
fn already_failed_so(pv: &PersistentVolume, plan: &Plan) -> bool {
    let Plan::Impossible { message, .. } = plan else {
        return false;
    };
    pv.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Failed") && s.message.as_deref() == Some(message.as_str())
    })
}

/// Empties a directory of an export through the userspace client. A directory
/// holding Stowage's own metadata is the root of dynamic volumes: refused.
async fn scrub_nfs(
    export: &driver_contract::export::Export,
    path: &[String],
) -> Result<(), ReclaimError> {
    let mut session = Session::connect(export).await?;
    let result = async {
        let (export, path_text) = (export.to_string(), path.join("/"));
        let Some(dir) = session.resolve(path).await? else {
            return Err(ReclaimError::NfsMissing {
                export,
                path: path_text,
            });
        };
        if session.lookup(&dir, METADATA_DIR).await?.is_some() {
            return Err(ReclaimError::DynamicRoot {
                export,
                path: path_text,
            });
        }
        session.empty_dir(&dir).await?;
        Ok(())
    }
    .await;
    session.close().await;
    result
}
