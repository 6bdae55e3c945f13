//! The group snapshotter: plays snapshot-controller's and csi-snapshotter's
//! VolumeGroupSnapshot parts for our driver's VolumeGroupSnapshotClasses. The central
//! instance does snapshot-controller's part (finalizers; the selector's claims to a
//! VolumeGroupSnapshotContent; one VolumeSnapshot and VolumeSnapshotContent per member
//! once the driver has answered; the status; deletion); the instance holding the data
//! (a local group's node, or central for NFS) does csi-snapshotter's part
//! (CreateVolumeGroupSnapshot, the content's status, DeleteVolumeGroupSnapshot). The
//! member objects are pre-provisioned snapshots bound by name, so the snapshotter
//! (`crate::snapshot`) binds them and fills their status as for any such snapshot.

pub mod model;
pub mod plan;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use csi_proto::v1::group_controller_client::GroupControllerClient;
use csi_proto::v1::{
    CreateVolumeGroupSnapshotRequest, DeleteVolumeGroupSnapshotRequest,
    GetVolumeGroupSnapshotRequest,
};
use driver_contract::DRIVER_NAME;
use driver_contract::ids::{GroupSnapshotId, VolumeId};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, DynamicObject};
use kube::runtime::reflector::Store;
use serde_json::json;

use self::model::{GroupClass, GroupContent, GroupSnapshot, IN_GROUP_FINALIZER};
pub use self::plan::GroupKind;
use self::plan::{GroupContentStep, GroupStep, Member, Members, Sources};
use crate::Context;
use crate::binder::model::Selector;
use crate::binding::plan::Source;
use crate::binding::{
    self, StepError, create_or_keep, ignore_missing, parse_all, reflect, set_finalizer, to_object,
};
use crate::events::EventRecorder;
use crate::snapshot::model::{self as snapshot_model, GROUP_HANDLE_ANNOTATION, Snapshot};
use crate::steps::{Stepped, Steps};
use crate::{Result, Scope};

pub struct GroupSnapshotter {
    cx: Context,
    groups: Store<DynamicObject>,
    contents: Store<DynamicObject>,
    classes: Store<DynamicObject>,
    snapshots: Store<DynamicObject>,
    events: EventRecorder,
    steps: Arc<Steps>,
}

impl GroupSnapshotter {
    pub fn new(cx: &Context) -> Arc<Self> {
        let (client, changes) = (&cx.client, &cx.changes);
        Arc::new(Self {
            groups: reflect(client, &model::group_snapshots(), changes),
            contents: reflect(client, &model::group_contents(), changes),
            classes: reflect(client, &model::group_classes(), changes),
            snapshots: reflect(client, &snapshot_model::snapshots(), changes),
            events: EventRecorder::new(client.clone()),
            cx: cx.clone(),
            steps: Arc::new(Steps::new("group snapshot step")),
        })
    }

    /// snapshot-controller's part: every group snapshot, and members whose group went.
    fn central_pass(self: &Arc<Self>, groups: &[GroupSnapshot], contents: &[GroupContent]) {
        let classes: Vec<GroupClass> = parse_all(&self.classes);
        let snapshots: Vec<Snapshot> = parse_all(&self.snapshots);
        let by_name: HashMap<&str, &GroupContent> = contents
            .iter()
            .filter_map(|c| Some((c.metadata.name.as_deref()?, c)))
            .collect();
        let alive: HashSet<&str> = groups
            .iter()
            .filter(|g| !snapshot_model::deleting(&g.metadata))
            .filter_map(|g| g.metadata.uid.as_deref())
            .collect();
        for group in groups {
            let uid = group.metadata.uid.as_deref().unwrap_or_default();
            let members: Vec<Snapshot> = snapshots
                .iter()
                .filter(|s| owner_uid(s) == Some(uid))
                .cloned()
                .collect();
            let step = self.group_step(group, &by_name, &classes, &members);
            if step != GroupStep::Nothing {
                let key = format!("group/{uid}");
                let (this, group) = (self.clone(), group.clone());
                self.steps
                    .start(key, async move { this.do_group(&group, step).await });
            }
        }
        for member in &snapshots {
            let Some(owner) = owner_uid(member) else {
                continue;
            };
            if plan::releases_member(member, alive.contains(owner)) {
                let key = format!("member/{}", member.metadata.uid.as_deref().unwrap_or(""));
                let (this, member) = (self.clone(), member.clone());
                self.steps.start(key, async move {
                    let api = binding::api(
                        &this.cx.client,
                        &snapshot_model::snapshots(),
                        member.metadata.namespace.as_deref(),
                    );
                    set_finalizer(&api, &member.metadata, IN_GROUP_FINALIZER, false).await?;
                    Ok::<(), StepError>(())
                });
            }
        }
    }

