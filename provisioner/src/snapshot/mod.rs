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
use std::sync::Arc;

use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::{CreateSnapshotRequest, DeleteSnapshotRequest, ListSnapshotsRequest};
use driver_contract::ids::{SnapshotId, VolumeId};
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use self::model::{Class, Content, Snapshot};
pub use self::plan::SnapshotKind;
use self::plan::{ContentStep, SnapshotStep, Source};
use crate::Context;
use crate::binding::{self, StepError, parse_all, reflect};
use crate::steps::{Stepped, Steps};
use crate::{Result, Scope};

pub struct Snapshotter {
    cx: Context,
    snapshots: Store<DynamicObject>,
    contents: Store<DynamicObject>,
    classes: Store<DynamicObject>,
    steps: Arc<Steps>,
}

impl Snapshotter {
    pub fn new(cx: &Context) -> Arc<Self> {
        let (client, changes) = (&cx.client, &cx.changes);
        Arc::new(Self {
            snapshots: reflect(client, &model::snapshots(), changes),
            contents: reflect(client, &model::contents(), changes),
            classes: reflect(client, &model::classes(), changes),
            cx: cx.clone(),
            steps: Arc::new(Steps::new("snapshot step")),
        })
    }

    fn snapshot_step(
        &self,
        snapshot: &Snapshot,
        contents: &HashMap<&str, &Content>,
        classes: &[Class],
    ) -> SnapshotStep {
        let content_name = binding::plan::content_name_of::<SnapshotKind>(snapshot);
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
        match self.cx.claims.get(&ObjectRef::new(claim).within(namespace)) {
            Some(pvc) => binding::claim_volume(&pvc, &label, &self.cx.volumes),
            None => Source::Unusable(format!("claim {label} does not exist")),
        }
    }

    /// Whether this instance holds the data of the content's snapshot.
    fn mine(&self, content: &Content) -> bool {
        let location = plan::content_handle(content).and_then(|handle| {
            VolumeId::parse(handle)
                .map(|id| id.location)
                .or_else(|| SnapshotId::parse(handle).map(|id| id.location))
        });
        self.cx.config.scope.holds(location)
    }

    async fn do_snapshot(&self, snapshot: &Snapshot, step: SnapshotStep) -> Result<(), StepError> {
        let name = snapshot.metadata.name.as_deref().unwrap_or_default();
        tracing::info!(snapshot = %name, ?step, "snapshot step");
        binding::write_step(&self.cx.client, snapshot, &step).await
    }

    async fn do_content(&self, content: &Content, step: ContentStep) -> Result<(), StepError> {
        let name = content.metadata.name.clone().unwrap_or_default();
        let contents = binding::api(&self.cx.client, &model::contents(), None);
        tracing::info!(content = %name, ?step, "content step");
        match &step {
            ContentStep::Create {
                name: snapshot,
                volumes: volume,
            } => {
                let answer = self
                    .csi()?
                    .create_snapshot(CreateSnapshotRequest {
                        source_volume_id: volume.clone(),
                        name: snapshot.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(StepError::csi("CreateSnapshot"))?
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
                    .map_err(StepError::csi("ListSnapshots"))?
                    .into_inner()
                    .entries
                    .into_iter()
                    .find_map(|entry| entry.snapshot)
                    .ok_or_else(|| StepError::Unknown(handle.clone()))?;
                self.record(&contents, &name, &answer).await?;
            }
            ContentStep::Release(Some(handle)) => {
                self.csi()?
                    .delete_snapshot(DeleteSnapshotRequest {
                        snapshot_id: handle.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(StepError::csi("DeleteSnapshot"))?;
            }
            _ => {}
        }
        binding::write_content_step(&self.cx.client, content, &step).await
    }

    fn csi(&self) -> Result<ControllerClient<tonic::transport::Channel>, StepError> {
        binding::driver(&self.cx.config, ControllerClient::new)
    }

    /// Writes what the driver said about the content's snapshot into its status.
    async fn record(
        &self,
        contents: &Api<DynamicObject>,
        name: &str,
        snapshot: &csi_proto::v1::Snapshot,
    ) -> Result<(), StepError> {
        let status = plan::content_status(snapshot);
        binding::write_status(contents, name, json!(status)).await?;
        Ok(())
    }
}

impl Stepped for Snapshotter {
    fn steps(&self) -> &Steps {
        &self.steps
    }
    fn pass(self: &Arc<Self>) {
        let snapshots: Vec<Snapshot> = parse_all(&self.snapshots);
        let contents: Vec<Content> = parse_all(&self.contents);
        let classes: Vec<Class> = parse_all(&self.classes);
        if self.cx.config.scope == Scope::Central {
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
        let mine = |content: &Content| self.mine(content);
        for (key, content, step) in
            binding::content_steps::<SnapshotKind>(&snapshots, &contents, mine, "content")
        {
            let (this, content) = (self.clone(), content.clone());
            self.steps
                .start(key, async move { this.do_content(&content, step).await });
        }
    }
}
