//! What the snapshotter does next for one snapshot or one content, decided from the
//! objects alone (pure, so every case is a table row). Each decision is one write;
//! the next pass sees its result and decides the next, so a restart between writes
//! converges.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ApiResource;
use serde_json::{Value, json};

use super::model::{
    self, CONTENT_FINALIZER, Class, Content, ContentStatus, SNAPSHOT_FINALIZER, Snapshot,
    SnapshotRef, SnapshotStatus, TakenSnapshot,
};
use crate::binding::Kind;
use crate::binding::plan::{self as binding, ClassError, ContentSource};

/// The single snapshot kind: VolumeSnapshot, VolumeSnapshotContent, VolumeSnapshotClass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotKind;

/// What the source of a dynamic snapshot resolved to: its claim's volume.
pub type Source = binding::Source<String>;
/// The next step for a VolumeSnapshot (snapshot-controller's part).
pub type SnapshotStep = binding::Step<SnapshotKind>;
/// The next step for a VolumeSnapshotContent of our driver (csi-snapshotter's part).
pub type ContentStep = binding::ContentStep<SnapshotKind>;

/// A single snapshot has no steps of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoStep {}

/// The content a dynamic snapshot gets, named as snapshot-controller names it.
pub fn content_name(snapshot_uid: &str) -> String {
    format!("snapcontent-{snapshot_uid}")
}

/// The name CreateSnapshot gets, as csi-snapshotter derives it: the same on every
/// retry, so the driver answers a retry with the snapshot it already made.
pub fn snapshot_name(snapshot_uid: &str) -> String {
    format!("snapshot-{snapshot_uid}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewContent {
    pub name: String,
    pub volume_handle: String,
    pub class: String,
    pub deletion_policy: String,
}

/// Whether `class` (looked up by the snapshot's name, or the default) is ours.
pub fn our_class<'a>(named: Option<&str>, classes: &'a [Class]) -> Result<&'a Class, ClassError> {
    binding::our_class::<SnapshotKind>(named, classes)
}

/// The next step for `snapshot`, given its content (by the name it binds to) and, for
/// a dynamic snapshot, its class and source.
pub fn snapshot_step(
    snapshot: &Snapshot,
    content: Option<&Content>,
    class: Result<&Class, ClassError>,
    source: &Source,
) -> SnapshotStep {
    binding::step(snapshot, content, class, source, &())
}

/// The snapshot's status as snapshot-controller copies it from the content.
fn status_from(content: &Content, name: &str) -> SnapshotStatus {
    let status = content.status.clone().unwrap_or_default();
    SnapshotStatus {
        bound_volume_snapshot_content_name: Some(name.to_string()),
        creation_time: status.taken.creation_time.and_then(rfc3339),
        ready_to_use: Some(status.taken.ready_to_use == Some(true)),
        restore_size: status.taken.restore_size.map(|bytes| bytes.to_string()),
        error: None,
    }
}

