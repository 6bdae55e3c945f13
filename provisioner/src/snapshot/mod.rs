//! The snapshotter: plays snapshot-controller and csi-snapshotter for our driver's
//! VolumeSnapshotClasses. The central instance does snapshot-controller's part
//! (finalizers, the dynamic snapshot's content, the snapshot's status copied from
//! its content, deletion); the instance where a content's data lives (a local
//! volume's node, or central for NFS) does csi-snapshotter's part (CreateSnapshot,
//! the content's status, DeleteSnapshot). Decisions are in [`plan`]; every pass
//! redoes them from the caches, one write per object per pass.

pub mod model;
pub mod plan;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use csi_proto::DRIVER_NAME;
use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::{CreateSnapshotRequest, DeleteSnapshotRequest, ListSnapshotsRequest};
use driver_contract::ids::{Location, SnapshotId, VolumeId};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;

use self::model::{CONTENT_FINALIZER, Class, Content, SNAPSHOT_FINALIZER, Snapshot};
use self::plan::{ContentStep, SnapshotStep, Source};
use crate::steps::Steps;
use crate::watch::Changes;
use crate::{Config, Result, Scope};

/// Why one step failed; the object is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("no CSI endpoint configured")]
    NoCsi,
    #[error("{rpc} failed: {status}")]
    Csi {
        rpc: &'static str,
        status: tonic::Status,
    },
    #[error("the driver does not know snapshot {0}")]
    Unknown(String),
}

pub struct Snapshotter {
    client: Client,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    snapshots: Store<DynamicObject>,
    contents: Store<DynamicObject>,
    classes: Store<DynamicObject>,
    config: Config,
    steps: Arc<Steps>,
}

/// Starts a reflector over an untyped kind whose events poke `changes`.
pub(crate) fn reflect(
    client: &Client,
    resource: &ApiResource,
    changes: &Changes,
) -> Store<DynamicObject> {
    let writer = reflector::store::Writer::new(resource.clone());
    let reader = writer.as_reader();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    let changes = changes.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(error) = event {
                tracing::warn!(%error, "snapshot watch failed (are the snapshot CRDs installed?); retrying");
            }
            changes.poke();
        }
    });
    reader
}

impl Snapshotter {
    pub fn new(
        client: Client,
        stores: (Store<PersistentVolumeClaim>, Store<PersistentVolume>),
        changes: &Changes,
        config: Config,
    ) -> Arc<Self> {
        let (claims, volumes) = stores;
        Arc::new(Self {
            snapshots: reflect(&client, &model::snapshots(), changes),
            contents: reflect(&client, &model::contents(), changes),
            classes: reflect(&client, &model::classes(), changes),
            client,
            claims,
            volumes,
            config,
            steps: Arc::new(Steps::new("snapshot step")),
        })
    }

    pub async fn run(
        self: Arc<Self>,
        changes: watch::Receiver<u64>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        self.steps.run(changes, || self.pass(), shutdown).await;
        Ok(())
    }

    fn pass(self: &Arc<Self>) {
        let snapshots: Vec<Snapshot> = parse_all(&self.snapshots);
        let contents: Vec<Content> = parse_all(&self.contents);
        let classes: Vec<Class> = parse_all(&self.classes);
        if self.config.scope == Scope::Central {
            let by_name: HashMap<&str, &Content> = contents
                .iter()
                .filter_map(|c| Some((c.metadata.name.as_deref()?, c)))
                .collect();
            for snapshot in &snapshots {
                let step = self.snapshot_step(snapshot, &by_name, &classes);
                if step != SnapshotStep::Nothing {
                    let key = format!(
                        "snapshot/{}",
                        snapshot.metadata.uid.as_deref().unwrap_or("")
                    );
                    let (this, snapshot) = (self.clone(), snapshot.clone());
                    self.steps
                        .start(key, async move { this.do_snapshot(&snapshot, step).await });
                }
            }
        }
        let uids: HashMap<(String, String), String> = snapshots
            .iter()
            .filter_map(|s| {
                let m = &s.metadata;
                Some(((m.namespace.clone()?, m.name.clone()?), m.uid.clone()?))
            })
            .collect();
        for content in contents.iter().filter(|c| self.mine(c)) {
            let reference = &content.spec.volume_snapshot_ref;
            let uid = reference
                .namespace
                .clone()
                .zip(reference.name.clone())
                .and_then(|key| uids.get(&key));
            let step = plan::content_step(content, uid.map(String::as_str));
            if step != ContentStep::Nothing {
                let key = format!("content/{}", content.metadata.name.as_deref().unwrap_or(""));
                let (this, content) = (self.clone(), content.clone());
                self.steps
                    .start(key, async move { this.do_content(&content, step).await });
            }
        }
    }

