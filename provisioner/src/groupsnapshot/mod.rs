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
use std::future::Future;
use std::sync::Arc;

use csi_proto::DRIVER_NAME;
use csi_proto::v1::group_controller_client::GroupControllerClient;
use csi_proto::v1::{
    CreateVolumeGroupSnapshotRequest, DeleteVolumeGroupSnapshotRequest,
    GetVolumeGroupSnapshotRequest,
};
use driver_contract::ids::{GroupSnapshotId, Location, VolumeId};
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;

use self::model::{
    GROUP_CONTENT_FINALIZER, GROUP_SNAPSHOT_FINALIZER, GroupClass, GroupContent, GroupSnapshot,
    IN_GROUP_FINALIZER,
};
use self::plan::{GroupContentStep, GroupStep, Member, Sources};
use crate::binder::model::Selector;
use crate::events::EventRecorder;
use crate::snapshot::model::{self as snapshot_model, GROUP_HANDLE_ANNOTATION, Snapshot};
use crate::snapshot::{
    StepError, ignore_missing, now, parse_all, reflect, set_finalizer, with_null_error,
};
use crate::steps::Steps;
use crate::watch::Changes;
use crate::{Config, Result, Scope};

pub struct GroupSnapshotter {
    client: Client,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    groups: Store<DynamicObject>,
    contents: Store<DynamicObject>,
    classes: Store<DynamicObject>,
    snapshots: Store<DynamicObject>,
    config: Config,
    events: EventRecorder,
    steps: Arc<Steps>,
}

