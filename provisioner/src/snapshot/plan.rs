//! What the snapshotter does next for one snapshot or one content, decided from the
//! objects alone (pure, so every case is a table row). Each decision is one write;
//! the next pass sees its result and decides the next, so a restart between writes
//! converges.

use csi_proto::DRIVER_NAME;

use super::model::{
    CONTENT_FINALIZER, Class, Content, ContentStatus, SNAPSHOT_FINALIZER, Snapshot, SnapshotStatus,
    deleting, has_finalizer,
};

/// The content a dynamic snapshot gets, named as snapshot-controller names it.
pub fn content_name(snapshot_uid: &str) -> String {
    format!("snapcontent-{snapshot_uid}")
}

/// The name CreateSnapshot gets, as csi-snapshotter derives it: the same on every
/// retry, so the driver answers a retry with the snapshot it already made.
pub fn snapshot_name(snapshot_uid: &str) -> String {
    format!("snapshot-{snapshot_uid}")
}

/// What the source of a dynamic snapshot resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The claim's volume, one of ours.
    Volume(String),
    /// Not (yet) usable, and why.
    Unusable(String),
    /// Another driver's volume: not ours to snapshot.
    Foreign,
}

/// The next step for a VolumeSnapshot (snapshot-controller's part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotStep {
    Nothing,
    AddFinalizer,
    RemoveFinalizer,
    /// Create the content for a dynamic snapshot.
    CreateContent(NewContent),
    /// Fill in the uid of a pre-provisioned content's reference to this snapshot.
    BindContent(String),
    /// Delete the bound content (policy Delete) before the snapshot goes.
    DeleteContent(String),
    /// Write this status.
    Status(SnapshotStatus),
    /// Report why the snapshot cannot be taken (status.error, not ready).
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewContent {
    pub name: String,
    pub volume_handle: String,
    pub class: String,
    pub deletion_policy: String,
}

/// Whether `class` (looked up by the snapshot's name, or the default) is ours.
pub fn our_class<'a>(named: Option<&str>, classes: &'a [Class]) -> Result<&'a Class, String> {
    let ours = |c: &&Class| c.driver == DRIVER_NAME;
    match named {
        Some(name) => classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .ok_or_else(|| format!("VolumeSnapshotClass {name} does not exist")),
        None => {
            let defaults: Vec<&Class> = classes
                .iter()
                .filter(ours)
                .filter(|c| {
                    c.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(super::model::DEFAULT_CLASS))
                        .is_some_and(|v| v == "true")
                })
                .collect();
            match defaults.as_slice() {
                [one] => Ok(one),
                [] => Err(format!("no default VolumeSnapshotClass for {DRIVER_NAME}")),
                _ => Err(format!(
                    "more than one default VolumeSnapshotClass for {DRIVER_NAME}"
                )),
            }
        }
    }
}

/// The next step for `snapshot`, given its content (by the name it binds to) and, for
/// a dynamic snapshot, its class and source.
pub fn snapshot_step(
    snapshot: &Snapshot,
    content: Option<&Content>,
    class: Result<&Class, String>,
    source: &Source,
) -> SnapshotStep {
    match next_snapshot_step(snapshot, content, class, source) {
        // Already reported: writing it again would only wake the next pass.
        SnapshotStep::Error(message) if reported(snapshot, &message) => SnapshotStep::Nothing,
        step => step,
    }
}

/// Whether the snapshot's status already says `message` (and not ready).
fn reported(snapshot: &Snapshot, message: &str) -> bool {
    snapshot.status.as_ref().is_some_and(|status| {
        status.ready_to_use != Some(true)
            && status.error.as_ref().and_then(|e| e.message.as_deref()) == Some(message)
    })
}

fn next_snapshot_step(
    snapshot: &Snapshot,
    content: Option<&Content>,
    class: Result<&Class, String>,
    source: &Source,
) -> SnapshotStep {
    let meta = &snapshot.metadata;
    let uid = meta.uid.clone().unwrap_or_default();
    let bound_to_us = content.filter(|c| refers_to(c, snapshot));
    if deleting(meta) {
        return match bound_to_us {
            Some(c) if c.deletes() && !deleting(&c.metadata) => {
                SnapshotStep::DeleteContent(c.metadata.name.clone().unwrap_or_default())
            }
            Some(c) if c.deletes() => SnapshotStep::Nothing,
            _ if has_finalizer(meta, SNAPSHOT_FINALIZER) => SnapshotStep::RemoveFinalizer,
            _ => SnapshotStep::Nothing,
        };
    }
    let dynamic = snapshot.spec.source.persistent_volume_claim_name.is_some();
    if dynamic {
        // Another driver's class or volume: its own snapshotter's business.
        match &class {
            Ok(c) if c.driver != DRIVER_NAME => return SnapshotStep::Nothing,
            _ if *source == Source::Foreign => return SnapshotStep::Nothing,
            _ => {}
        }
    }
    if !has_finalizer(meta, SNAPSHOT_FINALIZER) {
        return SnapshotStep::AddFinalizer;
    }
    let Some(content) = content else {
        if !dynamic {
            let name = snapshot
                .spec
                .source
                .volume_snapshot_content_name
                .clone()
                .unwrap_or_default();
            return SnapshotStep::Error(format!("VolumeSnapshotContent {name} does not exist"));
        }
        return match (class, source) {
            (Err(why), _) => SnapshotStep::Error(why),
            (_, Source::Unusable(why)) => SnapshotStep::Error(why.clone()),
            (Ok(_), Source::Foreign) => SnapshotStep::Nothing,
            (Ok(class), Source::Volume(handle)) => SnapshotStep::CreateContent(NewContent {
                name: content_name(&uid),
                volume_handle: handle.clone(),
                class: class.metadata.name.clone().unwrap_or_default(),
                deletion_policy: class.deletion_policy.clone(),
            }),
        };
    };
    let content_name = content.metadata.name.clone().unwrap_or_default();
    if !refers_to(content, snapshot) {
        return SnapshotStep::Error(format!(
            "VolumeSnapshotContent {content_name} is bound to another snapshot"
        ));
    }
    if content.spec.volume_snapshot_ref.uid.is_none() {
        return SnapshotStep::BindContent(content_name);
    }
    let wanted = status_from(content, &content_name);
    let current = snapshot.status.clone().unwrap_or_default();
    let current = SnapshotStatus {
        error: None,
        ..current
    };
    if current == wanted {
        SnapshotStep::Nothing
    } else {
        SnapshotStep::Status(wanted)
    }
}

