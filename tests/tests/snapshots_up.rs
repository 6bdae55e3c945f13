//! Snapshots under `stowage up`, driven by kubectl as a user would: the provisioner's
//! snapshotter plays snapshot-controller and csi-snapshotter. A snapshot of a bound
//! claim becomes ready, a claim restored from it has the data of that instant, and
//! deleting it (policy Delete) removes its data; with Retain the content and data
//! stay, and a pre-provisioned content of that handle binds a new snapshot.

use std::path::Path;
use std::time::Duration;

use stowage_tests::mounts::MountedDir;
use stowage_tests::up::{
    apply, claim_holding, claim_manifest, delete_retained, deleted, field, gone, import,
    mount_claim, ready, restored_text, snapshots_removed, start, stop, stored_snapshots, unmount,
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

/// How long a snapshot may take to be ready.
const READY: Duration = Duration::from_secs(60);

async fn wait_ready(data: &Path, name: &str) {
    ready(data, &["volumesnapshot", name], READY).await;
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
    let restored = restored_text(&dir, &data, ("restored", ""), "snap").await;
    assert_eq!(restored, "at the snapshot");
    unmount(&data, &source).await;

    assert!(
        !stored_snapshots(&data).is_empty(),
        "the snapshot's data is on disk"
    );
    deleted(&data, &["volumesnapshot", "snap"]).await;
    // The data goes with the content; both waits poll, so their order is free.
    snapshots_removed(&data).await;
    gone(&data, &["volumesnapshotcontent", &content]).await;
    stop(up).await;
}

#[tokio::test]
async fn retain_keeps_the_content_and_a_pre_provisioned_content_binds_a_new_snapshot() {
    let dir = MountedDir::new();
    let (up, data) = start(&dir).await;
    apply(&data, &snapshot_class("stowage-retain", "Retain", false));
    claim_holding(&dir, &data, ("source", ""), "kept").await;

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
    let kept = (".status.snapshotHandle", handle.as_str());
    let content_object = ["volumesnapshotcontent", content.as_str()];
    let retained = ["volumesnapshot", "retained"];
    delete_retained(&data, &retained, &content_object, kept).await;

    let source = format!(r#"{{snapshotHandle: "{handle}"}}"#);
    let kind = ("snapshot.storage.k8s.io", "VolumeSnapshot");
    import(&data, kind, "imported-content", &source, READY).await;
    let restored = restored_text(&dir, &data, ("restored", ""), "imported").await;
    assert_eq!(restored, "kept");
    stop(up).await;
}
