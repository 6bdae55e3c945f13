//! The binder's last differences from upstream's PV controller, end to end under
//! `stowage up` and driven with kubectl as a user would: a bound claim's access
//! modes follow its volume, a Lost claim's status is cleared, the beta class
//! annotation, the retroactive default class, a static-only class, and the hostPath
//! recycler and deleter on one machine and in a cluster of several nodes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use stowage_tests::mounts::MountedDir;
use stowage_tests::up::{Up, kubectl_with, text, volume_manifest};
use stowage_tests::wait_for;

fn phase(object: &Value) -> &str {
    object["status"]["phase"].as_str().unwrap_or_default()
}

/// A hostPath volume with no class and no node affinity.
fn host_path_volume(name: &str, path: &Path, policy: &str, modes: &str) -> String {
    let source = format!("  hostPath: {{path: \"{}\"}}", path.display());
    volume_manifest(name, "1Gi", modes, "\"\"", policy, &source)
}

/// A claim of no class for `volume`'s kind of volume, naming it when given.
fn claim(name: &str, extra_spec: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}, namespace: default}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Gi}}}}
  {extra_spec}
"#
    )
}

#[tokio::test]
async fn a_bound_claims_status_follows_its_volume_and_a_lost_claims_is_cleared() {
    let up = Up::start(&[]).await;
    // The deployment's RBAC lets the central provisioner read kube-controller-manager's
    // Lease (it is absent here: not found, not forbidden), and no other in kube-system.
    let as_controller = |args: &[&str]| {
        let kubeconfig = up.data().join("kubeconfigs").join("stowage-controller");
        text(&kubectl_with(&kubeconfig, args, None))
    };
    let lease = as_controller(&[
        "get",
        "lease",
        "kube-controller-manager",
        "-n",
        "kube-system",
    ]);
    assert!(
        lease.contains("NotFound") && !lease.contains("forbidden"),
        "{lease}"
    );
    let other = as_controller(&["get", "lease", "kube-scheduler", "-n", "kube-system"]);
    assert!(other.contains("forbidden"), "{other}");
    let paths = up.scratch("volumes");
    for name in ["modes", "misbound", "vanishing"] {
        up.apply(&host_path_volume(
            name,
            &paths.join(name),
            "Retain",
            "[ReadWriteOnce]",
        ));
        up.apply(&claim(
            name,
            &format!("storageClassName: \"\"\n  volumeName: {name}"),
        ));
    }
    for name in ["modes", "misbound", "vanishing"] {
        let bound = up.phase_is("pvc", name, "Bound").await;
        assert_eq!(
            bound["status"]["accessModes"],
            serde_json::json!(["ReadWriteOnce"])
        );
        assert_eq!(bound["status"]["capacity"]["storage"], "1Gi");
    }

    // The volume gains a mode and grows: the modes follow, the capacity (the
    // resizer's once Bound) does not.
    up.run(
        &[
            "patch",
            "pv",
            "modes",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"accessModes":["ReadWriteOnce","ReadWriteMany"],"capacity":{"storage":"2Gi"}}}"#,
        ],
        None,
    );
    let followed = up
        .until("the claim's modes to follow", "pvc", "modes", |c| {
            c["status"]["accessModes"] == serde_json::json!(["ReadWriteOnce", "ReadWriteMany"])
        })
        .await;
    assert_eq!(followed["status"]["capacity"]["storage"], "1Gi");
    assert_eq!(phase(&followed), "Bound");

    // The volume's claimRef now names another uid: ClaimMisbound, Lost, cleared.
    up.run(
        &[
            "patch",
            "pv",
            "misbound",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"claimRef":{"uid":"00000000-0000-0000-0000-000000000000"}}}"#,
        ],
        None,
    );
    let lost = up.phase_is("pvc", "misbound", "Lost").await;
    assert_eq!(lost["status"].get("accessModes"), None, "{lost}");
    assert_eq!(lost["status"].get("capacity"), None, "{lost}");
    up.event("misbound", "ClaimMisbound").await;

    // The volume is gone: ClaimLost, Lost, cleared. pv-protection holds a Bound volume
    // that is deleted, as in a cluster; only a volume whose finalizer is taken off by
    // hand (or lost with its store) vanishes under its claim.
    up.run(&["delete", "pv", "vanishing", "--wait=false"], None);
    up.run(
        &[
            "patch",
            "pv",
            "vanishing",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
        None,
    );
    let lost = up.phase_is("pvc", "vanishing", "Lost").await;
    assert_eq!(lost["status"].get("accessModes"), None, "{lost}");
    assert_eq!(lost["status"].get("capacity"), None, "{lost}");
    up.event("vanishing", "ClaimLost").await;
    up.stop().await;
}