/// Whether `content` names `snapshot` (the uid may be unset on a pre-provisioned one).
fn refers_to(content: &Content, snapshot: &Snapshot) -> bool {
    let reference = &content.spec.volume_snapshot_ref;
    reference.name == snapshot.metadata.name
        && reference.namespace == snapshot.metadata.namespace
        && reference
            .uid
            .as_ref()
            .is_none_or(|uid| Some(uid) == snapshot.metadata.uid.as_ref())
}

/// The snapshot's status as snapshot-controller copies it from the content.
fn status_from(content: &Content, name: &str) -> SnapshotStatus {
    let status = content.status.clone().unwrap_or_default();
    SnapshotStatus {
        bound_volume_snapshot_content_name: Some(name.to_string()),
        creation_time: status.creation_time.and_then(rfc3339),
        ready_to_use: Some(status.ready_to_use == Some(true)),
        restore_size: status.restore_size.map(|bytes| bytes.to_string()),
        error: None,
    }
}

fn rfc3339(nanos: i64) -> Option<String> {
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

/// The next step for a VolumeSnapshotContent of our driver (csi-snapshotter's part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentStep {
    Nothing,
    AddFinalizer,
    /// CreateSnapshot with this name from this volume, and record the answer.
    Create {
        name: String,
        volume: String,
    },
    /// Look up a pre-provisioned snapshot by handle, and record the answer.
    Check(String),
    /// DeleteSnapshot (when the policy is Delete and a handle is known), then let go.
    Release(Option<String>),
    /// The snapshot it was bound to is gone (if the API server confirms): delete it.
    DeleteOrphan,
}

/// The next step for `content`; `snapshot_uid` is the uid of the snapshot its
/// reference names, `None` when the cache has no such snapshot.
pub fn content_step(content: &Content, snapshot_uid: Option<&str>) -> ContentStep {
    let meta = &content.metadata;
    if content.spec.driver != DRIVER_NAME {
        return ContentStep::Nothing;
    }
    if deleting(meta) {
        if !has_finalizer(meta, CONTENT_FINALIZER) {
            return ContentStep::Nothing;
        }
        // As csi-snapshotter: a group member's snapshot goes with its group.
        let handle = content
            .handle()
            .filter(|_| content.deletes() && !content.group_member());
        return ContentStep::Release(handle.map(str::to_string));
    }
    let reference = &content.spec.volume_snapshot_ref;
    if let Some(uid) = &reference.uid
        && snapshot_uid != Some(uid.as_str())
    {
        return if content.deletes() {
            ContentStep::DeleteOrphan
        } else {
            ContentStep::Nothing
        };
    }
    if !has_finalizer(meta, CONTENT_FINALIZER) {
        return ContentStep::AddFinalizer;
    }
    let status = content.status.clone().unwrap_or_default();
    if status.ready_to_use == Some(true) && status.snapshot_handle.is_some() {
        return ContentStep::Nothing;
    }
    match (
        &content.spec.source.volume_handle,
        &content.spec.source.snapshot_handle,
    ) {
        (Some(volume), _) => match &reference.uid {
            Some(uid) => ContentStep::Create {
                name: snapshot_name(uid),
                volume: volume.clone(),
            },
            // Dynamic contents are made bound; one without a uid waits for it.
            None => ContentStep::Nothing,
        },
        (None, Some(handle)) => ContentStep::Check(handle.clone()),
        (None, None) => ContentStep::Nothing,
    }
}

/// The content status csi-snapshotter writes for a snapshot the driver reports
/// (`created`: seconds and nanoseconds since the epoch).
pub fn content_status(
    handle: &str,
    size_bytes: i64,
    ready: bool,
    created: Option<(i64, i32)>,
) -> ContentStatus {
    ContentStatus {
        creation_time: created
            .map(|(seconds, nanos)| seconds.saturating_mul(1_000_000_000) + i64::from(nanos)),
        ready_to_use: Some(ready),
        restore_size: Some(size_bytes),
        snapshot_handle: Some(handle.to_string()),
        error: None,
        volume_group_snapshot_handle: None,
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
