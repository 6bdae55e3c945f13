//! Volume group snapshots under `stowage up`, driven by kubectl as a user would: the
//! provisioner's group snapshotter plays snapshot-controller's and csi-snapshotter's
//! group parts. A VolumeGroupSnapshot selecting two labelled claims becomes ready with
//! one member VolumeSnapshot per claim, each member restores its claim's data of that
//! instant, and deleting the group (policy Delete) removes the members and their data.

use std::collections::BTreeMap;
use std::time::Duration;

use stowage_tests::mounts::MountedDir;
use stowage_tests::up::{
    apply, claim_holding, claim_manifest, delete_retained, deleted, field, gone, import, kubectl,
    mount_claim, ready, restored_text, snapshots_removed, start, stop, stored_snapshots, text,
    unmount,
};
use stowage_tests::wait_for;

/// How long a group snapshot of two claims may take to be ready.
const GROUP_READY: Duration = Duration::from_secs(90);

const CLASS: &str = r#"
apiVersion: groupsnapshot.storage.k8s.io/v1
kind: VolumeGroupSnapshotClass
metadata: {name: stowage-group}
driver: csi.stowage.io
deletionPolicy: Delete
"#;

fn group_snapshot(name: &str, class: &str) -> String {
    format!(
        r#"
apiVersion: groupsnapshot.storage.k8s.io/v1
kind: VolumeGroupSnapshot
metadata: {{name: {name}}}
spec:
  volumeGroupSnapshotClassName: {class}
  source:
    selector: {{matchLabels: {{app: db}}}}
"#
    )
}