impl GroupSnapshotter {
    pub fn new(
        client: Client,
        stores: (Store<PersistentVolumeClaim>, Store<PersistentVolume>),
        changes: &Changes,
        config: Config,
    ) -> Arc<Self> {
        let (claims, volumes) = stores;
        Arc::new(Self {
            groups: reflect(&client, &model::group_snapshots(), changes),
            contents: reflect(&client, &model::group_contents(), changes),
            classes: reflect(&client, &model::group_classes(), changes),
            snapshots: reflect(&client, &snapshot_model::snapshots(), changes),
            events: EventRecorder::new(client.clone()),
            client,
            claims,
            volumes,
            config,
            steps: Arc::new(Steps::new("group snapshot step")),
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
        let groups: Vec<GroupSnapshot> = parse_all(&self.groups);
        let contents: Vec<GroupContent> = parse_all(&self.contents);
        if self.config.scope == Scope::Central {
            self.central_pass(&groups, &contents);
        }
        let uids: HashMap<(String, String), String> = groups
            .iter()
            .filter_map(|g| {
                let m = &g.metadata;
                Some(((m.namespace.clone()?, m.name.clone()?), m.uid.clone()?))
            })
            .collect();
        for content in contents.iter().filter(|c| self.mine(c)) {
            let reference = &content.spec.volume_group_snapshot_ref;
            let uid = reference
                .namespace
                .clone()
                .zip(reference.name.clone())
                .and_then(|key| uids.get(&key));
            let step = plan::content_step(content, uid.map(String::as_str));
            if step != GroupContentStep::Nothing {
                let key = format!(
                    "groupcontent/{}",
                    content.metadata.name.as_deref().unwrap_or("")
                );
                let (this, content) = (self.clone(), content.clone());
                self.steps
                    .start(key, async move { this.do_content(&content, step).await });
            }
        }
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
                    let api = this.api(
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
        let uid = group.metadata.uid.as_deref().unwrap_or_default();
        let content_name = match &group.spec.source.volume_group_snapshot_content_name {
            Some(name) => name.clone(),
            None => group
                .status
                .as_ref()
                .and_then(|s| s.bound_volume_group_snapshot_content_name.clone())
                .unwrap_or_else(|| plan::content_name(uid)),
        };
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
        for claim in self.claims.state() {
            let meta = &claim.metadata;
            let labels = meta.labels.clone().unwrap_or_default();
            if meta.namespace.as_deref() != Some(namespace) || !selector.matches(&labels) {
                continue;
            }
            let label = format!("{namespace}/{}", meta.name.as_deref().unwrap_or_default());
            let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
            let volume = claim.spec.as_ref().and_then(|s| s.volume_name.clone());
            let (Some("Bound"), Some(volume)) = (phase, volume) else {
                return Sources::Unusable(format!("claim {label} is not bound"));
            };
            let csi = self
                .volumes
                .get(&ObjectRef::new(&volume))
                .and_then(|pv| pv.spec.clone()?.csi);
            match csi {
                Some(csi) if csi.driver == DRIVER_NAME => handles.push(csi.volume_handle),
                Some(_) => return Sources::Foreign,
                None => {
                    return Sources::Unusable(format!(
                        "volume {volume} of claim {label} is not a CSI volume"
                    ));
                }
            }
        }
        if handles.is_empty() {
            return Sources::Unusable(format!(
                "no claims in namespace {namespace} match the group snapshot's selector"
            ));
        }
        handles.sort();
        Sources::Volumes(handles)
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

    async fn do_group(&self, group: &GroupSnapshot, step: GroupStep) -> Result<(), StepError> {
        let meta = &group.metadata;
        let name = meta.name.clone().unwrap_or_default();
        let namespace = meta.namespace.as_deref();
        let groups = self.api(&model::group_snapshots(), namespace);
        let contents = self.api(&model::group_contents(), None);
        tracing::info!(group_snapshot = %name, ?step, "group snapshot step");
        match step {
            GroupStep::Nothing => {}
            GroupStep::AddFinalizer => {
                set_finalizer(&groups, meta, GROUP_SNAPSHOT_FINALIZER, true).await?;
            }
            GroupStep::RemoveFinalizer => {
                set_finalizer(&groups, meta, GROUP_SNAPSHOT_FINALIZER, false).await?;
            }
            GroupStep::CreateContent(new) => {
                let content = new_group_content(group, &new)?;
                create_or_keep(&contents, &content).await?;
            }
            GroupStep::BindContent(content) => {
                let patch = json!({"spec": {"volumeGroupSnapshotRef": {"uid": meta.uid}}});
                contents
                    .patch(&content, &PatchParams::default(), &Patch::Merge(patch))
                    .await?;
            }
            GroupStep::CreateMembers(members) => {
                let group_handle = self.group_handle(group);
                for member in &members {
                    self.create_member(group, member, &group_handle).await?;
                }
            }
            GroupStep::DeleteMembers(members) => {
                let snapshots = self.api(&snapshot_model::snapshots(), namespace);
                for member in members {
                    ignore_missing(snapshots.delete(&member, &DeleteParams::default()).await)?;
                }
            }
            GroupStep::DeleteContent(content) => {
                ignore_missing(contents.delete(&content, &DeleteParams::default()).await)?;
            }
            GroupStep::Status(status) => {
                let patch = with_null_error(json!({"status": status}));
                groups
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await?;
                if status.ready_to_use == Some(true) {
                    let message = format!("group snapshot {name} is ready to use");
                    self.events
                        .normal(&reference(group), "GroupSnapshotReady", &message)
                        .await;
                }
            }
            GroupStep::Error(message) => {
                let patch = json!({"status": {
                    "readyToUse": false,
                    "error": {"message": message, "time": now()},
                }});
                groups
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await?;
                self.events
                    .warning(&reference(group), "GroupSnapshotPending", &message)
                    .await;
            }
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
        let contents = self.api(&snapshot_model::contents(), None);
        let snapshots = self.api(&snapshot_model::snapshots(), meta.namespace.as_deref());
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
        let meta = &content.metadata;
        let name = meta.name.clone().unwrap_or_default();
        let contents = self.api(&model::group_contents(), None);
        tracing::info!(group_content = %name, ?step, "group content step");
        match step {
            GroupContentStep::Nothing => {}
            GroupContentStep::AddFinalizer => {
                set_finalizer(&contents, meta, GROUP_CONTENT_FINALIZER, true).await?;
            }
            GroupContentStep::Create {
                name: group,
                volumes,
            } => {
                let parameters = self.parameters(content)?;
                let answer = self
                    .csi()?
                    .create_volume_group_snapshot(CreateVolumeGroupSnapshotRequest {
                        name: group,
                        source_volume_ids: volumes,
                        parameters,
                        ..Default::default()
                    })
                    .await;
                let answer = match answer {
                    Ok(answer) => answer.into_inner().group_snapshot,
                    Err(status) => {
                        self.record_error(&contents, &name, &status).await?;
                        return Err(StepError::Csi {
                            rpc: "CreateVolumeGroupSnapshot",
                            status,
                        });
                    }
                };
                let answer = answer.ok_or_else(|| StepError::Unknown(name.clone()))?;
                self.record(&contents, &name, &answer).await?;
            }
            GroupContentStep::Check { group, snapshots } => {
                let answer = self
                    .csi()?
                    .get_volume_group_snapshot(GetVolumeGroupSnapshotRequest {
                        group_snapshot_id: group.clone(),
                        snapshot_ids: snapshots,
                        ..Default::default()
                    })
                    .await
                    .map_err(|status| StepError::Csi {
                        rpc: "GetVolumeGroupSnapshot",
                        status,
                    })?
                    .into_inner()
                    .group_snapshot
                    .ok_or(StepError::Unknown(group))?;
                self.record(&contents, &name, &answer).await?;
            }
            GroupContentStep::Release(handles) => {
                if let Some((group, snapshots)) = handles {
                    self.csi()?
                        .delete_volume_group_snapshot(DeleteVolumeGroupSnapshotRequest {
                            group_snapshot_id: group,
                            snapshot_ids: snapshots,
                            ..Default::default()
                        })
                        .await
                        .map_err(|status| StepError::Csi {
                            rpc: "DeleteVolumeGroupSnapshot",
                            status,
                        })?;
                }
                set_finalizer(&contents, meta, GROUP_CONTENT_FINALIZER, false).await?;
            }
            GroupContentStep::DeleteOrphan => {
                // The cache may lag behind a group snapshot just made: ask the API server.
                let reference = &content.spec.volume_group_snapshot_ref;
                let groups = self.api(&model::group_snapshots(), reference.namespace.as_deref());
                let live = groups
                    .get_opt(reference.name.as_deref().unwrap_or_default())
                    .await?;
                if live.is_none_or(|g| g.metadata.uid != reference.uid) {
                    ignore_missing(contents.delete(&name, &DeleteParams::default()).await)?;
                }
            }
        }
        Ok(())
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
            .ok_or_else(|| StepError::Unknown(format!("VolumeGroupSnapshotClass {class}")))?;
        Ok(class
            .parameters
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect())
    }

    fn csi(&self) -> Result<GroupControllerClient<tonic::transport::Channel>, StepError> {
        self.config
            .csi
            .clone()
            .map(GroupControllerClient::new)
            .ok_or(StepError::NoCsi)
    }

    async fn record(
        &self,
        contents: &Api<DynamicObject>,
        name: &str,
        group: &csi_proto::v1::VolumeGroupSnapshot,
    ) -> Result<(), StepError> {
        let status = plan::content_status(group);
        let patch = with_null_error(json!({"status": status}));
        contents
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    /// A refused CreateVolumeGroupSnapshot in the content's status.error.
    async fn record_error(
        &self,
        contents: &Api<DynamicObject>,
        name: &str,
        status: &tonic::Status,
    ) -> Result<(), StepError> {
        let message = format!("CreateVolumeGroupSnapshot failed: {}", status.message());
        let patch = json!({"status": {
            "readyToUse": false,
            "error": {"message": message, "time": now()},
        }});
        contents
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
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

fn to_object(value: serde_json::Value) -> Result<DynamicObject, StepError> {
    serde_json::from_value(value).map_err(|e| StepError::Kube(kube::Error::SerdeError(e)))
}

/// Creates `object`; one an earlier pass made (not yet in the cache) is kept.
async fn create_or_keep(api: &Api<DynamicObject>, object: &DynamicObject) -> Result<(), StepError> {
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The content snapshot-controller makes for a dynamic group snapshot, bound to it.
fn new_group_content(
    group: &GroupSnapshot,
    new: &plan::NewGroupContent,
) -> Result<DynamicObject, StepError> {
    let meta = &group.metadata;
    to_object(json!({
        "apiVersion": format!("{}/v1", model::GROUP),
        "kind": "VolumeGroupSnapshotContent",
        "metadata": {"name": new.name},
        "spec": {
            "deletionPolicy": new.deletion_policy,
            "driver": DRIVER_NAME,
            "source": {"volumeHandles": new.volume_handles},
            "volumeGroupSnapshotClassName": new.class,
            "volumeGroupSnapshotRef": {
                "apiVersion": format!("{}/v1", model::GROUP),
                "kind": "VolumeGroupSnapshot",
                "name": meta.name,
                "namespace": meta.namespace,
                "uid": meta.uid,
            },
        },
    }))
}
