//! Table-driven checks of the group snapshotter's decisions, one upstream rule per case.

use serde_json::{Value, json};

use super::{
    GroupContentStep, GroupKind, GroupStep, Member, Members, NewGroupContent, Sources, group_step,
    member_names, our_class, releases_member,
};
use crate::binding::plan::ClassError;
use crate::groupsnapshot::model::{GroupClass, GroupContent, GroupSnapshot, GroupSnapshotStatus};
use crate::snapshot::model::Snapshot;

const FINALIZER: &str = "groupsnapshot.storage.kubernetes.io/volumegroupsnapshot-bound-protection";
const CONTENT_FINALIZER: &str =
    "groupsnapshot.storage.kubernetes.io/volumegroupsnapshotcontent-bound-protection";
const IN_GROUP: &str = "snapshot.storage.kubernetes.io/volumesnapshot-in-group-protection";
const GROUP_HANDLE: &str = "local-grp:k:machine";
const DELETING: &str = "2024-01-01T00:00:00Z";

/// csi-snapshotter's next step for a group `content`, as the pass asks it.
fn content_step(content: &GroupContent, group_uid: Option<&str>) -> GroupContentStep {
    crate::binding::plan::content_step::<GroupKind>(content, group_uid)
}

fn parse<T: serde::de::DeserializeOwned>(mut object: Value, extra: &Value) -> T {
    json_patch::merge(&mut object, extra);
    serde_json::from_value(object).unwrap_or_else(|e| panic!("{e}"))
}

fn group(extra: Value) -> GroupSnapshot {
    parse(
        json!({
            "metadata": {"name": "g", "namespace": "ns", "uid": "g1", "finalizers": [FINALIZER]},
            "spec": {"source": {"selector": {"matchLabels": {"app": "db"}}},
                     "volumeGroupSnapshotClassName": "k"},
        }),
        &extra,
    )
}

fn content(extra: Value) -> GroupContent {
    parse(
        json!({
            "metadata": {"name": "groupsnapcontent-g1", "finalizers": [CONTENT_FINALIZER]},
            "spec": {
                "deletionPolicy": "Delete",
                "driver": "csi.stowage.io",
                "source": {"volumeHandles": ["local:a:machine", "local:b:machine"]},
                "volumeGroupSnapshotClassName": "k",
                "volumeGroupSnapshotRef": {"name": "g", "namespace": "ns", "uid": "g1"},
            },
        }),
        &extra,
    )
}

/// The content once the driver answered: the group and its two members.
fn taken() -> Value {
    json!({"status": {
        "volumeGroupSnapshotHandle": GROUP_HANDLE,
        "readyToUse": true,
        "creationTime": "2023-11-14T22:13:20Z",
        "volumeSnapshotInfoList": [
            {"volumeHandle": "local:a:machine", "snapshotHandle": "local-snap:a1:machine", "readyToUse": true},
            {"volumeHandle": "local:b:machine", "snapshotHandle": "local-snap:b1:machine", "readyToUse": true},
        ],
    }})
}

fn member(volume: &str, ready: bool) -> Snapshot {
    let (name, content) = member_names("g1", volume);
    parse(
        json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("m-{volume}"),
                         "finalizers": [IN_GROUP],
                         "ownerReferences": [{"apiVersion": "groupsnapshot.storage.k8s.io/v1",
                             "kind": "VolumeGroupSnapshot", "name": "g", "uid": "g1"}]},
            "spec": {"source": {"volumeSnapshotContentName": content}},
            "status": {"readyToUse": ready},
        }),
        &json!({}),
    )
}

fn class(name: &str, driver: &str, default: bool) -> GroupClass {
    parse(
        json!({
            "metadata": {"name": name, "annotations": {
                "groupsnapshot.storage.kubernetes.io/is-default-class": default.to_string()}},
            "driver": driver,
            "deletionPolicy": "Delete",
        }),
        &json!({}),
    )
}

fn volumes() -> Sources {
    Sources::Ready(vec!["local:a:machine".into(), "local:b:machine".into()])
}