fn lines(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn a_group_snapshot_takes_every_selected_claim_restores_each_and_delete_removes_them() {
    let dir = MountedDir::new();
    let (up, data) = start(&dir).await;

    // A class that does not exist: said in status.error and in an event, and the
    // group snapshot still deletes.
    apply(&data, &group_snapshot("early", "missing"));
    wait_for("the error in status", Duration::from_secs(30), async || {
        field(
            &data,
            &["volumegroupsnapshot", "early"],
            ".status.error.message",
        )
        .contains("VolumeGroupSnapshotClass missing does not exist")
        .then_some(())
    })
    .await;
    wait_for("a warning event", Duration::from_secs(30), async || {
        let events = field(&data, &["events"], ".items[*].reason");
        events.contains("GroupSnapshotPending").then_some(())
    })
    .await;
    deleted(&data, &["volumegroupsnapshot", "early"]).await;

    apply(&data, CLASS);
    let mut targets = BTreeMap::new();
    for name in ["alpha", "beta"] {
        apply(&data, &claim_manifest(name, "app: db", None));
        let target = mount_claim(&dir, &data, name).await;
        std::fs::write(target.join("data.txt"), format!("{name} at the snapshot")).expect("write");
        targets.insert(name, target);
    }
    // Not selected: must not be in the group.
    apply(&data, &claim_manifest("other", "app: web", None));

    apply(&data, &group_snapshot("group", "stowage-group"));
    ready(&data, &["volumegroupsnapshot", "group"], GROUP_READY).await;
    let listed = text(&kubectl(&data, &["get", "volumegroupsnapshots"], None));
    assert!(
        listed.contains("group") && listed.contains("true") && listed.contains("stowage-group"),
        "{listed}"
    );
    let uid = field(&data, &["volumegroupsnapshot", "group"], ".metadata.uid");
    let content = field(
        &data,
        &["volumegroupsnapshot", "group"],
        ".status.boundVolumeGroupSnapshotContentName",
    );
    assert_eq!(
        content,
        format!("groupsnapcontent-{uid}"),
        "named as upstream"
    );
    let group_content = ["volumegroupsnapshotcontent", content.as_str()];
    assert_eq!(
        field(&data, &group_content, ".spec.volumeGroupSnapshotRef.uid"),
        uid,
        "the content points back at the group snapshot"
    );
    let group_handle = field(&data, &group_content, ".status.volumeGroupSnapshotHandle");
    assert!(group_handle.starts_with("local-grp:"), "{group_handle}");
    assert!(
        !field(
            &data,
            &["volumegroupsnapshot", "group"],
            ".status.creationTime"
        )
        .is_empty(),
        "creation time reported"
    );

    // volume handle -> member snapshot handle, from the content's status.
    let taken: BTreeMap<String, String> = lines(&field(
        &data,
        &group_content,
        r#"range .status.volumeSnapshotInfoList[*]}{.volumeHandle}={.snapshotHandle}{"\n"}{end"#,
    ))
    .into_iter()
    .filter_map(|l| {
        l.split_once('=')
            .map(|(v, s)| (v.to_string(), s.to_string()))
    })
    .collect();
    assert_eq!(taken.len(), 2, "two members: {taken:?}");

    // Each member VolumeSnapshot: owned by the group, bound to a content holding its
    // handle; found by the claim whose volume it was taken from.
    let members = lines(&field(
        &data,
        &["volumesnapshots"],
        r#"range .items[?(@.metadata.ownerReferences[0].kind=="VolumeGroupSnapshot")]}{.metadata.name}{"\n"}{end"#,
    ));
    assert_eq!(members.len(), 2, "{members:?}");
    let mut member_of = BTreeMap::new();
    for member in &members {
        assert!(
            member.starts_with("snapshot-"),
            "named as upstream: {member}"
        );
        let snapshot = ["volumesnapshot", member.as_str()];
        assert_eq!(
            field(&data, &snapshot, ".metadata.ownerReferences[0].uid"),
            uid
        );
        ready(&data, &snapshot, Duration::from_secs(30)).await;
        let member_content = field(&data, &snapshot, ".status.boundVolumeSnapshotContentName");
        let handle = field(
            &data,
            &["volumesnapshotcontent", &member_content],
            ".status.snapshotHandle",
        );
        let volume = taken
            .iter()
            .find(|(_, s)| **s == handle)
            .map(|(v, _)| v.clone())
            .unwrap_or_else(|| panic!("{handle} is not in {taken:?}"));
        member_of.insert(volume, member.clone());
    }

    // Written after the group snapshot: the restores must not see it.
    for target in targets.values() {
        std::fs::write(target.join("data.txt"), "after the snapshot").expect("write");
    }
    for name in ["alpha", "beta"] {
        let volume_name = field(&data, &["pvc", name], ".spec.volumeName");
        let volume = field(&data, &["pv", &volume_name], ".spec.csi.volumeHandle");
        let member = member_of
            .get(&volume)
            .unwrap_or_else(|| panic!("no member of {name} ({volume}) in {member_of:?}"));
        let restored_name = format!("{name}-restored");
        let claim = (restored_name.as_str(), "restored: \"yes\"");
        let restored = restored_text(&dir, &data, claim, member).await;
        assert_eq!(restored, format!("{name} at the snapshot"));
    }
    for target in targets.values() {
        unmount(&data, target).await;
    }

    assert!(
        !stored_snapshots(&data).is_empty(),
        "the members' data is on disk"
    );
    deleted(&data, &["volumegroupsnapshot", "group"]).await;
    gone(&data, &group_content).await;
    for member in &members {
        gone(&data, &["volumesnapshot", member]).await;
    }
    snapshots_removed(&data).await;
    stop(up).await;
}

#[tokio::test]
async fn retain_keeps_the_group_and_a_pre_provisioned_content_binds_a_new_group_snapshot() {
    let dir = MountedDir::new();
    let (up, data) = start(&dir).await;
    apply(
        &data,
        &CLASS
            .replace("stowage-group", "stowage-group-retain")
            .replace("Delete", "Retain"),
    );
    claim_holding(&dir, &data, ("alpha", "app: db"), "kept").await;

    apply(&data, &group_snapshot("kept", "stowage-group-retain"));
    ready(&data, &["volumegroupsnapshot", "kept"], GROUP_READY).await;
    let content = field(
        &data,
        &["volumegroupsnapshot", "kept"],
        ".status.boundVolumeGroupSnapshotContentName",
    );
    let group_content = ["volumegroupsnapshotcontent", content.as_str()];
    let group_handle = field(&data, &group_content, ".status.volumeGroupSnapshotHandle");
    let member_handle = field(
        &data,
        &group_content,
        ".status.volumeSnapshotInfoList[0].snapshotHandle",
    );
    let handle = (".status.volumeGroupSnapshotHandle", group_handle.as_str());
    let group = ["volumegroupsnapshot", "kept"];
    delete_retained(&data, &group, &group_content, handle).await;

    let source = format!(
        r#"
    groupSnapshotHandles:
      volumeGroupSnapshotHandle: "{group_handle}"
      volumeSnapshotHandles: ["{member_handle}"]"#
    );
    let kind = ("groupsnapshot.storage.k8s.io", "VolumeGroupSnapshot");
    import(&data, kind, "imported-group", &source, GROUP_READY).await;
    let uid = field(&data, &["volumegroupsnapshot", "imported"], ".metadata.uid");
    let member = lines(&field(
        &data,
        &["volumesnapshots"],
        &format!(
            r#"range .items[?(@.metadata.ownerReferences[0].uid=="{uid}")]}}{{.metadata.name}}{{"\n"}}{{end"#
        ),
    ));
    assert_eq!(member.len(), 1, "{member:?}");
    let claim = ("restored", "restored: \"yes\"");
    let restored = restored_text(&dir, &data, claim, &member[0]).await;
    assert_eq!(restored, "kept");
    stop(up).await;
}
