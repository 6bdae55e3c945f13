//! Snapshots under `stowage up`, driven by kubectl as a user would: the provisioner's
//! snapshotter plays snapshot-controller and csi-snapshotter. A snapshot of a bound
//! claim becomes ready, a claim restored from it has the data of that instant, and
//! deleting it (policy Delete) removes its data; with Retain the content and data
//! stay, and a pre-provisioned content of that handle binds a new snapshot.

use std::path::Path;
use std::time::Duration;

use stowage_tests::mounts::MountedDir;
use stowage_tests::up::{
    apply, claim_manifest, field, gone, kubectl, mount_claim, start, stop, stored_snapshots, text,
    unmount,
};
use stowage_tests::{holds_for, wait_for};

fn snapshot_class(name: &str, policy: &str, default: bool) -> String {
    format!(
        r#"
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata:
  name: {name}
  annotations: {{snapshot.storage.kubernetes.io/is-default-class: "{default}"}}
driver: csi.stowage.io
deletionPolicy: {policy}
"#
    )
}

fn snapshot(name: &str, claim: &str, class: Option<&str>) -> String {
    let class = class.map_or_else(String::new, |c| format!("  volumeSnapshotClassName: {c}\n"));
    format!(
        r#"
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {{name: {name}}}
spec:
{class}  source: {{persistentVolumeClaimName: {claim}}}
"#
    )
}