fn both_members(ready: bool) -> Vec<Snapshot> {
    vec![
        member("local:a:machine", ready),
        member("local:b:machine", ready),
    ]
}

#[test]
fn members_are_named_as_snapshot_controller_names_them() {
    // sha256 of the group's uid followed by the volume handle.
    let digest = "86ad0eb35f4bb63d22f64bf4600d70e3f94cd2c1e11039e24f276203a2677d93";
    assert_eq!(
        member_names("g1", "local:a:machine"),
        (
            format!("snapshot-{digest}"),
            format!("snapcontent-{digest}")
        )
    );
}

/// (what, group snapshot, its content, its class, its sources, its members, the step).
type GroupCase<'a> = (
    &'static str,
    GroupSnapshot,
    Option<GroupContent>,
    Result<&'a GroupClass, ClassError>,
    Sources,
    Vec<Snapshot>,
    GroupStep,
);

#[test]
fn group_snapshots_step_as_snapshot_controller_does() {
    let ours = class("k", "csi.stowage.io", false);
    let theirs = class("k", "other.csi.io", false);
    let deleting = json!({"metadata": {"deletionTimestamp": DELETING}});
    let (a, _) = member_names("g1", "local:a:machine");
    let (b, b_content) = member_names("g1", "local:b:machine");
    let ready = GroupSnapshotStatus {
        bound_volume_group_snapshot_content_name: Some("groupsnapcontent-g1".into()),
        creation_time: Some("2023-11-14T22:13:20Z".into()),
        ready_to_use: Some(true),
        error: None,
    };
    let cases: Vec<GroupCase> = vec![
        (
            "a new group snapshot gets the finalizer first",
            group(json!({"metadata": {"finalizers": null}})),
            None,
            Ok(&ours),
            volumes(),
            vec![],
            GroupStep::AddFinalizer,
        ),
        (
            "another driver's class is left alone",
            group(json!({"metadata": {"finalizers": null}})),
            None,
            Ok(&theirs),
            volumes(),
            vec![],
            GroupStep::Nothing,
        ),
        (
            "the selected claims' volumes go into a new bound content",
            group(json!({})),
            None,
            Ok(&ours),
            volumes(),
            vec![],
            GroupStep::CreateContent(NewGroupContent {
                name: "groupsnapcontent-g1".into(),
                volume_handles: vec!["local:a:machine".into(), "local:b:machine".into()],
                class: "k".into(),
                deletion_policy: "Delete".into(),
            }),
        ),
        (
            "a missing class is reported",
            group(json!({})),
            None,
            Err(ClassError::Missing {
                kind: "VolumeGroupSnapshotClass",
                name: "k".into(),
            }),
            volumes(),
            vec![],
            GroupStep::Error("VolumeGroupSnapshotClass k does not exist".into()),
        ),
        (
            "an unbound claim is reported",
            group(json!({})),
            None,
            Ok(&ours),
            Sources::Unusable("claim ns/a is not bound".into()),
            vec![],
            GroupStep::Error("claim ns/a is not bound".into()),
        ),
        (
            "an error already reported is not written again",
            group(
                json!({"status": {"readyToUse": false, "error": {"message": "claim ns/a is not bound"}}}),
            ),
            None,
            Ok(&ours),
            Sources::Unusable("claim ns/a is not bound".into()),
            vec![],
            GroupStep::Nothing,
        ),
        (
            "a pre-provisioned content that does not exist is reported",
            group(json!({"spec": {"source": {"selector": null,
                "volumeGroupSnapshotContentName": "imported"}}})),
            None,
            Err(ClassError::NoDefault("VolumeGroupSnapshotClass")),
            Sources::Foreign,
            vec![],
            GroupStep::Error("VolumeGroupSnapshotContent imported does not exist".into()),
        ),
        (
            "a pre-provisioned content gets the group's uid",
            group(json!({"spec": {"source": {"selector": null,
                "volumeGroupSnapshotContentName": "groupsnapcontent-g1"}}})),
            Some(content(
                json!({"spec": {"volumeGroupSnapshotRef": {"uid": null}}}),
            )),
            Err(ClassError::NoDefault("VolumeGroupSnapshotClass")),
            Sources::Foreign,
            vec![],
            GroupStep::BindContent("groupsnapcontent-g1".into()),
        ),
        (
            "a content bound to another group is reported",
            group(json!({})),
            Some(content(
                json!({"spec": {"volumeGroupSnapshotRef": {"uid": "other"}}}),
            )),
            Ok(&ours),
            volumes(),
            vec![],
            GroupStep::Error(
                "VolumeGroupSnapshotContent groupsnapcontent-g1 is bound to another group snapshot"
                    .into(),
            ),
        ),
        (
            "no members before the driver answered; the status says not ready",
            group(json!({})),
            Some(content(json!({}))),
            Ok(&ours),
            volumes(),
            vec![],
            GroupStep::Status(GroupSnapshotStatus {
                ready_to_use: Some(false),
                creation_time: None,
                ..ready.clone()
            }),
        ),
        (
            "the driver's refusal on the content is the group snapshot's error",
            group(json!({})),
            Some(content(json!({"status": {"readyToUse": false,
                "error": {"message": "CreateVolumeGroupSnapshot failed: volumes on two nodes"}}}))),
            Ok(&ours),
            volumes(),
            vec![],
            GroupStep::Error("CreateVolumeGroupSnapshot failed: volumes on two nodes".into()),
        ),
        (
            "each member the driver took gets a snapshot and a content",
            group(json!({})),
            Some(content(taken())),
            Ok(&ours),
            volumes(),
            vec![member("local:a:machine", true)],
            GroupStep::Own(Members::Create(vec![Member {
                snapshot: b.clone(),
                content: b_content.clone(),
                volume_handle: "local:b:machine".into(),
                snapshot_handle: "local-snap:b1:machine".into(),
            }])),
        ),
        (
            "not ready while a member is not",
            group(json!({})),
            Some(content(taken())),
            Ok(&ours),
            volumes(),
            both_members(false),
            GroupStep::Status(GroupSnapshotStatus {
                ready_to_use: Some(false),
                ..ready.clone()
            }),
        ),
        (
            "ready with the content and every member",
            group(json!({})),
            Some(content(taken())),
            Ok(&ours),
            volumes(),
            both_members(true),
            GroupStep::Status(ready.clone()),
        ),
        (
            "a status already written is not written again",
            group(json!({"status": serde_json::to_value(&ready).unwrap_or_default()})),
            Some(content(taken())),
            Ok(&ours),
            volumes(),
            both_members(true),
            GroupStep::Nothing,
        ),
        (
            "deleting deletes the members first",
            group(deleting.clone()),
            Some(content(taken())),
            Ok(&ours),
            volumes(),
            both_members(true),
            GroupStep::Own(Members::Delete(vec![a.clone(), b.clone()])),
        ),
        (
            "then a Delete content",
            group(deleting.clone()),
            Some(content(taken())),
            Ok(&ours),
            volumes(),
            vec![],
            GroupStep::DeleteContent("groupsnapcontent-g1".into()),
        ),
        (
            "and waits for it to go",
            group(deleting.clone()),
            Some(content(
                json!({"metadata": {"deletionTimestamp": DELETING}}),
            )),
            Ok(&ours),
            volumes(),
            vec![],
            GroupStep::Nothing,
        ),
        (
            "a Retain content stays and the finalizer goes",
            group(deleting.clone()),
            Some(content(json!({"spec": {"deletionPolicy": "Retain"}}))),
            Ok(&ours),
            volumes(),
            vec![],
            GroupStep::RemoveFinalizer,
        ),
    ];
    for (what, group, content, class, sources, members, want) in cases {
        assert_eq!(
            group_step(&group, content.as_ref(), class, &sources, &members),
            want,
            "{what}"
        );
    }
}