    fn snapshot_step(
        &self,
        snapshot: &Snapshot,
        contents: &HashMap<&str, &Content>,
        classes: &[Class],
    ) -> SnapshotStep {
        let uid = snapshot.metadata.uid.as_deref().unwrap_or_default();
        let content_name = match &snapshot.spec.source.volume_snapshot_content_name {
            Some(name) => name.clone(),
            None => snapshot
                .status
                .as_ref()
                .and_then(|s| s.bound_volume_snapshot_content_name.clone())
                .unwrap_or_else(|| plan::content_name(uid)),
        };
        let content = contents.get(content_name.as_str()).copied();
        let class = plan::our_class(snapshot.spec.volume_snapshot_class_name.as_deref(), classes);
        let source = self.source(snapshot);
        plan::snapshot_step(snapshot, content, class, &source)
    }

    /// The volume a dynamic snapshot's claim is bound to.
    fn source(&self, snapshot: &Snapshot) -> Source {
        let Some(claim) = &snapshot.spec.source.persistent_volume_claim_name else {
            return Source::Foreign;
        };
        let namespace = snapshot.metadata.namespace.as_deref().unwrap_or_default();
        let label = format!("{namespace}/{claim}");
        let Some(pvc) = self.claims.get(&ObjectRef::new(claim).within(namespace)) else {
            return Source::Unusable(format!("claim {label} does not exist"));
        };
        let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
        let volume = pvc.spec.as_ref().and_then(|s| s.volume_name.clone());
        let (Some("Bound"), Some(volume)) = (phase, volume) else {
            return Source::Unusable(format!("claim {label} is not bound"));
        };
        let csi = self
            .volumes
            .get(&ObjectRef::new(&volume))
            .and_then(|pv| pv.spec.clone()?.csi);
        match csi {
            Some(csi) if csi.driver == DRIVER_NAME => Source::Volume(csi.volume_handle),
            Some(_) => Source::Foreign,
            None => Source::Unusable(format!(
                "volume {volume} of claim {label} is not a CSI volume"
            )),
        }
    }

    /// Whether this instance holds the data of the content's snapshot.
    fn mine(&self, content: &Content) -> bool {
        let location = plan::content_handle(content).and_then(|handle| {
            VolumeId::parse(handle)
                .map(|id| id.location)
                .or_else(|| SnapshotId::parse(handle).map(|id| id.location))
        });
        match (location, &self.config.scope) {
            (Some(Location::Local { node }), Scope::Node(me)) => node == *me,
            (Some(Location::Nfs(_)), Scope::Central) => true,
            _ => false,
        }
    }

