//! The pvc-protection and pv-protection finalizers under `stowage up`, driven by
//! kubectl: `up` runs the API server with the StorageObjectInUseProtection admission and
//! the provisioner's pvc-protection and pv-protection controllers, so a deleted claim a
//! Pod uses stays Terminating until the Pod goes, an unused one goes at once, and a
//! deleted volume stays while Bound and goes once its claim is gone.

use std::path::Path;
use std::time::Duration;

use stowage_tests::mounts::MountedDir;
use stowage_tests::up::{apply, field, gone, kubectl, start, stop, text};
use stowage_tests::{holds_for, wait_for};

const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

fn claim(name: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}}}
spec:
  storageClassName: stowage-local-immediate
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 16Mi}}}}
"#
    )
}

fn pod(name: &str, claim: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers: [{{name: app, image: busybox}}]
  volumes: [{{name: data, persistentVolumeClaim: {{claimName: {claim}}}}}]
"#
    )
}

async fn bound(data: &Path, name: &str) -> String {
    wait_for(
        &format!("claim {name} to be bound"),
        Duration::from_secs(60),
        async || (field(data, &["pvc", name], ".status.phase") == "Bound").then_some(()),
    )
    .await;
    field(data, &["pvc", name], ".spec.volumeName")
}

fn delete(data: &Path, object: &[&str]) {
    let mut args = vec!["delete", "--wait=false"];
    args.extend_from_slice(object);
    let out = kubectl(data, &args, None);
    assert!(out.status.success(), "{}", text(&out));
}

/// The object stays deleted-but-present, holding `finalizer`, for a few seconds of passes.
async fn stays_terminating(data: &Path, object: &[&str], finalizer: &str) {
    holds_for(
        &format!("{object:?} marked deleted and held by {finalizer}"),
        Duration::from_secs(3),
        async || {
            !field(data, object, ".metadata.deletionTimestamp").is_empty()
                && field(data, object, ".metadata.finalizers").contains(finalizer)
        },
    )
    .await;
}

#[tokio::test]
async fn claims_in_use_and_bound_volumes_stay_until_released() {
    let dir = MountedDir::new();
    let (up, data) = start(&dir).await;

    // Admission: every new claim and volume carries its finalizer.
    apply(&data, &claim("used"));
    let used_volume = bound(&data, "used").await;
    assert!(field(&data, &["pvc", "used"], ".metadata.finalizers").contains(PVC_PROTECTION));
    assert!(field(&data, &["pv", &used_volume], ".metadata.finalizers").contains(PV_PROTECTION));

    // A claim a Pod uses stays Terminating; once the Pod goes, so does the claim, and
    // its volume (policy Delete) after it.
    apply(&data, &pod("app", "used"));
    delete(&data, &["pvc", "used"]);
    stays_terminating(&data, &["pvc", "used"], PVC_PROTECTION).await;
    delete(&data, &["pod", "app"]);
    gone(&data, &["pvc", "used"]).await;
    gone(&data, &["pv", &used_volume]).await;

    // An unused claim goes at once.
    apply(&data, &claim("free"));
    bound(&data, "free").await;
    delete(&data, &["pvc", "free"]);
    gone(&data, &["pvc", "free"]).await;

    // A volume deleted while Bound stays until its claim is gone and it is released.
    apply(&data, &claim("held"));
    let held_volume = bound(&data, "held").await;
    delete(&data, &["pv", &held_volume]);
    stays_terminating(&data, &["pv", &held_volume], PV_PROTECTION).await;
    assert_eq!(field(&data, &["pvc", "held"], ".status.phase"), "Bound");
    delete(&data, &["pvc", "held"]);
    gone(&data, &["pvc", "held"]).await;
    gone(&data, &["pv", &held_volume]).await;
    stop(up).await;
}