#[tokio::test]
async fn the_beta_class_annotation_is_honoured_and_a_default_class_comes_late() {
    let up = Up::start(&[]).await;
    let paths = up.scratch("volumes");

    // A claim and a volume of the class the beta annotation names: no default
    // class at admission, and they bind to each other.
    let annotated = |manifest: String| {
        manifest.replacen(
            "metadata: {name: old-style",
            "metadata: {annotations: {volume.beta.kubernetes.io/storage-class: manual}, name: old-style",
            1,
        )
    };
    up.apply(&annotated(
        host_path_volume("old-style", &paths.join("old"), "Retain", "[ReadWriteOnce]")
            .replace("  storageClassName: \"\"\n", ""),
    ));
    up.apply(&annotated(claim("old-style", "")));
    let created = up.get("pvc", "old-style").expect("claim");
    assert_eq!(
        created["spec"].get("storageClassName"),
        None,
        "no default class for a claim with the beta annotation: {created}"
    );
    let bound = up.phase_is("pvc", "old-style", "Bound").await;
    assert_eq!(bound["spec"]["volumeName"], "old-style");

    // No default class: a claim without one waits, saying so.
    up.run(
        &[
            "annotate",
            "storageclass",
            "stowage-local",
            "storageclass.kubernetes.io/is-default-class=false",
            "--overwrite",
        ],
        None,
    );
    up.apply(&claim("late", ""));
    let waiting = up.get("pvc", "late").expect("claim");
    assert_eq!(waiting["spec"].get("storageClassName"), None, "{waiting}");
    let event = up.event("late", "FailedBinding").await;
    assert_eq!(
        event["message"],
        "no persistent volumes available for this claim and no storage class is set"
    );

    // The API server lets a class be set once where there was none, and no more.
    up.apply(&claim("chosen", ""));
    let set_class = |class: &str| {
        let patch = format!(r#"{{"spec":{{"storageClassName":"{class}"}}}}"#);
        up.kubectl(
            &["patch", "pvc", "chosen", "--type", "merge", "-p", &patch],
            None,
        )
    };
    let first = set_class("stowage-local-retain");
    assert!(first.status.success(), "{}", text(&first));
    let again = set_class("stowage-local");
    assert!(!again.status.success());
    assert!(
        text(&again).contains("spec is immutable"),
        "{}",
        text(&again)
    );

    // A default appears: the waiting claim gets it, then is provisioned and bound.
    up.run(
        &[
            "annotate",
            "storageclass",
            "stowage-local-immediate",
            "storageclass.kubernetes.io/is-default-class=true",
        ],
        None,
    );
    let assigned = up.phase_is("pvc", "late", "Bound").await;
    assert_eq!(
        assigned["spec"]["storageClassName"],
        "stowage-local-immediate"
    );
    up.stop().await;
}

#[tokio::test]
async fn a_static_only_class_and_a_volume_being_deleted_are_reported_as_upstream_does() {
    let up = Up::start(&[]).await;
    up.apply(
        r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: manual}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
"#,
    );
    up.apply(&claim("static-only", "storageClassName: manual"));
    let event = up.event("static-only", "ProvisioningFailed").await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(
        event["message"],
        "no volume plugin matched name: kubernetes.io/no-provisioner"
    );
    assert_eq!(
        phase(&up.get("pvc", "static-only").expect("claim")),
        "Pending"
    );

    // A volume held by a finalizer while it is deleted cannot be bound.
    let path = up.scratch("going");
    up.apply(
        &host_path_volume("going", &path, "Retain", "[ReadWriteOnce]").replace(
            "metadata: {name: going}",
            "metadata: {name: going, finalizers: [example.com/hold]}",
        ),
    );
    up.run(&["delete", "pv", "going", "--wait=false"], None);
    up.apply(&claim(
        "late-for-it",
        "storageClassName: \"\"\n  volumeName: going",
    ));
    let event = up.event("late-for-it", "VolumeMismatch").await;
    assert_eq!(
        event["message"],
        r#"Cannot bind to requested volume "going": the volume is marked for deletion "going""#
    );
    up.run(
        &[
            "patch",
            "pv",
            "going",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
        None,
    );
    up.stop().await;
}

#[tokio::test]
async fn host_path_volumes_are_recycled_and_deleted_on_one_machine_and_refused_on_several() {
    let outer = MountedDir::new();
    let allowed = outer.path().join("allowed");
    std::fs::create_dir_all(&allowed).expect("mkdir");
    let allow = allowed.to_str().expect("utf8").to_string();
    let up = Up::start(&["--host-path-allow", &allow]).await;
    let fill = |dir: &Path| {
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        std::fs::write(dir.join("sub/data"), b"tenant data").expect("write");
    };
    let bind = async |name: &str, path: &Path, policy: &str| {
        fill(path);
        up.apply(&host_path_volume(name, path, policy, "[ReadWriteOnce]"));
        up.apply(&claim(
            name,
            &format!("storageClassName: \"\"\n  volumeName: {name}"),
        ));
        up.phase_is("pvc", name, "Bound").await;
        up.run(&["delete", "pvc", name], None);
    };

    // A second node: which one holds an unpinned volume's data is unknown.
    up.apply("apiVersion: v1\nkind: Node\nmetadata: {name: another-machine}\n");
    let unknown = allowed.join("unknown");
    bind("unknown", &unknown, "Recycle").await;
    let failed = up.phase_is("pv", "unknown", "Failed").await;
    let message = failed["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("give the volume a node affinity"),
        "{message}"
    );
    assert_eq!(failed["status"].get("reason"), None, "{failed}");
    assert!(unknown.join("sub/data").exists(), "not scrubbed on a guess");
    up.event("unknown", "VolumeFailedRecycle").await;

    // One node again (within the 30 s the answer is kept): the one machine holds
    // it, and its instance scrubs it.
    up.run(&["delete", "node", "another-machine"], None);
    up.phase_is("pv", "unknown", "Available").await;
    assert!(unknown.is_dir(), "Recycle keeps the directory");
    assert_eq!(std::fs::read_dir(&unknown).expect("read").count(), 0);
    up.event("unknown", "VolumeRecycled").await;

    let deleted = allowed.join("deleted");
    bind("deleted", &deleted, "Delete").await;
    wait_for(
        "the deleted volume gone",
        Duration::from_secs(60),
        async || up.get("pv", "deleted").is_none().then_some(()),
    )
    .await;
    assert!(!deleted.exists(), "Delete removes the directory");

    // Outside /tmp: upstream's testing deleter refuses, with its message and no reason.
    let elsewhere = PathBuf::from("/var/lib/stowage-test-not-tmp");
    up.apply(&host_path_volume(
        "elsewhere",
        &elsewhere,
        "Delete",
        "[ReadWriteOnce]",
    ));
    up.apply(&claim(
        "elsewhere",
        "storageClassName: \"\"\n  volumeName: elsewhere",
    ));
    up.phase_is("pvc", "elsewhere", "Bound").await;
    up.run(&["delete", "pvc", "elsewhere"], None);
    let failed = up.phase_is("pv", "elsewhere", "Failed").await;
    assert_eq!(
        failed["status"]["message"],
        "host_path deleter only supports /tmp/.+ but received provided /var/lib/stowage-test-not-tmp"
    );
    assert_eq!(failed["status"].get("reason"), None, "{failed}");
    let event = up.event("elsewhere", "VolumeFailedDelete").await;
    assert_eq!(event["type"], "Warning");

    // Below /tmp but outside the node's allow-list: refused, nothing removed.
    let unlisted = up.scratch("unlisted");
    bind("unlisted", &unlisted, "Delete").await;
    let failed = up.phase_is("pv", "unlisted", "Failed").await;
    let message = failed["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("--host-path-allow"), "{message}");
    assert!(
        unlisted.join("sub/data").exists(),
        "nothing outside the allow-list goes"
    );

    up.stop().await;
}
