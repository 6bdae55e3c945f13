//! A VolumeAttributesClass under `stowage up`, driven by kubectl: changing a bound
//! claim's `volumeAttributesClassName` reaches the volume through
//! ControllerModifyVolume (seen later: with `onDelete: retain` the data outlives the
//! deleted claim), the claim's status records the class as external-resizer writes
//! it, and the volume names it too.

use std::path::Path;
use std::time::Duration;

use stowage_tests::mounts::MountedDir;
use stowage_tests::up::{apply, field, kubectl, mount_at, start, stop, text, unmount};
use stowage_tests::{files_under, holds_for, wait_for};

const RETAIN: &str = r#"
apiVersion: storage.k8s.io/v1
kind: VolumeAttributesClass
metadata: {name: keep-data}
driverName: csi.stowage.io
parameters: {onDelete: retain}
"#;

const CLAIM: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: stowage-local-immediate
  resources: {requests: {storage: 64Mi}}
"#;

/// Sets claim `data`'s volumeAttributesClassName to `class` with kubectl.
fn set_class(data: &Path, class: &str) {
    let patch = format!(r#"{{"spec":{{"volumeAttributesClassName":"{class}"}}}}"#);
    let args = ["patch", "pvc", "data", "--type=merge", "-p", &patch];
    let patched = kubectl(data, &args, None);
    assert!(patched.status.success(), "{}", text(&patched));
}

#[tokio::test]
async fn a_class_change_reaches_the_volume_and_the_claims_status() {
    let dir = MountedDir::new();
    let (up, data) = start(&dir).await;
    apply(&data, RETAIN);
    apply(&data, CLAIM);
    let target = dir.path().join("mnt");
    let mounted = mount_at(&data, "data", &target).await;
    assert!(mounted.status.success(), "{}", text(&mounted));
    std::fs::write(target.join("kept.txt"), "outlives the claim").expect("write");
    unmount(&data, &target).await;

    // A class that does not exist yet leaves the claim Pending its modification.
    set_class(&data, "later");
    wait_for(
        "the modification to be Pending",
        Duration::from_secs(30),
        async || {
            (field(&data, &["pvc", "data"], ".status.modifyVolumeStatus.status") == "Pending"
                && field(
                    &data,
                    &["pvc", "data"],
                    ".status.modifyVolumeStatus.targetVolumeAttributesClassName",
                ) == "later")
                .then_some(())
        },
    )
    .await;
    let version = field(&data, &["pvc", "data"], ".metadata.resourceVersion");
    holds_for(
        "Pending is written once, not again on every pass",
        Duration::from_secs(2),
        async || field(&data, &["pvc", "data"], ".metadata.resourceVersion") == version,
    )
    .await;

    set_class(&data, "keep-data");
    wait_for(
        "the class to be current",
        Duration::from_secs(30),
        async || {
            (field(
                &data,
                &["pvc", "data"],
                ".status.currentVolumeAttributesClassName",
            ) == "keep-data")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        field(&data, &["pvc", "data"], ".status.modifyVolumeStatus"),
        "",
        "the modify status is cleared once done"
    );
    let pv = field(&data, &["pvc", "data"], ".spec.volumeName");
    assert_eq!(
        field(&data, &["pv", &pv], ".spec.volumeAttributesClassName"),
        "keep-data",
        "the volume names its class"
    );

    let deleted = kubectl(&data, &["delete", "pvc", "data"], None);
    assert!(deleted.status.success(), "{}", text(&deleted));
    wait_for(
        "the volume to be deleted",
        Duration::from_secs(60),
        async || {
            let pvs = text(&kubectl(&data, &["get", "pv", "-o", "name"], None));
            (!pvs.contains("persistentvolume/")).then_some(())
        },
    )
    .await;
    let retained = files_under(&data.join("local/retained"))
        .into_iter()
        .find(|p| p.ends_with("kept.txt"))
        .expect("onDelete retain kept the data of the deleted volume");
    assert_eq!(
        std::fs::read_to_string(retained).expect("read"),
        "outlives the claim"
    );
    stop(up).await;
}
