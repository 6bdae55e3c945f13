//! What the group snapshotter does next for one VolumeGroupSnapshot, one member
//! VolumeSnapshot or one VolumeGroupSnapshotContent, decided from the objects alone
//! (pure, so every case is a table row). One write per decision, as the snapshotter.

use csi_proto::DRIVER_NAME;

use super::model::{
    DEFAULT_CLASS, GROUP_CONTENT_FINALIZER, GROUP_SNAPSHOT_FINALIZER, GroupClass, GroupContent,
    GroupContentStatus, GroupSnapshot, GroupSnapshotStatus, IN_GROUP_FINALIZER, SnapshotInfo,
};
use crate::snapshot::model::{Snapshot, deleting, has_finalizer};

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

/// What a dynamic group snapshot's selector resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sources {
    /// The selected claims' volumes (sorted), all ours.
    Volumes(Vec<String>),
    /// Not (yet) usable, and why.
    Unusable(String),
    /// Some selected volume is another driver's: not ours to snapshot.
    Foreign,
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

/// The next step for a VolumeGroupSnapshot (snapshot-controller's part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupStep {
    Nothing,
    AddFinalizer,
    RemoveFinalizer,
    CreateContent(NewGroupContent),
    /// Fill in the uid of a pre-provisioned content's reference to this group.
    BindContent(String),
    /// Make the members the content lists and no VolumeSnapshot has yet.
    CreateMembers(Vec<Member>),
    /// Delete these member VolumeSnapshots (the group is being deleted).
    DeleteMembers(Vec<String>),
    /// Delete the bound content (policy Delete) before the group goes.
    DeleteContent(String),
    Status(GroupSnapshotStatus),
    /// Report why the group snapshot cannot be taken (status.error and an event).
    Error(String),
}

/// The class a group snapshot names, or our driver's default one.
pub fn our_class<'a>(
    named: Option<&str>,
    classes: &'a [GroupClass],
) -> Result<&'a GroupClass, String> {
    if let Some(name) = named {
        return classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .ok_or_else(|| format!("VolumeGroupSnapshotClass {name} does not exist"));
    }
    let defaults: Vec<&GroupClass> = classes
        .iter()
        .filter(|c| c.driver == DRIVER_NAME)
        .filter(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS))
                .is_some_and(|v| v == "true")
        })
        .collect();
    match defaults.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "no default VolumeGroupSnapshotClass for {DRIVER_NAME}"
        )),
        _ => Err(format!(
            "more than one default VolumeGroupSnapshotClass for {DRIVER_NAME}"
        )),
    }
}

/// The next step for `group`, given its content, class and sources, and its member
/// VolumeSnapshots (those owned by it).
pub fn group_step(
    group: &GroupSnapshot,
    content: Option<&GroupContent>,
    class: Result<&GroupClass, String>,
    sources: &Sources,
    members: &[Snapshot],
) -> GroupStep {
    match next_group_step(group, content, class, sources, members) {
        // Already reported: writing it again would only wake the next pass.
        GroupStep::Error(message) if reported(group, &message) => GroupStep::Nothing,
        step => step,
    }
}

fn reported(group: &GroupSnapshot, message: &str) -> bool {
    group.status.as_ref().is_some_and(|status| {
        status.ready_to_use != Some(true)
            && status.error.as_ref().and_then(|e| e.message.as_deref()) == Some(message)
    })
}

fn next_group_step(
    group: &GroupSnapshot,
    content: Option<&GroupContent>,
    class: Result<&GroupClass, String>,
    sources: &Sources,
    members: &[Snapshot],
) -> GroupStep {
    let meta = &group.metadata;
    let uid = meta.uid.clone().unwrap_or_default();
    let bound_to_us = content.filter(|c| refers_to(c, group));
    if deleting(meta) {
        return deletion_step(group, bound_to_us, members);
    }
    let dynamic = group.spec.source.selector.is_some();
    if dynamic {
        match &class {
            Ok(c) if c.driver != DRIVER_NAME => return GroupStep::Nothing,
            _ if *sources == Sources::Foreign => return GroupStep::Nothing,
            _ => {}
        }
    }
    if !has_finalizer(meta, GROUP_SNAPSHOT_FINALIZER) {
        return GroupStep::AddFinalizer;
    }
    let Some(content) = content else {
        if !dynamic {
            let name = group
                .spec
                .source
                .volume_group_snapshot_content_name
                .clone()
                .unwrap_or_default();
            return GroupStep::Error(format!("VolumeGroupSnapshotContent {name} does not exist"));
        }
        return match (class, sources) {
            (Err(why), _) => GroupStep::Error(why),
            (_, Sources::Unusable(why)) => GroupStep::Error(why.clone()),
            (Ok(_), Sources::Foreign) => GroupStep::Nothing,
            (Ok(class), Sources::Volumes(handles)) => GroupStep::CreateContent(NewGroupContent {
                name: content_name(&uid),
                volume_handles: handles.clone(),
                class: class.metadata.name.clone().unwrap_or_default(),
                deletion_policy: class.deletion_policy.clone(),
            }),
        };
    };
    let content_name = content.metadata.name.clone().unwrap_or_default();
    if !refers_to(content, group) {
        return GroupStep::Error(format!(
            "VolumeGroupSnapshotContent {content_name} is bound to another group snapshot"
        ));
    }
    if content.spec.volume_group_snapshot_ref.uid.is_none() {
        return GroupStep::BindContent(content_name);
    }
    let status = content.status.clone().unwrap_or_default();
    // The driver's refusal, as csi-snapshotter recorded it on the content: the group
    // snapshot says it too, as snapshot-controller copies it.
    if status.ready_to_use != Some(true)
        && let Some(message) = status.error.as_ref().and_then(|e| e.message.clone())
    {
        return GroupStep::Error(message);
    }
    let missing = missing_members(&uid, &status, members);
    if !missing.is_empty() {
        return GroupStep::CreateMembers(missing);
    }
    let wanted = status_from(&status, &content_name, members);
    let current = GroupSnapshotStatus {
        error: None,
        ..group.status.clone().unwrap_or_default()
    };
    if current == wanted {
        GroupStep::Nothing
    } else {
        GroupStep::Status(wanted)
    }
}

