//! Table-driven checks of the snapshotter's decisions, one upstream rule per case.

use serde_json::{Value, json};

use super::{ContentStep, NewContent, SnapshotKind, SnapshotStep, Source, snapshot_step};
use crate::binding::plan::ClassError;
use crate::snapshot::model::{Class, Content, Snapshot, SnapshotStatus};

const FINALIZER: &str = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";
const CONTENT_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";
const VOLUME: &str = "local:abc:machine";
const HANDLE: &str = "local-snap:def:machine";

/// csi-snapshotter's next step for `content`, as the snapshotter's pass asks it.
fn content_step(content: &Content, snapshot_uid: Option<&str>) -> ContentStep {
    crate::binding::plan::content_step::<SnapshotKind>(content, snapshot_uid)
}

fn snapshot(extra: Value) -> Snapshot {
    let mut object = json!({
        "metadata": {"name": "snap", "namespace": "ns", "uid": "u1", "finalizers": [FINALIZER]},
        "spec": {"source": {"persistentVolumeClaimName": "data"}},
    });
    json_patch::merge(&mut object, &extra);
    serde_json::from_value(object).unwrap_or_else(|e| panic!("snapshot: {e}"))
}

fn content(extra: Value) -> Content {
    let mut object = json!({
        "metadata": {"name": "snapcontent-u1", "finalizers": [CONTENT_FINALIZER]},
        "spec": {
            "deletionPolicy": "Delete",
            "driver": "csi.stowage.io",
            "source": {"volumeHandle": VOLUME},
            "volumeSnapshotRef": {"name": "snap", "namespace": "ns", "uid": "u1"},
        },
    });
    json_patch::merge(&mut object, &extra);
    serde_json::from_value(object).unwrap_or_else(|e| panic!("content: {e}"))
}

fn class(name: &str, driver: &str, policy: &str) -> Class {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "driver": driver,
        "deletionPolicy": policy,
    }))
    .unwrap_or_else(|e| panic!("class: {e}"))
}

fn ready() -> Value {
    json!({"status": {
        "snapshotHandle": HANDLE, "readyToUse": true, "restoreSize": 1024,
        "creationTime": 1_700_000_000_000_000_000_i64,
    }})
}

fn ready_status() -> SnapshotStatus {
    SnapshotStatus {
        bound_volume_snapshot_content_name: Some("snapcontent-u1".into()),
        creation_time: Some("2023-11-14T22:13:20Z".into()),
        ready_to_use: Some(true),
        restore_size: Some("1024".into()),
        error: None,
    }
}

/// (what, snapshot, its content, its class, its source, the step).
type SnapshotCase<'a> = (
    &'static str,
    Snapshot,
    Option<Content>,
    Result<&'a Class, ClassError>,
    Source,
    SnapshotStep,
);

/// (what, the class named, the classes, the one chosen or why none).
type ClassCase = (
    &'static str,
    Option<&'static str>,
    Vec<Class>,
    Result<&'static str, &'static str>,
);

