//! The groupsnapshot.storage.k8s.io/v1 kinds as the group snapshotter reads them: only
//! the fields its decisions use, parsed from untyped objects (CRDs a cluster may lack).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::ApiResource;
use serde::{Deserialize, Serialize};

use crate::snapshot::model::{Object, SnapshotRef, StatusError, TakenSnapshot};

pub const GROUP: &str = "groupsnapshot.storage.k8s.io";
/// On a group snapshot while it is bound to its content (snapshot-controller's name).
pub const GROUP_SNAPSHOT_FINALIZER: &str =
    "groupsnapshot.storage.kubernetes.io/volumegroupsnapshot-bound-protection";
/// On a group content until its group snapshot is deleted from the driver (or kept).
pub const GROUP_CONTENT_FINALIZER: &str =
    "groupsnapshot.storage.kubernetes.io/volumegroupsnapshotcontent-bound-protection";
/// On a member VolumeSnapshot while its group snapshot exists: a member goes with its
/// group, not on its own.
pub const IN_GROUP_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshot-in-group-protection";
/// A VolumeGroupSnapshotClass used when a group snapshot names none.
pub const DEFAULT_CLASS: &str = "groupsnapshot.storage.kubernetes.io/is-default-class";

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: "v1".into(),
        api_version: format!("{GROUP}/v1"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

pub fn group_snapshots() -> ApiResource {
    resource("VolumeGroupSnapshot", "volumegroupsnapshots")
}

pub fn group_contents() -> ApiResource {
    resource("VolumeGroupSnapshotContent", "volumegroupsnapshotcontents")
}

pub fn group_classes() -> ApiResource {
    resource("VolumeGroupSnapshotClass", "volumegroupsnapshotclasses")
}

/// A VolumeGroupSnapshot.
pub type GroupSnapshot = Object<GroupSnapshotSpec, GroupSnapshotStatus>;
/// A VolumeGroupSnapshotContent.
pub type GroupContent = Object<GroupContentSpec, GroupContentStatus>;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupSnapshotSpec {
    pub source: GroupSnapshotSource,
    pub volume_group_snapshot_class_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupSnapshotSource {
    pub selector: Option<LabelSelector>,
    pub volume_group_snapshot_content_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupSnapshotStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound_volume_group_snapshot_content_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<StatusError>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupContentSpec {
    pub deletion_policy: String,
    pub driver: String,
    pub source: GroupContentSource,
    pub volume_group_snapshot_class_name: Option<String>,
    pub volume_group_snapshot_ref: SnapshotRef,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupContentSource {
    pub volume_handles: Option<Vec<String>>,
    pub group_snapshot_handles: Option<GroupSnapshotHandles>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupSnapshotHandles {
    pub volume_group_snapshot_handle: String,
    pub volume_snapshot_handles: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupContentStatus {
    /// RFC 3339 (a date-time in the v1 schema, unlike a member's nanoseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_group_snapshot_handle: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_info_list: Option<Vec<SnapshotInfo>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<StatusError>,
}

/// One member as the group content's status lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotInfo {
    #[serde(flatten)]
    pub taken: TakenSnapshot,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_handle: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupClass {
    pub metadata: ObjectMeta,
    pub driver: String,
    pub deletion_policy: String,
    #[serde(default)]
    pub parameters: Option<BTreeMap<String, String>>,
}

impl GroupContent {
    /// Whether the driver's group snapshot goes when the content does.
    pub fn deletes(&self) -> bool {
        self.spec.deletion_policy == "Delete"
    }

    /// The driver's group snapshot and its members, once known.
    pub fn handles(&self) -> Option<(String, Vec<String>)> {
        if let Some(status) = &self.status
            && let Some(group) = &status.volume_group_snapshot_handle
        {
            let members = status
                .volume_snapshot_info_list
                .iter()
                .flatten()
                .filter_map(|info| info.taken.snapshot_handle.clone())
                .collect();
            return Some((group.clone(), members));
        }
        self.spec.source.group_snapshot_handles.as_ref().map(|h| {
            (
                h.volume_group_snapshot_handle.clone(),
                h.volume_snapshot_handles.clone(),
            )
        })
    }
}
