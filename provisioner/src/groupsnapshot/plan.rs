//! What the group snapshotter does next for one VolumeGroupSnapshot, one member
//! VolumeSnapshot or one VolumeGroupSnapshotContent, decided from the objects alone
//! (pure, so every case is a table row). One write per decision, as the snapshotter.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ApiResource;
use serde_json::{Value, json};

use super::model::{
    self, DEFAULT_CLASS, GROUP_CONTENT_FINALIZER, GROUP_SNAPSHOT_FINALIZER, GroupClass,
    GroupContent, GroupContentStatus, GroupSnapshot, GroupSnapshotStatus, IN_GROUP_FINALIZER,
    SnapshotInfo,
};
use crate::binding::Kind;
use crate::binding::plan::{self as binding, ClassError, ContentSource};
use crate::snapshot::model::{Snapshot, SnapshotRef, deleting, has_finalizer};
use crate::snapshot::plan::{nanos, rfc3339, taken};

/// The group kind: VolumeGroupSnapshot, VolumeGroupSnapshotContent and
/// VolumeGroupSnapshotClass, whose snapshots are member VolumeSnapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupKind;

/// What a dynamic group snapshot's selector resolved to: the selected claims'
/// volumes (sorted), all ours.
pub type Sources = binding::Source<Vec<String>>;
/// The next step for a VolumeGroupSnapshot (snapshot-controller's part).
pub type GroupStep = binding::Step<GroupKind>;
/// The next step for a VolumeGroupSnapshotContent of our driver (csi-snapshotter's
/// group part); its handles are the group's and its members'.
pub type GroupContentStep = binding::ContentStep<GroupKind>;

/// A group's own steps: its member VolumeSnapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Members {
    /// Make the members the content lists and no VolumeSnapshot has yet.
    Create(Vec<Member>),
    /// Delete these member VolumeSnapshots (the group is being deleted).
    Delete(Vec<String>),
}

/// The content a dynamic group snapshot gets, named as snapshot-controller names it.
pub fn content_name(group_uid: &str) -> String {
    format!("groupsnapcontent-{group_uid}")
}

/// The name CreateVolumeGroupSnapshot gets (csi-snapshotter's default prefix): the
/// same on every retry, so the driver answers a retry with the group it made.
pub fn group_snapshot_name(group_uid: &str) -> String {
    format!("groupsnapshot-{group_uid}")
}

/// A member's VolumeSnapshot and VolumeSnapshotContent names, as snapshot-controller
/// derives them: from the group's uid and the member's volume, so a retry finds them.
pub fn member_names(group_uid: &str, volume_handle: &str) -> (String, String) {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{group_uid}{volume_handle}").as_bytes(),
    );
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    (format!("snapshot-{hex}"), format!("snapcontent-{hex}"))
}

/// One member to make: its VolumeSnapshot (in the group's namespace) and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub snapshot: String,
    pub content: String,
    pub volume_handle: String,
    pub snapshot_handle: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGroupContent {
    pub name: String,
    pub volume_handles: Vec<String>,
    pub class: String,
    pub deletion_policy: String,
}

/// The class a group snapshot names, or our driver's default one.
pub fn our_class<'a>(
    named: Option<&str>,
    classes: &'a [GroupClass],
) -> Result<&'a GroupClass, ClassError> {
    binding::our_class::<GroupKind>(named, classes)
}

/// The next step for `group`, given its content, class and sources, and its member
/// VolumeSnapshots (those owned by it).
pub fn group_step(
    group: &GroupSnapshot,
    content: Option<&GroupContent>,
    class: Result<&GroupClass, ClassError>,
    sources: &Sources,
    members: &[Snapshot],
) -> GroupStep {
    binding::step(group, content, class, sources, members)
}

/// As snapshot-controller: on deletion the members go first.
fn members_to_delete(members: &[Snapshot]) -> Option<GroupStep> {
    let live: Vec<String> = members
        .iter()
        .filter(|m| !deleting(&m.metadata))
        .filter_map(|m| m.metadata.name.clone())
        .collect();
    (!live.is_empty()).then_some(GroupStep::Own(Members::Delete(live)))
}