#[test]
fn snapshots_step_as_snapshot_controller_does() {
    let ours = class("ours", "csi.stowage.io", "Delete");
    let theirs = class("theirs", "other.csi.io", "Delete");
    let retaining = class("ours", "csi.stowage.io", "Retain");
    let volume = Source::Ready(VOLUME.into());
    let deleting = json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}});
    let status_json = serde_json::to_value(ready_status()).unwrap_or_default();
    let cases: Vec<SnapshotCase> = vec![
        (
            "a new snapshot gets the finalizer first",
            snapshot(json!({"metadata": {"finalizers": null}})),
            None,
            Ok(&ours),
            volume.clone(),
            SnapshotStep::AddFinalizer,
        ),
        (
            "then its content, named and with the class's policy",
            snapshot(json!({})),
            None,
            Ok(&retaining),
            volume.clone(),
            SnapshotStep::CreateContent(NewContent {
                name: "snapcontent-u1".into(),
                volume_handle: VOLUME.into(),
                class: "ours".into(),
                deletion_policy: "Retain".into(),
            }),
        ),
        (
            "another driver's class is left alone",
            snapshot(json!({"metadata": {"finalizers": null}})),
            None,
            Ok(&theirs),
            volume.clone(),
            SnapshotStep::Nothing,
        ),
        (
            "another driver's volume is left alone",
            snapshot(json!({"metadata": {"finalizers": null}})),
            None,
            Err(ClassError::NoDefault("VolumeSnapshotClass")),
            Source::Foreign,
            SnapshotStep::Nothing,
        ),
        (
            "an unbound claim is reported",
            snapshot(json!({})),
            None,
            Ok(&ours),
            Source::Unusable("claim ns/data is not bound".into()),
            SnapshotStep::Error("claim ns/data is not bound".into()),
        ),
        (
            "an error already reported is not written again",
            snapshot(json!({"status": {"readyToUse": false,
                "error": {"message": "claim ns/data is not bound"}}})),
            None,
            Ok(&ours),
            Source::Unusable("claim ns/data is not bound".into()),
            SnapshotStep::Nothing,
        ),
        (
            "a new reason replaces the old",
            snapshot(json!({"status": {"readyToUse": false,
                "error": {"message": "claim ns/data does not exist"}}})),
            None,
            Ok(&ours),
            Source::Unusable("claim ns/data is not bound".into()),
            SnapshotStep::Error("claim ns/data is not bound".into()),
        ),
        (
            "a missing class is reported",
            snapshot(json!({})),
            None,
            Err(ClassError::Missing {
                kind: "VolumeSnapshotClass",
                name: "x".into(),
            }),
            volume.clone(),
            SnapshotStep::Error("VolumeSnapshotClass x does not exist".into()),
        ),
        (
            "a content not yet taken: bound, not ready",
            snapshot(json!({})),
            Some(content(json!({}))),
            Ok(&ours),
            volume.clone(),
            SnapshotStep::Status(SnapshotStatus {
                bound_volume_snapshot_content_name: Some("snapcontent-u1".into()),
                ready_to_use: Some(false),
                ..SnapshotStatus::default()
            }),
        ),
        (
            "a ready content's status is copied, the time as RFC 3339",
            snapshot(json!({})),
            Some(content(ready())),
            Ok(&ours),
            volume.clone(),
            SnapshotStep::Status(ready_status()),
        ),
        (
            "once copied, nothing more",
            snapshot(json!({"status": status_json})),
            Some(content(ready())),
            Ok(&ours),
            volume.clone(),
            SnapshotStep::Nothing,
        ),
        (
            "an earlier error is cleared by the copy",
            snapshot(json!({"status": {"error": {"message": "was"}}})),
            Some(content(ready())),
            Ok(&ours),
            volume.clone(),
            SnapshotStep::Status(ready_status()),
        ),
        (
            "a content bound to another snapshot is reported",
            snapshot(json!({})),
            Some(content(
                json!({"spec": {"volumeSnapshotRef": {"uid": "u2"}}}),
            )),
            Ok(&ours),
            volume.clone(),
            SnapshotStep::Error(
                "VolumeSnapshotContent snapcontent-u1 is bound to another snapshot".into(),
            ),
        ),
        (
            "a pre-provisioned content without a uid is bound",
            snapshot(json!({"spec": {"source": {
                "persistentVolumeClaimName": null, "volumeSnapshotContentName": "pre"}}})),
            Some(content(json!({"metadata": {"name": "pre"},
                "spec": {"volumeSnapshotRef": {"uid": null}}}))),
            Err(ClassError::NoDefault("VolumeSnapshotClass")),
            Source::Foreign,
            SnapshotStep::BindContent("pre".into()),
        ),
        (
            "a pre-provisioned snapshot whose content is missing is reported",
            snapshot(json!({"spec": {"source": {
                "persistentVolumeClaimName": null, "volumeSnapshotContentName": "pre"}}})),
            None,
            Err(ClassError::NoDefault("VolumeSnapshotClass")),
            Source::Foreign,
            SnapshotStep::Error("VolumeSnapshotContent pre does not exist".into()),
        ),
        (
            "deleting with policy Delete deletes the content first",
            snapshot(deleting.clone()),
            Some(content(ready())),
            Ok(&ours),
            volume.clone(),
            SnapshotStep::DeleteContent("snapcontent-u1".into()),
        ),
        (
            "and waits while the content goes",
            snapshot(deleting.clone()),
            Some(content(
                json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
            )),
            Ok(&ours),
            volume.clone(),
            SnapshotStep::Nothing,
        ),
        (
            "then lets the snapshot go",
            snapshot(deleting.clone()),
            None,
            Ok(&ours),
            volume.clone(),
            SnapshotStep::RemoveFinalizer,
        ),
        (
            "with policy Retain the content stays",
            snapshot(deleting.clone()),
            Some(content(json!({"spec": {"deletionPolicy": "Retain"}}))),
            Ok(&ours),
            volume.clone(),
            SnapshotStep::RemoveFinalizer,
        ),
    ];
    for (what, snapshot, content, class, source, expected) in cases {
        assert_eq!(
            snapshot_step(&snapshot, content.as_ref(), class, &source),
            expected,
            "{what}"
        );
    }
}