/// A time in nanoseconds since the epoch as RFC 3339, to the second.
pub fn rfc3339(nanos: i64) -> Option<String> {
    let at = jiff::Timestamp::from_nanosecond(i128::from(nanos)).ok()?;
    Some(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// Where the content's snapshot is: who may act on it.
pub fn content_handle(content: &Content) -> Option<&str> {
    content
        .spec
        .source
        .volume_handle
        .as_deref()
        .or(content.handle())
}

/// The content status csi-snapshotter writes for a snapshot the driver reports.
pub fn content_status(snapshot: &csi_proto::v1::Snapshot) -> ContentStatus {
    ContentStatus {
        taken: taken(snapshot),
        ..ContentStatus::default()
    }
}

/// What the driver says of `snapshot`, as csi-snapshotter records it.
pub fn taken(snapshot: &csi_proto::v1::Snapshot) -> TakenSnapshot {
    TakenSnapshot {
        creation_time: snapshot
            .creation_time
            .as_ref()
            .map(|t| nanos(t.seconds, t.nanos)),
        ready_to_use: Some(snapshot.ready_to_use),
        restore_size: Some(snapshot.size_bytes),
        snapshot_handle: Some(snapshot.snapshot_id.clone()),
    }
}

/// A protobuf time as nanoseconds since the epoch.
pub fn nanos(seconds: i64, nanos: i32) -> i64 {
    seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(nanos))
}

impl Kind for SnapshotKind {
    type Object = Snapshot;
    type Content = Content;
    type Class = Class;
    type Status = SnapshotStatus;
    type NewContent = NewContent;
    type Volumes = String;
    type Handles = String;
    type OwnStep = NoStep;
    type Own = ();

    const CONTENT_KIND: &'static str = "VolumeSnapshotContent";
    const CLASS_KIND: &'static str = "VolumeSnapshotClass";
    const WHAT: &'static str = "snapshot";
    const DEFAULT_CLASS: &'static str = model::DEFAULT_CLASS;
    const FINALIZER: &'static str = SNAPSHOT_FINALIZER;
    const CONTENT_FINALIZER: &'static str = CONTENT_FINALIZER;
    const REFERENCE_FIELD: &'static str = "volumeSnapshotRef";

    fn objects() -> ApiResource {
        model::snapshots()
    }

    fn contents() -> ApiResource {
        model::contents()
    }

    fn meta(snapshot: &Snapshot) -> &ObjectMeta {
        &snapshot.metadata
    }

    fn dynamic(snapshot: &Snapshot) -> bool {
        snapshot.spec.source.persistent_volume_claim_name.is_some()
    }

    fn named_content(snapshot: &Snapshot) -> Option<&str> {
        snapshot.spec.source.volume_snapshot_content_name.as_deref()
    }

    fn bound_content(snapshot: &Snapshot) -> Option<&str> {
        let status = snapshot.status.as_ref()?;
        status.bound_volume_snapshot_content_name.as_deref()
    }

    fn reported_error(snapshot: &Snapshot) -> Option<&str> {
        let status = snapshot.status.as_ref()?;
        let message = status.error.as_ref()?.message.as_deref();
        message.filter(|_| status.ready_to_use != Some(true))
    }

    fn content_name(uid: &str) -> String {
        content_name(uid)
    }

    fn driver_name(uid: &str) -> String {
        snapshot_name(uid)
    }

    fn new_content(name: String, volume: &String, class: &Class) -> NewContent {
        NewContent {
            name,
            volume_handle: volume.clone(),
            class: class.metadata.name.clone().unwrap_or_default(),
            deletion_policy: class.deletion_policy.clone(),
        }
    }

    /// The content snapshot-controller makes for a dynamic snapshot, bound to it.
    fn content_object(snapshot: &Snapshot, new: &NewContent) -> Value {
        let meta = &snapshot.metadata;
        json!({
            "apiVersion": format!("{}/v1", model::GROUP),
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": new.name},
            "spec": {
                "deletionPolicy": new.deletion_policy,
                "driver": driver_contract::DRIVER_NAME,
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
        })
    }

    fn before_deletion(_: &Snapshot, (): &()) -> Option<SnapshotStep> {
        None
    }

    fn bound_step(snapshot: &Snapshot, content: &Content, name: &str, (): &()) -> SnapshotStep {
        binding::status_step(snapshot.status.as_ref(), status_from(content, name))
    }

    fn without_error(status: SnapshotStatus) -> SnapshotStatus {
        SnapshotStatus {
            error: None,
            ..status
        }
    }

    fn content_meta(content: &Content) -> &ObjectMeta {
        &content.metadata
    }

    fn reference(content: &Content) -> &SnapshotRef {
        &content.spec.volume_snapshot_ref
    }

    fn content_driver(content: &Content) -> &str {
        &content.spec.driver
    }

    fn deletes(content: &Content) -> bool {
        content.deletes()
    }

    /// As csi-snapshotter: a group member's snapshot goes with its group.
    fn handles_to_delete(content: &Content) -> Option<String> {
        let handle = content.handle()?;
        (content.deletes() && !content.group_member()).then(|| handle.to_string())
    }

    fn taken(content: &Content) -> bool {
        let status = content.status.as_ref();
        status.is_some_and(|s| {
            s.taken.ready_to_use == Some(true) && s.taken.snapshot_handle.is_some()
        })
    }

    fn content_source(content: &Content) -> ContentSource<String, String> {
        let source = &content.spec.source;
        match (&source.volume_handle, &source.snapshot_handle) {
            (Some(volume), _) => ContentSource::Volumes(volume.clone()),
            (None, Some(handle)) => ContentSource::Handles(handle.clone()),
            (None, None) => ContentSource::Neither,
        }
    }

    fn class_meta(class: &Class) -> &ObjectMeta {
        &class.metadata
    }

    fn class_driver(class: &Class) -> &str {
        &class.driver
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