/// The members the content's status lists that have no VolumeSnapshot yet.
fn missing_members(uid: &str, status: &GroupContentStatus, members: &[Snapshot]) -> Vec<Member> {
    if status.volume_group_snapshot_handle.is_none() {
        return Vec::new();
    }
    status
        .volume_snapshot_info_list
        .iter()
        .flatten()
        .filter_map(|info: &SnapshotInfo| {
            let volume_handle = info.volume_handle.clone()?;
            let snapshot_handle = info.taken.snapshot_handle.clone()?;
            let (snapshot, content) = member_names(uid, &volume_handle);
            let exists = members
                .iter()
                .any(|m| m.metadata.name.as_deref() == Some(&snapshot));
            (!exists).then_some(Member {
                snapshot,
                content,
                volume_handle,
                snapshot_handle,
            })
        })
        .collect()
}

/// The group's status as snapshot-controller copies it from the content; ready once
/// the content is and every member VolumeSnapshot is.
fn status_from(
    status: &GroupContentStatus,
    name: &str,
    members: &[Snapshot],
) -> GroupSnapshotStatus {
    let members_ready = members.iter().all(|m| {
        m.status
            .as_ref()
            .is_some_and(|s| s.ready_to_use == Some(true))
    });
    GroupSnapshotStatus {
        bound_volume_group_snapshot_content_name: Some(name.to_string()),
        creation_time: status.creation_time.clone(),
        ready_to_use: Some(status.ready_to_use == Some(true) && members_ready),
        error: None,
    }
}

/// Whether a member VolumeSnapshot being deleted may let go of its in-group finalizer:
/// once its group is being deleted or is gone (`group_alive`: the group it is owned by
/// exists and is not being deleted).
pub fn releases_member(member: &Snapshot, group_alive: bool) -> bool {
    deleting(&member.metadata)
        && has_finalizer(&member.metadata, IN_GROUP_FINALIZER)
        && !group_alive
}

/// The content status csi-snapshotter writes for a group the driver reports.
pub fn content_status(group: &csi_proto::v1::VolumeGroupSnapshot) -> GroupContentStatus {
    GroupContentStatus {
        creation_time: group
            .creation_time
            .as_ref()
            .and_then(|t| rfc3339(nanos(t.seconds, t.nanos))),
        ready_to_use: Some(group.ready_to_use),
        volume_group_snapshot_handle: Some(group.group_snapshot_id.clone()),
        volume_snapshot_info_list: Some(
            group
                .snapshots
                .iter()
                .map(|s| SnapshotInfo {
                    taken: taken(s),
                    volume_handle: Some(s.source_volume_id.clone()),
                })
                .collect(),
        ),
        error: None,
    }
}

impl Kind for GroupKind {
    type Object = GroupSnapshot;
    type Content = GroupContent;
    type Class = GroupClass;
    type Status = GroupSnapshotStatus;
    type NewContent = NewGroupContent;
    type Volumes = Vec<String>;
    type Handles = (String, Vec<String>);
    type OwnStep = Members;
    type Own = [Snapshot];

    const CONTENT_KIND: &'static str = "VolumeGroupSnapshotContent";
    const CLASS_KIND: &'static str = "VolumeGroupSnapshotClass";
    const WHAT: &'static str = "group snapshot";
    const DEFAULT_CLASS: &'static str = DEFAULT_CLASS;
    const FINALIZER: &'static str = GROUP_SNAPSHOT_FINALIZER;
    const CONTENT_FINALIZER: &'static str = GROUP_CONTENT_FINALIZER;
    const REFERENCE_FIELD: &'static str = "volumeGroupSnapshotRef";

    fn objects() -> ApiResource {
        model::group_snapshots()
    }

    fn contents() -> ApiResource {
        model::group_contents()
    }

    fn meta(group: &GroupSnapshot) -> &ObjectMeta {
        &group.metadata
    }

    fn dynamic(group: &GroupSnapshot) -> bool {
        group.spec.source.selector.is_some()
    }

    fn named_content(group: &GroupSnapshot) -> Option<&str> {
        group
            .spec
            .source
            .volume_group_snapshot_content_name
            .as_deref()
    }