/// As snapshot-controller: the members go, then the content (policy Delete), and the
/// finalizer only once that content is gone.
fn deletion_step(
    group: &GroupSnapshot,
    bound: Option<&GroupContent>,
    members: &[Snapshot],
) -> GroupStep {
    let live: Vec<String> = members
        .iter()
        .filter(|m| !deleting(&m.metadata))
        .filter_map(|m| m.metadata.name.clone())
        .collect();
    if !live.is_empty() {
        return GroupStep::DeleteMembers(live);
    }
    match bound {
        Some(c) if c.deletes() && !deleting(&c.metadata) => {
            GroupStep::DeleteContent(c.metadata.name.clone().unwrap_or_default())
        }
        Some(c) if c.deletes() => GroupStep::Nothing,
        _ if has_finalizer(&group.metadata, GROUP_SNAPSHOT_FINALIZER) => GroupStep::RemoveFinalizer,
        _ => GroupStep::Nothing,
    }
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
            let snapshot_handle = info.snapshot_handle.clone()?;
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

/// Whether `content` names `group` (the uid may be unset on a pre-provisioned one).
fn refers_to(content: &GroupContent, group: &GroupSnapshot) -> bool {
    let reference = &content.spec.volume_group_snapshot_ref;
    reference.name == group.metadata.name
        && reference.namespace == group.metadata.namespace
        && reference
            .uid
            .as_ref()
            .is_none_or(|uid| Some(uid) == group.metadata.uid.as_ref())
}

/// Whether a member VolumeSnapshot being deleted may let go of its in-group finalizer:
/// once its group is being deleted or is gone (`group_alive`: the group it is owned by
/// exists and is not being deleted).
pub fn releases_member(member: &Snapshot, group_alive: bool) -> bool {
    deleting(&member.metadata)
        && has_finalizer(&member.metadata, IN_GROUP_FINALIZER)
        && !group_alive
}

/// The next step for a VolumeGroupSnapshotContent of our driver (csi-snapshotter's
/// group part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupContentStep {
    Nothing,
    AddFinalizer,
    /// CreateVolumeGroupSnapshot with this name from these volumes, and record it.
    Create {
        name: String,
        volumes: Vec<String>,
    },
    /// GetVolumeGroupSnapshot of a pre-provisioned group, and record it.
    Check {
        group: String,
        snapshots: Vec<String>,
    },
    /// DeleteVolumeGroupSnapshot (policy Delete, handles known), then let go.
    Release(Option<(String, Vec<String>)>),
    /// The group snapshot it was bound to is gone (if the API server confirms): delete it.
    DeleteOrphan,
}

/// The next step for `content`; `group_uid` is the uid of the group snapshot its
/// reference names, `None` when the cache has none.
pub fn content_step(content: &GroupContent, group_uid: Option<&str>) -> GroupContentStep {
    let meta = &content.metadata;
    if content.spec.driver != DRIVER_NAME {
        return GroupContentStep::Nothing;
    }
    if deleting(meta) {
        if !has_finalizer(meta, GROUP_CONTENT_FINALIZER) {
            return GroupContentStep::Nothing;
        }
        return GroupContentStep::Release(content.handles().filter(|_| content.deletes()));
    }
    let reference = &content.spec.volume_group_snapshot_ref;
    if let Some(uid) = &reference.uid
        && group_uid != Some(uid.as_str())
    {
        return if content.deletes() {
            GroupContentStep::DeleteOrphan
        } else {
            GroupContentStep::Nothing
        };
    }
    if !has_finalizer(meta, GROUP_CONTENT_FINALIZER) {
        return GroupContentStep::AddFinalizer;
    }
    let status = content.status.clone().unwrap_or_default();
    if status.ready_to_use == Some(true) && status.volume_group_snapshot_handle.is_some() {
        return GroupContentStep::Nothing;
    }
    let source = &content.spec.source;
    match (&source.volume_handles, &source.group_snapshot_handles) {
        (Some(volumes), _) => match &reference.uid {
            Some(uid) => GroupContentStep::Create {
                name: group_snapshot_name(uid),
                volumes: volumes.clone(),
            },
            None => GroupContentStep::Nothing,
        },
        (None, Some(handles)) => GroupContentStep::Check {
            group: handles.volume_group_snapshot_handle.clone(),
            snapshots: handles.volume_snapshot_handles.clone(),
        },
        (None, None) => GroupContentStep::Nothing,
    }
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
                    creation_time: s.creation_time.as_ref().map(|t| nanos(t.seconds, t.nanos)),
                    ready_to_use: Some(s.ready_to_use),
                    restore_size: Some(s.size_bytes),
                    snapshot_handle: Some(s.snapshot_id.clone()),
                    volume_handle: Some(s.source_volume_id.clone()),
                })
                .collect(),
        ),
        error: None,
    }
}

fn nanos(seconds: i64, nanos: i32) -> i64 {
    seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(nanos))
}

fn rfc3339(nanos: i64) -> Option<String> {
    let at = jiff::Timestamp::from_nanosecond(i128::from(nanos)).ok()?;
    Some(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