async fn wait_ready(data: &Path, name: &str) {
    wait_for(
        &format!("snapshot {name} to be ready"),
        Duration::from_secs(60),
        async || {
            (field(data, &["volumesnapshot", name], ".status.readyToUse") == "true").then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_snapshot_becomes_ready_restores_its_instant_and_delete_removes_its_data() {
    let dir = MountedDir::new();
    let (up, data) = start(&dir).await;
    apply(&data, &snapshot_class("stowage-delete", "Delete", true));
    apply(&data, &claim_manifest("source", "", None));
    let source = mount_claim(&dir, &data, "source").await;
    std::fs::write(source.join("data.txt"), "at the snapshot").expect("write");

    apply(&data, &snapshot("snap", "source", None));
    wait_ready(&data, "snap").await;
    let uid = field(&data, &["volumesnapshot", "snap"], ".metadata.uid");
    let content = field(
        &data,
        &["volumesnapshot", "snap"],
        ".status.boundVolumeSnapshotContentName",
    );
    assert_eq!(content, format!("snapcontent-{uid}"), "named as upstream");
    assert_eq!(
        field(
            &data,
            &["volumesnapshotcontent", &content],
            ".spec.volumeSnapshotRef.uid"
        ),
        uid,
        "the content points back at the snapshot"
    );
    assert_eq!(
        field(
            &data,
            &["volumesnapshotcontent", &content],
            ".spec.deletionPolicy"
        ),
        "Delete",
        "the default class's policy"
    );
    let handle = field(
        &data,
        &["volumesnapshotcontent", &content],
        ".status.snapshotHandle",
    );
    assert!(handle.starts_with("local-snap:"), "{handle}");
    assert!(
        !field(&data, &["volumesnapshot", "snap"], ".status.restoreSize").is_empty(),
        "restore size reported"
    );
    assert!(
        !field(&data, &["volumesnapshot", "snap"], ".status.creationTime").is_empty(),
        "creation time reported"
    );
    let finalizers = field(&data, &["volumesnapshot", "snap"], ".metadata.finalizers");
    assert!(
        finalizers.contains("volumesnapshot-bound-protection"),
        "{finalizers}"
    );

    // Written after the snapshot: the restore must not see it.
    std::fs::write(source.join("data.txt"), "after the snapshot").expect("write");
    apply(&data, &claim_manifest("restored", "", Some("snap")));
    let restored = mount_claim(&dir, &data, "restored").await;
    assert_eq!(
        std::fs::read_to_string(restored.join("data.txt")).expect("read restored"),
        "at the snapshot"
    );
    unmount(&data, &restored).await;
    unmount(&data, &source).await;

    assert!(
        !stored_snapshots(&data).is_empty(),
        "the snapshot's data is on disk"
    );
    let deleted = kubectl(&data, &["delete", "volumesnapshot", "snap"], None);
    assert!(deleted.status.success(), "{}", text(&deleted));
    gone(&data, &["volumesnapshot", "snap"]).await;
    gone(&data, &["volumesnapshotcontent", &content]).await;
    wait_for(
        "the snapshot's data to be removed",
        Duration::from_secs(30),
        async || stored_snapshots(&data).is_empty().then_some(()),
    )
    .await;
    stop(up).await;
}

#[tokio::test]
async fn retain_keeps_the_content_and_a_pre_provisioned_content_binds_a_new_snapshot() {
    let dir = MountedDir::new();
    let (up, data) = start(&dir).await;
    apply(&data, &snapshot_class("stowage-retain", "Retain", false));
    apply(&data, &claim_manifest("source", "", None));
    let source = mount_claim(&dir, &data, "source").await;
    std::fs::write(source.join("data.txt"), "kept").expect("write");
    unmount(&data, &source).await;

    // A snapshot naming a class that does not exist says so and waits.
    apply(&data, &snapshot("early", "source", Some("missing")));
    wait_for("the error in status", Duration::from_secs(30), async || {
        let message = field(&data, &["volumesnapshot", "early"], ".status.error.message");
        message
            .contains("VolumeSnapshotClass missing does not exist")
            .then_some(())
    })
    .await;

    let version = field(
        &data,
        &["volumesnapshot", "early"],
        ".metadata.resourceVersion",
    );
    holds_for(
        "an error is written once, not again on every pass",
        Duration::from_secs(2),
        async || {
            field(
                &data,
                &["volumesnapshot", "early"],
                ".metadata.resourceVersion",
            ) == version
        },
    )
    .await;

    apply(
        &data,
        &snapshot("retained", "source", Some("stowage-retain")),
    );
    wait_ready(&data, "retained").await;
    let content = field(
        &data,
        &["volumesnapshot", "retained"],
        ".status.boundVolumeSnapshotContentName",
    );
    let handle = field(
        &data,
        &["volumesnapshotcontent", &content],
        ".status.snapshotHandle",
    );
    let deleted = kubectl(&data, &["delete", "volumesnapshot", "retained"], None);
    assert!(deleted.status.success(), "{}", text(&deleted));
    gone(&data, &["volumesnapshot", "retained"]).await;
    holds_for(
        "Retain keeps the content",
        Duration::from_secs(2),
        async || {
            field(
                &data,
                &["volumesnapshotcontent", &content],
                ".status.snapshotHandle",
            ) == handle
        },
    )
    .await;
    assert!(!stored_snapshots(&data).is_empty(), "and the data");

    let imported = format!(
        r#"
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotContent
metadata: {{name: imported-content}}
spec:
  deletionPolicy: Delete
  driver: csi.stowage.io
  source: {{snapshotHandle: "{handle}"}}
  volumeSnapshotRef: {{name: imported, namespace: default}}
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {{name: imported}}
spec:
  source: {{volumeSnapshotContentName: imported-content}}
"#
    );
    apply(&data, &imported);
    wait_ready(&data, "imported").await;
    assert_eq!(
        field(
            &data,
            &["volumesnapshotcontent", "imported-content"],
            ".spec.volumeSnapshotRef.uid"
        ),
        field(&data, &["volumesnapshot", "imported"], ".metadata.uid"),
        "the pre-provisioned content is bound to the snapshot"
    );
    apply(&data, &claim_manifest("restored", "", Some("imported")));
    let restored = mount_claim(&dir, &data, "restored").await;
    assert_eq!(
        std::fs::read_to_string(restored.join("data.txt")).expect("read restored"),
        "kept"
    );
    unmount(&data, &restored).await;
    stop(up).await;
}