    fn group_step(
        &self,
        group: &GroupSnapshot,
        contents: &HashMap<&str, &GroupContent>,
        classes: &[GroupClass],
        members: &[Snapshot],
    ) -> GroupStep {
        let content_name = binding::plan::content_name_of::<GroupKind>(group);
        let content = contents.get(content_name.as_str()).copied();
        let class = plan::our_class(
            group.spec.volume_group_snapshot_class_name.as_deref(),
            classes,
        );
        let sources = self.sources(group);
        plan::group_step(group, content, class, &sources, members)
    }

    /// The volumes of the Bound claims the group's selector picks in its namespace.
    fn sources(&self, group: &GroupSnapshot) -> Sources {
        let Some(selector) = &group.spec.source.selector else {
            return Sources::Foreign;
        };
        let selector = Selector::from_api(selector);
        let namespace = group.metadata.namespace.as_deref().unwrap_or_default();
        let mut handles = Vec::new();
        for claim in self.cx.claims.state() {
            let meta = &claim.metadata;
            let labels = meta.labels.clone().unwrap_or_default();
            if meta.namespace.as_deref() != Some(namespace) || !selector.matches(&labels) {
                continue;
            }
            let label = format!("{namespace}/{}", meta.name.as_deref().unwrap_or_default());
            match binding::claim_volume(&claim, &label, &self.cx.volumes) {
                Source::Ready(handle) => handles.push(handle),
                Source::Unusable(why) => return Sources::Unusable(why),
                Source::Foreign => return Sources::Foreign,
            }
        }
        if handles.is_empty() {
            return Sources::Unusable(format!(
                "no claims in namespace {namespace} match the group snapshot's selector"
            ));
        }
        handles.sort();
        Sources::Ready(handles)
    }

    /// Whether this instance holds the data of the content's group snapshot.
    fn mine(&self, content: &GroupContent) -> bool {
        let location = match content.handles() {
            Some((group, _)) => GroupSnapshotId::parse(&group).map(|id| id.location),
            None => content
                .spec
                .source
                .volume_handles
                .iter()
                .flatten()
                .next()
                .and_then(|h| VolumeId::parse(h))
                .map(|id| id.location),
        };
        self.cx.config.scope.holds(location)
    }

    async fn do_group(&self, group: &GroupSnapshot, step: GroupStep) -> Result<(), StepError> {
        let name = group.metadata.name.clone().unwrap_or_default();
        tracing::info!(group_snapshot = %name, ?step, "group snapshot step");
        match &step {
            GroupStep::Own(Members::Create(members)) => {
                let group_handle = self.group_handle(group);
                for member in members {
                    self.create_member(group, member, &group_handle).await?;
                }
            }
            GroupStep::Own(Members::Delete(members)) => {
                let snapshots = binding::api(
                    &self.cx.client,
                    &snapshot_model::snapshots(),
                    group.metadata.namespace.as_deref(),
                );
                for member in members {
                    ignore_missing(snapshots.delete(member, &DeleteParams::default()).await)?;
                }
            }
            _ => binding::write_step(&self.cx.client, group, &step).await?,
        }
        match step {
            GroupStep::Status(status) if status.ready_to_use == Some(true) => {
                let message = format!("group snapshot {name} is ready to use");
                self.events
                    .normal(&reference(group), "GroupSnapshotReady", &message)
                    .await;
            }
            GroupStep::Error(message) => {
                self.events
                    .warning(&reference(group), "GroupSnapshotPending", &message)
                    .await;
            }
            _ => {}
        }
        Ok(())
    }