#[test]
fn contents_step_as_csi_snapshotter_does() {
    let deleting = json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}});
    let cases: Vec<(&str, Content, Option<&str>, ContentStep)> = vec![
        (
            "a new content gets the finalizer first",
            content(json!({"metadata": {"finalizers": null}})),
            Some("u1"),
            ContentStep::AddFinalizer,
        ),
        (
            "then the snapshot, named from the snapshot's uid",
            content(json!({})),
            Some("u1"),
            ContentStep::Create {
                name: "snapshot-u1".into(),
                volumes: VOLUME.into(),
            },
        ),
        (
            "a ready content is left alone",
            content(ready()),
            Some("u1"),
            ContentStep::Nothing,
        ),
        (
            "a not yet ready one is asked again",
            content(json!({"status": {"snapshotHandle": HANDLE, "readyToUse": false}})),
            Some("u1"),
            ContentStep::Create {
                name: "snapshot-u1".into(),
                volumes: VOLUME.into(),
            },
        ),
        (
            "a pre-provisioned content is looked up by its handle",
            content(
                json!({"spec": {"source": {"volumeHandle": null, "snapshotHandle": HANDLE},
                "volumeSnapshotRef": {"uid": null}}}),
            ),
            None,
            ContentStep::Check(HANDLE.into()),
        ),
        (
            "another driver's content is left alone",
            content(json!({"spec": {"driver": "other.csi.io"}})),
            Some("u1"),
            ContentStep::Nothing,
        ),
        (
            "deleting with Delete deletes the snapshot and lets go",
            content(json!({"metadata": deleting["metadata"], "status": ready()["status"]})),
            Some("u1"),
            ContentStep::Release(Some(HANDLE.into())),
        ),
        (
            "deleting a group member leaves its snapshot to the group",
            content(json!({"metadata": {
                "deletionTimestamp": deleting["metadata"]["deletionTimestamp"],
                "annotations": {"groupsnapshot.storage.k8s.io/volumeGroupSnapshotHandle": "local-grp:g:machine"},
            }, "status": ready()["status"]})),
            Some("u1"),
            ContentStep::Release(None),
        ),
        (
            "deleting before any snapshot was taken just lets go",
            content(deleting.clone()),
            Some("u1"),
            ContentStep::Release(None),
        ),
        (
            "deleting with Retain keeps the snapshot",
            content(
                json!({"metadata": deleting["metadata"], "status": ready()["status"],
                "spec": {"deletionPolicy": "Retain"}}),
            ),
            Some("u1"),
            ContentStep::Release(None),
        ),
        (
            "its snapshot gone, a Delete content goes",
            content(ready()),
            None,
            ContentStep::DeleteOrphan,
        ),
        (
            "also when a new snapshot took the name",
            content(ready()),
            Some("u2"),
            ContentStep::DeleteOrphan,
        ),
        (
            "its snapshot gone, a Retain content stays",
            content(json!({"spec": {"deletionPolicy": "Retain"}})),
            None,
            ContentStep::Nothing,
        ),
    ];
    for (what, content, snapshot_uid, expected) in cases {
        assert_eq!(content_step(&content, snapshot_uid), expected, "{what}");
    }
}

#[test]
fn the_default_class_is_the_one_of_our_driver_so_annotated() {
    let annotated = |name: &str, driver: &str| -> Class {
        serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {
                "snapshot.storage.kubernetes.io/is-default-class": "true"}},
            "driver": driver, "deletionPolicy": "Delete",
        }))
        .unwrap_or_else(|e| panic!("class: {e}"))
    };
    let plain = class("plain", "csi.stowage.io", "Delete");
    let cases: Vec<ClassCase> = vec![
        ("named", Some("plain"), vec![plain.clone()], Ok("plain")),
        (
            "named but missing",
            Some("x"),
            vec![plain.clone()],
            Err("VolumeSnapshotClass x does not exist"),
        ),
        (
            "the default of our driver",
            None,
            vec![
                plain.clone(),
                annotated("other", "other.csi.io"),
                annotated("d", "csi.stowage.io"),
            ],
            Ok("d"),
        ),
        (
            "no default",
            None,
            vec![plain.clone()],
            Err("no default VolumeSnapshotClass for csi.stowage.io"),
        ),
        (
            "two defaults",
            None,
            vec![
                annotated("a", "csi.stowage.io"),
                annotated("b", "csi.stowage.io"),
            ],
            Err("more than one default VolumeSnapshotClass for csi.stowage.io"),
        ),
    ];
    for (what, named, classes, expected) in cases {
        let found = super::our_class(named, &classes)
            .map(|c| c.metadata.name.clone().unwrap_or_default())
            .map_err(|e| e.to_string());
        assert_eq!(found.as_deref().map_err(String::as_str), expected, "{what}");
    }
}