#[test]
fn a_member_lets_go_once_its_group_is_going() {
    let mut going = member("local:a:machine", true);
    going.metadata.deletion_timestamp = serde_json::from_value(json!(DELETING)).ok();
    for (what, snapshot, group_alive, want) in [
        ("deleted with its group alive: held", &going, true, false),
        (
            "deleted, its group going or gone: released",
            &going,
            false,
            true,
        ),
        (
            "not deleted: nothing to release",
            &member("local:a:machine", true),
            false,
            false,
        ),
    ] {
        assert_eq!(releases_member(snapshot, group_alive), want, "{what}");
    }
}

#[test]
fn group_contents_step_as_csi_snapshotter_does() {
    let deleting = json!({"metadata": {"deletionTimestamp": DELETING}});
    let members = vec![
        "local-snap:a1:machine".to_string(),
        "local-snap:b1:machine".to_string(),
    ];
    let mut taken_deleting = taken();
    taken_deleting["metadata"] = deleting["metadata"].clone();
    let cases: Vec<(&str, GroupContent, Option<&str>, GroupContentStep)> = vec![
        (
            "a new content gets the finalizer first",
            content(json!({"metadata": {"finalizers": null}})),
            Some("g1"),
            GroupContentStep::AddFinalizer,
        ),
        (
            "then the driver takes the group, named from the group's uid",
            content(json!({})),
            Some("g1"),
            GroupContentStep::Create {
                name: "groupsnapshot-g1".into(),
                volumes: vec!["local:a:machine".into(), "local:b:machine".into()],
            },
        ),
        (
            "a ready content needs nothing",
            content(taken()),
            Some("g1"),
            GroupContentStep::Nothing,
        ),
        (
            "a pre-provisioned content is looked up by its handles",
            content(json!({"spec": {"source": {"volumeHandles": null,
                "groupSnapshotHandles": {"volumeGroupSnapshotHandle": GROUP_HANDLE,
                                         "volumeSnapshotHandles": members.clone()}}}})),
            Some("g1"),
            GroupContentStep::Check((GROUP_HANDLE.into(), members.clone())),
        ),
        (
            "another driver's content is left alone",
            content(json!({"spec": {"driver": "other.csi.io"}})),
            Some("g1"),
            GroupContentStep::Nothing,
        ),
        (
            "deleting with Delete deletes the group with its members",
            content(taken_deleting.clone()),
            Some("g1"),
            GroupContentStep::Release(Some((GROUP_HANDLE.into(), members.clone()))),
        ),
        (
            "deleting with Retain keeps it",
            content({
                let mut retain = taken_deleting.clone();
                retain["spec"] = json!({"deletionPolicy": "Retain"});
                retain
            }),
            Some("g1"),
            GroupContentStep::Release(None),
        ),
        (
            "deleting before the driver answered just lets go",
            content(deleting.clone()),
            Some("g1"),
            GroupContentStep::Release(None),
        ),
        (
            "its group snapshot gone, a Delete content goes",
            content(taken()),
            None,
            GroupContentStep::DeleteOrphan,
        ),
        (
            "its group snapshot gone, a Retain content stays",
            content(json!({"spec": {"deletionPolicy": "Retain"}})),
            None,
            GroupContentStep::Nothing,
        ),
    ];
    for (what, content, uid, want) in cases {
        assert_eq!(content_step(&content, uid), want, "{what}");
    }
}

#[test]
fn the_default_class_is_our_drivers_one_so_annotated() {
    let classes = vec![
        class("theirs", "other.csi.io", true),
        class("ours", "csi.stowage.io", true),
        class("plain", "csi.stowage.io", false),
    ];
    let name = |r: Result<&GroupClass, ClassError>| {
        r.map(|c| c.metadata.name.clone().unwrap_or_default())
            .map_err(|e| e.to_string())
    };
    assert_eq!(name(our_class(None, &classes)), Ok("ours".into()));
    assert_eq!(name(our_class(Some("plain"), &classes)), Ok("plain".into()));
    assert_eq!(
        name(our_class(Some("gone"), &classes)),
        Err("VolumeGroupSnapshotClass gone does not exist".into())
    );
    assert_eq!(
        name(our_class(None, &classes[2..])),
        Err("no default VolumeGroupSnapshotClass for csi.stowage.io".into())
    );
}
