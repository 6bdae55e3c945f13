//! The external-snapshotter kinds as the snapshotter reads them: only the fields its
//! decisions use, parsed from the untyped objects the API returns (the kinds are CRDs
//! a cluster may lack, so they have no k8s-openapi types).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject};
use serde::Deserialize;

pub const GROUP: &str = "snapshot.storage.k8s.io";
/// On a snapshot while it is bound to its content (snapshot-controller's name).
pub const SNAPSHOT_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";
/// On a content until its snapshot is deleted from the driver (or kept, Retain).
pub const CONTENT_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";
/// On the VolumeSnapshotContent of a VolumeGroupSnapshot's member: the group's handle
/// (csi-snapshotter's name). Such a snapshot goes with its group, never on its own.
pub const GROUP_HANDLE_ANNOTATION: &str = "groupsnapshot.storage.k8s.io/volumeGroupSnapshotHandle";
/// A VolumeSnapshotClass used when a snapshot names none.
pub const DEFAULT_CLASS: &str = "snapshot.storage.kubernetes.io/is-default-class";

pub fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: "v1".into(),
        api_version: format!("{GROUP}/v1"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

pub fn snapshots() -> ApiResource {
    resource("VolumeSnapshot", "volumesnapshots")
}

pub fn contents() -> ApiResource {
    resource("VolumeSnapshotContent", "volumesnapshotcontents")
}

pub fn classes() -> ApiResource {
    resource("VolumeSnapshotClass", "volumesnapshotclasses")
}

/// Parses an untyped object as `T`; `None` for one the API server should have refused.
pub fn parse<T: serde::de::DeserializeOwned>(object: &DynamicObject) -> Option<T> {
    serde_json::to_value(object)
        .ok()
        .and_then(|value| serde_json::from_value(value).ok())
}

/// An object of one of the snapshot kinds: its metadata, spec and status.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Object<Spec, Status> {
    pub metadata: ObjectMeta,
    pub spec: Spec,
    #[serde(default)]
    pub status: Option<Status>,
}

/// A VolumeSnapshot.
pub type Snapshot = Object<SnapshotSpec, SnapshotStatus>;
/// A VolumeSnapshotContent.
pub type Content = Object<ContentSpec, ContentStatus>;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSpec {
    pub source: SnapshotSource,
    pub volume_snapshot_class_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSource {
    pub persistent_volume_claim_name: Option<String>,
    pub volume_snapshot_content_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound_volume_snapshot_content_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<StatusError>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentSpec {
    pub deletion_policy: String,
    pub driver: String,
    pub source: ContentSource,
    pub volume_snapshot_ref: SnapshotRef,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentSource {
    pub snapshot_handle: Option<String>,
    pub volume_handle: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SnapshotRef {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
}

/// What the driver says of one snapshot, as csi-snapshotter records it: in a
/// content's status, and for each member in a group content's status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TakenSnapshot {
    /// Nanoseconds since the epoch, as csi-snapshotter records it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// Bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentStatus {
    #[serde(flatten)]
    pub taken: TakenSnapshot,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<StatusError>,
    /// A group member's group, as csi-snapshotter records it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_group_snapshot_handle: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Class {
    pub metadata: ObjectMeta,
    pub driver: String,
    pub deletion_policy: String,
}

impl Content {
    /// Whether the driver's snapshot goes when the content does.
    pub fn deletes(&self) -> bool {
        self.spec.deletion_policy == "Delete"
    }

    /// Whether this is a VolumeGroupSnapshot's member: its snapshot is deleted by
    /// DeleteVolumeGroupSnapshot (the driver refuses a member's DeleteSnapshot).
    pub fn group_member(&self) -> bool {
        let annotated = self
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(GROUP_HANDLE_ANNOTATION));
        let recorded = self
            .status
            .as_ref()
            .is_some_and(|s| s.volume_group_snapshot_handle.is_some());
        annotated || recorded
    }

    pub fn handle(&self) -> Option<&str> {
        self.status
            .as_ref()
            .and_then(|s| s.taken.snapshot_handle.as_deref())
            .or(self.spec.source.snapshot_handle.as_deref())
    }
}

pub fn deleting(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

pub fn has_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == finalizer))
}