    fn api(&self, resource: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        }
    }

    async fn do_snapshot(&self, snapshot: &Snapshot, step: SnapshotStep) -> Result<(), StepError> {
        let meta = &snapshot.metadata;
        let name = meta.name.clone().unwrap_or_default();
        let snapshots = self.api(&model::snapshots(), meta.namespace.as_deref());
        let contents = self.api(&model::contents(), None);
        tracing::info!(snapshot = %name, ?step, "snapshot step");
        match step {
            SnapshotStep::Nothing => {}
            SnapshotStep::AddFinalizer => {
                set_finalizer(&snapshots, meta, SNAPSHOT_FINALIZER, true).await?;
            }
            SnapshotStep::RemoveFinalizer => {
                set_finalizer(&snapshots, meta, SNAPSHOT_FINALIZER, false).await?;
            }
            SnapshotStep::CreateContent(new) => {
                let content = new_content(snapshot, &new)?;
                match contents.create(&PostParams::default(), &content).await {
                    Ok(_) => {}
                    // Made by an earlier pass whose write the cache had not seen yet.
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            SnapshotStep::BindContent(content) => {
                let patch = json!({"spec": {"volumeSnapshotRef": {"uid": meta.uid}}});
                contents
                    .patch(&content, &PatchParams::default(), &Patch::Merge(patch))
                    .await?;
            }
            SnapshotStep::DeleteContent(content) => {
                ignore_missing(contents.delete(&content, &DeleteParams::default()).await)?;
            }
            SnapshotStep::Status(status) => {
                let patch = json!({"status": status});
                let patch = with_null_error(patch);
                snapshots
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await?;
            }
            SnapshotStep::Error(message) => {
                let patch = json!({"status": {
                    "readyToUse": false,
                    "error": {"message": message, "time": now()},
                }});
                snapshots
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await?;
            }
        }
        Ok(())
    }

    async fn do_content(&self, content: &Content, step: ContentStep) -> Result<(), StepError> {
        let meta = &content.metadata;
        let name = meta.name.clone().unwrap_or_default();
        let contents = self.api(&model::contents(), None);
        tracing::info!(content = %name, ?step, "content step");
        match step {
            ContentStep::Nothing => {}
            ContentStep::AddFinalizer => {
                set_finalizer(&contents, meta, CONTENT_FINALIZER, true).await?;
            }
            ContentStep::Create {
                name: snapshot,
                volume,
            } => {
                let answer = self
                    .csi()?
                    .create_snapshot(CreateSnapshotRequest {
                        source_volume_id: volume,
                        name: snapshot,
                        ..Default::default()
                    })
                    .await
                    .map_err(|status| StepError::Csi {
                        rpc: "CreateSnapshot",
                        status,
                    })?
                    .into_inner()
                    .snapshot
                    .ok_or_else(|| StepError::Unknown(name.clone()))?;
                self.record(&contents, &name, &answer).await?;
            }
            ContentStep::Check(handle) => {
                let answer = self
                    .csi()?
                    .list_snapshots(ListSnapshotsRequest {
                        snapshot_id: handle.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|status| StepError::Csi {
                        rpc: "ListSnapshots",
                        status,
                    })?
                    .into_inner()
                    .entries
                    .into_iter()
                    .find_map(|entry| entry.snapshot)
                    .ok_or(StepError::Unknown(handle))?;
                self.record(&contents, &name, &answer).await?;
            }
            ContentStep::Release(handle) => {
                if let Some(handle) = handle {
                    self.csi()?
                        .delete_snapshot(DeleteSnapshotRequest {
                            snapshot_id: handle,
                            ..Default::default()
                        })
                        .await
                        .map_err(|status| StepError::Csi {
                            rpc: "DeleteSnapshot",
                            status,
                        })?;
                }
                set_finalizer(&contents, meta, CONTENT_FINALIZER, false).await?;
            }
            ContentStep::DeleteOrphan => {
                // The cache may lag behind a snapshot just made: ask the API server.
                let reference = &content.spec.volume_snapshot_ref;
                let snapshots = self.api(&model::snapshots(), reference.namespace.as_deref());
                let live = snapshots
                    .get_opt(reference.name.as_deref().unwrap_or_default())
                    .await?;
                if live.is_none_or(|s| s.metadata.uid != reference.uid) {
                    ignore_missing(contents.delete(&name, &DeleteParams::default()).await)?;
                }
            }
        }
        Ok(())
    }

    fn csi(&self) -> Result<ControllerClient<tonic::transport::Channel>, StepError> {
        self.config
            .csi
            .clone()
            .map(ControllerClient::new)
            .ok_or(StepError::NoCsi)
    }

    /// Writes what the driver said about the content's snapshot into its status.
    async fn record(
        &self,
        contents: &Api<DynamicObject>,
        name: &str,
        snapshot: &csi_proto::v1::Snapshot,
    ) -> Result<(), StepError> {
        let status = plan::content_status(
            &snapshot.snapshot_id,
            snapshot.size_bytes,
            snapshot.ready_to_use,
            snapshot
                .creation_time
                .as_ref()
                .map(|t| (t.seconds, t.nanos)),
        );
        let patch = with_null_error(json!({"status": status}));
        contents
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }
}

pub(crate) fn parse_all<T: serde::de::DeserializeOwned>(store: &Store<DynamicObject>) -> Vec<T> {
    store
        .state()
        .iter()
        .filter_map(|object| model::parse(object))
        .collect()
}

/// A merge patch of a status that clears an earlier error.
pub(crate) fn with_null_error(mut patch: serde_json::Value) -> serde_json::Value {
    if let Some(status) = patch.get_mut("status").and_then(|s| s.as_object_mut()) {
        status.insert("error".into(), serde_json::Value::Null);
    }
    patch
}

pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub(crate) fn ignore_missing<T>(result: kube::Result<T>) -> kube::Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Adds or removes `finalizer`, guarded by the resourceVersion the decision saw.
pub(crate) async fn set_finalizer(
    api: &Api<DynamicObject>,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    finalizer: &str,
    present: bool,
) -> kube::Result<()> {
    let mut finalizers: Vec<String> = meta
        .finalizers
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f != finalizer)
        .collect();
    if present {
        finalizers.push(finalizer.to_string());
    }
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": meta.resource_version,
    }});
    let name = meta.name.as_deref().unwrap_or_default();
    ignore_missing(
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await,
    )
}

/// The content snapshot-controller makes for a dynamic snapshot, bound to it.
fn new_content(snapshot: &Snapshot, new: &plan::NewContent) -> Result<DynamicObject, StepError> {
    let meta = &snapshot.metadata;
    let object = json!({
        "apiVersion": format!("{}/v1", model::GROUP),
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": new.name},
        "spec": {
            "deletionPolicy": new.deletion_policy,
            "driver": DRIVER_NAME,
            "source": {"volumeHandle": new.volume_handle},
            "volumeSnapshotClassName": new.class,
            "volumeSnapshotRef": {
                "apiVersion": format!("{}/v1", model::GROUP),
                "kind": "VolumeSnapshot",
                "name": meta.name,
                "namespace": meta.namespace,
                "uid": meta.uid,
            },
        },
    });
    serde_json::from_value(object).map_err(|e| StepError::Kube(kube::Error::SerdeError(e)))
}