    fn bound_content(group: &GroupSnapshot) -> Option<&str> {
        let status = group.status.as_ref()?;
        status.bound_volume_group_snapshot_content_name.as_deref()
    }

    fn reported_error(group: &GroupSnapshot) -> Option<&str> {
        let status = group.status.as_ref()?;
        let message = status.error.as_ref()?.message.as_deref();
        message.filter(|_| status.ready_to_use != Some(true))
    }

    fn content_name(uid: &str) -> String {
        content_name(uid)
    }

    fn driver_name(uid: &str) -> String {
        group_snapshot_name(uid)
    }

    fn new_content(name: String, volumes: &Vec<String>, class: &GroupClass) -> NewGroupContent {
        NewGroupContent {
            name,
            volume_handles: volumes.clone(),
            class: class.metadata.name.clone().unwrap_or_default(),
            deletion_policy: class.deletion_policy.clone(),
        }
    }

    /// The content snapshot-controller makes for a dynamic group snapshot, bound to it.
    fn content_object(group: &GroupSnapshot, new: &NewGroupContent) -> Value {
        let meta = &group.metadata;
        json!({
            "apiVersion": format!("{}/v1", model::GROUP),
            "kind": "VolumeGroupSnapshotContent",
            "metadata": {"name": new.name},
            "spec": {
                "deletionPolicy": new.deletion_policy,
                "driver": driver_contract::DRIVER_NAME,
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
        })
    }

    fn before_deletion(_: &GroupSnapshot, members: &[Snapshot]) -> Option<GroupStep> {
        members_to_delete(members)
    }

    /// The driver's refusal, the members to make, then the status.
    fn bound_step(
        group: &GroupSnapshot,
        content: &GroupContent,
        content_name: &str,
        members: &[Snapshot],
    ) -> GroupStep {
        let uid = group.metadata.uid.as_deref().unwrap_or_default();
        let status = content.status.clone().unwrap_or_default();
        // The driver's refusal, as csi-snapshotter recorded it on the content: the group
        // snapshot says it too, as snapshot-controller copies it.
        if status.ready_to_use != Some(true)
            && let Some(message) = status.error.as_ref().and_then(|e| e.message.clone())
        {
            return GroupStep::Error(message);
        }
        let missing = missing_members(uid, &status, members);
        if !missing.is_empty() {
            return GroupStep::Own(Members::Create(missing));
        }
        let wanted = status_from(&status, content_name, members);
        binding::status_step(group.status.as_ref(), wanted)
    }

    fn without_error(status: GroupSnapshotStatus) -> GroupSnapshotStatus {
        GroupSnapshotStatus {
            error: None,
            ..status
        }
    }

    fn content_meta(content: &GroupContent) -> &ObjectMeta {
        &content.metadata
    }

    fn reference(content: &GroupContent) -> &SnapshotRef {
        &content.spec.volume_group_snapshot_ref
    }

    fn content_driver(content: &GroupContent) -> &str {
        &content.spec.driver
    }

    fn deletes(content: &GroupContent) -> bool {
        content.deletes()
    }

    fn handles_to_delete(content: &GroupContent) -> Option<(String, Vec<String>)> {
        content.handles().filter(|_| content.deletes())
    }

    fn taken(content: &GroupContent) -> bool {
        let status = content.status.as_ref();
        status.is_some_and(|s| {
            s.ready_to_use == Some(true) && s.volume_group_snapshot_handle.is_some()
        })
    }

    fn content_source(content: &GroupContent) -> ContentSource<Vec<String>, (String, Vec<String>)> {
        let source = &content.spec.source;
        match (&source.volume_handles, &source.group_snapshot_handles) {
            (Some(volumes), _) => ContentSource::Volumes(volumes.clone()),
            (None, Some(handles)) => ContentSource::Handles((
                handles.volume_group_snapshot_handle.clone(),
                handles.volume_snapshot_handles.clone(),
            )),
            (None, None) => ContentSource::Neither,
        }
    }

    fn class_meta(class: &GroupClass) -> &ObjectMeta {
        &class.metadata
    }

    fn class_driver(class: &GroupClass) -> &str {
        &class.driver
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