    /// The driver's handle of the group's content (for its members' annotation).
    fn group_handle(&self, group: &GroupSnapshot) -> String {
        let contents: Vec<GroupContent> = parse_all(&self.contents);
        let bound = group
            .status
            .as_ref()
            .and_then(|s| s.bound_volume_group_snapshot_content_name.clone())
            .or_else(|| group.spec.source.volume_group_snapshot_content_name.clone())
            .unwrap_or_else(|| {
                plan::content_name(group.metadata.uid.as_deref().unwrap_or_default())
            });
        contents
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(bound.as_str()))
            .and_then(GroupContent::handles)
            .map(|(handle, _)| handle)
            .unwrap_or_default()
    }

    /// One member: a pre-provisioned VolumeSnapshotContent of its snapshot handle,
    /// then the VolumeSnapshot naming it, owned by the group.
    async fn create_member(
        &self,
        group: &GroupSnapshot,
        member: &Member,
        group_handle: &str,
    ) -> Result<(), StepError> {
        let meta = &group.metadata;
        let contents = binding::api(&self.cx.client, &snapshot_model::contents(), None);
        let snapshots = binding::api(
            &self.cx.client,
            &snapshot_model::snapshots(),
            meta.namespace.as_deref(),
        );
        let policy = self.member_policy(group);
        let content = to_object(json!({
            "apiVersion": format!("{}/v1", snapshot_model::GROUP),
            "kind": "VolumeSnapshotContent",
            "metadata": {
                "name": member.content,
                "annotations": {GROUP_HANDLE_ANNOTATION: group_handle},
            },
            "spec": {
                "deletionPolicy": policy,
                "driver": DRIVER_NAME,
                "source": {"snapshotHandle": member.snapshot_handle},
                "volumeSnapshotRef": {
                    "apiVersion": format!("{}/v1", snapshot_model::GROUP),
                    "kind": "VolumeSnapshot",
                    "name": member.snapshot,
                    "namespace": meta.namespace,
                },
            },
        }))?;
        create_or_keep(&contents, &content).await?;
        let snapshot = to_object(json!({
            "apiVersion": format!("{}/v1", snapshot_model::GROUP),
            "kind": "VolumeSnapshot",
            "metadata": {
                "name": member.snapshot,
                "namespace": meta.namespace,
                "ownerReferences": [{
                    "apiVersion": format!("{}/v1", model::GROUP),
                    "kind": "VolumeGroupSnapshot",
                    "name": meta.name,
                    "uid": meta.uid,
                }],
                "finalizers": [IN_GROUP_FINALIZER],
            },
            "spec": {"source": {"volumeSnapshotContentName": member.content}},
        }))?;
        create_or_keep(&snapshots, &snapshot).await
    }

    /// A member's content keeps or deletes its snapshot as the group's content does.
    fn member_policy(&self, group: &GroupSnapshot) -> String {
        let contents: Vec<GroupContent> = parse_all(&self.contents);
        let uid = group.metadata.uid.as_deref();
        contents
            .iter()
            .find(|c| c.spec.volume_group_snapshot_ref.uid.as_deref() == uid)
            .map_or_else(|| "Delete".to_string(), |c| c.spec.deletion_policy.clone())
    }

    async fn do_content(
        &self,
        content: &GroupContent,
        step: GroupContentStep,
    ) -> Result<(), StepError> {
        let name = content.metadata.name.clone().unwrap_or_default();
        let contents = binding::api(&self.cx.client, &model::group_contents(), None);
        tracing::info!(group_content = %name, ?step, "group content step");
        match &step {
            GroupContentStep::Create {
                name: group,
                volumes,
            } => {
                let parameters = self.parameters(content)?;
                let answer = self
                    .csi()?
                    .create_volume_group_snapshot(CreateVolumeGroupSnapshotRequest {
                        name: group.clone(),
                        source_volume_ids: volumes.clone(),
                        parameters,
                        ..Default::default()
                    })
                    .await;
                let answer = match answer {
                    Ok(answer) => answer.into_inner().group_snapshot,
                    Err(status) => {
                        // A refusal goes to the content's status.error.
                        let message =
                            format!("CreateVolumeGroupSnapshot failed: {}", status.message());
                        binding::write_error(&contents, &name, &message).await?;
                        return Err(StepError::Csi {
                            rpc: "CreateVolumeGroupSnapshot",
                            status,
                        });
                    }
                };
                let answer = answer.ok_or_else(|| StepError::Unknown(name.clone()))?;
                self.record(&contents, &name, &answer).await?;
            }
            GroupContentStep::Check((group, snapshots)) => {
                let answer = self
                    .csi()?
                    .get_volume_group_snapshot(GetVolumeGroupSnapshotRequest {
                        group_snapshot_id: group.clone(),
                        snapshot_ids: snapshots.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(StepError::csi("GetVolumeGroupSnapshot"))?
                    .into_inner()
                    .group_snapshot
                    .ok_or_else(|| StepError::Unknown(group.clone()))?;
                self.record(&contents, &name, &answer).await?;
            }
            GroupContentStep::Release(Some((group, snapshots))) => {
                self.csi()?
                    .delete_volume_group_snapshot(DeleteVolumeGroupSnapshotRequest {
                        group_snapshot_id: group.clone(),
                        snapshot_ids: snapshots.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(StepError::csi("DeleteVolumeGroupSnapshot"))?;
            }
            _ => {}
        }
        binding::write_content_step(&self.cx.client, content, &step).await
    }

    /// The parameters of the content's class (none when it names no class).
    fn parameters(&self, content: &GroupContent) -> Result<HashMap<String, String>, StepError> {
        let Some(class) = &content.spec.volume_group_snapshot_class_name else {
            return Ok(HashMap::new());
        };
        let classes: Vec<GroupClass> = parse_all(&self.classes);
        let class = classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(class.as_str()))
            .ok_or_else(|| StepError::MissingClass {
                kind: "VolumeGroupSnapshotClass",
                name: class.clone(),
            })?;
        Ok(class
            .parameters
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect())
    }

    fn csi(&self) -> Result<GroupControllerClient<tonic::transport::Channel>, StepError> {
        binding::driver(&self.cx.config, GroupControllerClient::new)
    }

    async fn record(
        &self,
        contents: &Api<DynamicObject>,
        name: &str,
        group: &csi_proto::v1::VolumeGroupSnapshot,
    ) -> Result<(), StepError> {
        let status = plan::content_status(group);
        binding::write_status(contents, name, json!(status)).await?;
        Ok(())
    }
}

/// The uid of the VolumeGroupSnapshot owning a member VolumeSnapshot.
fn owner_uid(snapshot: &Snapshot) -> Option<&str> {
    snapshot
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "VolumeGroupSnapshot")
        .map(|o| o.uid.as_str())
}

fn reference(group: &GroupSnapshot) -> ObjectReference {
    let meta = &group.metadata;
    ObjectReference {
        api_version: Some(format!("{}/v1", model::GROUP)),
        kind: Some("VolumeGroupSnapshot".into()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        ..Default::default()
    }
}

impl Stepped for GroupSnapshotter {
    fn steps(&self) -> &Steps {
        &self.steps
    }
    fn pass(self: &Arc<Self>) {
        let groups: Vec<GroupSnapshot> = parse_all(&self.groups);
        let contents: Vec<GroupContent> = parse_all(&self.contents);
        if self.cx.config.scope == Scope::Central {
            self.central_pass(&groups, &contents);
        }
        let mine = |content: &GroupContent| self.mine(content);
        for (key, content, step) in
            binding::content_steps::<GroupKind>(&groups, &contents, mine, "groupcontent")
        {
            let (this, content) = (self.clone(), content.clone());
            self.steps
                .start(key, async move { this.do_content(&content, step).await });
        }
    }
}
