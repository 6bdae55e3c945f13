//! `stowage up` end to end, as a user would drive it: kubectl applies a claim,
//! `stowage mount` binds, provisions and mounts it, a file lands in the volume,
//! `stowage unmount` and deleting the claim reclaim it; Ctrl-C stops everything
//! and a second `up` on the same directory finds every object kept.

use std::path::Path;
use std::time::Duration;

use stowage_tests::csi::Csi;
use stowage_tests::mounts::{MountedDir, mounts_under};
use stowage_tests::up::{
    free_port, kubectl, kubectl_as, mount_at, stop, stowage, text, up, up_with, volume_manifest,
    wait_until_up,
};
use stowage_tests::{files_under, wait_for};

const CLAIM: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 64Mi
"#;

#[tokio::test]
async fn a_claim_is_provisioned_mounted_written_reclaimed_and_state_survives_a_restart() {
    let dir = MountedDir::new();
    let data = dir.path().join("data");
    let port = free_port();
    let first = up(&data, port);
    wait_until_up(&data).await;
    let classes = text(&kubectl(&data, &["get", "storageclass"], None));
    assert!(classes.contains("stowage-local (default)"), "{classes}");
    assert!(
        !classes.contains("stowage-nfs"),
        "no NFS export configured: {classes}"
    );
    let nodes = text(&kubectl(
        &data,
        &["get", "node", "machine", "--show-labels"],
        None,
    ));
    assert!(
        nodes.contains("topology.stowage.io/node=machine"),
        "{nodes}"
    );

    let applied = kubectl(&data, &["apply", "-f", "-"], Some(CLAIM));
    assert!(applied.status.success(), "{}", text(&applied));
    let target = dir.path().join("mnt");
    let mounted = mount_at(&data, "data", &target).await;
    assert!(mounted.status.success(), "{}", text(&mounted));
    assert!(
        text(&mounted).contains("selected node machine"),
        "{}",
        text(&mounted)
    );
    assert!(
        text(&mounted).contains("waiting for claim data to be bound (phase Pending)"),
        "the wait says what it waits for: {}",
        text(&mounted)
    );
    std::fs::write(target.join("hello.txt"), "hello").expect("write into the volume");
    // The default class holds a claim to its size: on a root without project quotas
    // (this machine's) the volume is an ext4 image in the local root.
    let volumes = data.join("local/volumes");
    let landed = files_under(&volumes)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "img"));
    let landed = landed.expect("the claim's image is in the local root");

    let status = text(&stowage(&["status"], &data).await);
    assert!(
        status.contains("default/data") && status.contains("Bound"),
        "{status}"
    );
    assert!(
        status.contains(target.to_str().expect("utf8")),
        "mount listed: {status}"
    );

    let unmounted = stowage(
        &["unmount", "--target", target.to_str().expect("utf8")],
        &data,
    )
    .await;
    assert!(unmounted.status.success(), "{}", text(&unmounted));
    assert!(
        !target.join("hello.txt").exists(),
        "the target no longer shows the volume"
    );
    assert!(
        mounts_under(dir.path()).is_empty(),
        "no mount left: {:?}",
        mounts_under(dir.path())
    );
    let in_image = std::process::Command::new("debugfs")
        .args(["-R", "cat /hello.txt"])
        .arg(&landed)
        .output()
        .expect("debugfs");
    assert_eq!(
        String::from_utf8_lossy(&in_image.stdout),
        "hello",
        "the file is in the volume's image"
    );

    let deleted = kubectl(&data, &["delete", "pvc", "data"], None);
    assert!(deleted.status.success(), "{}", text(&deleted));
    wait_for(
        "the volume to be reclaimed",
        Duration::from_secs(30),
        async || {
            let pvs = text(&kubectl(&data, &["get", "pv", "-o", "name"], None));
            (!pvs.contains("persistentvolume/") && !landed.exists()).then_some(())
        },
    )
    .await;

    let kept = kubectl(
        &data,
        &["apply", "-f", "-"],
        Some(&CLAIM.replace("name: data", "name: kept")),
    );
    assert!(kept.status.success(), "{}", text(&kept));
    stop(first).await;
    assert!(
        mounts_under(dir.path()).is_empty(),
        "nothing mounted after Ctrl-C"
    );
    let after = kubectl(
        &data,
        &["get", "storageclass", "--request-timeout=2s"],
        None,
    );
    assert!(!after.status.success(), "the API server stopped with up");
    assert!(
        Csi::connect(&data.join("node.sock")).await.is_err(),
        "the node plugin stopped with up"
    );

    let second = up(&data, port);
    wait_until_up(&data).await;
    let claims = text(&kubectl(&data, &["get", "pvc", "kept", "-o", "name"], None));
    assert!(
        claims.contains("persistentvolumeclaim/kept"),
        "the claim survived: {claims}"
    );
    let classes = text(&kubectl(
        &data,
        &["get", "storageclass", "-o", "name"],
        None,
    ));
    assert_eq!(
        classes.matches("stowage-local").count(),
        3,
        "seeded once: {classes}"
    );
    stop(second).await;
}

/// The processes whose command line names `data`: `up`'s components.
fn components_of(data: &Path) -> Vec<String> {
    let needle = data.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|line| line.contains(&needle))
        .collect()
}

#[tokio::test]
async fn ctrl_c_during_start_up_stops_every_component() {
    let dir = MountedDir::new();
    let data = dir.path().join("data");
    let child = up(&data, free_port());
    // The data lock is taken before any component starts and long before `up`
    // serves: a Ctrl-C now lands in the middle of start-up.
    wait_for("up to lock its data", Duration::from_secs(30), async || {
        data.join("up.lock").exists().then_some(())
    })
    .await;
    stop(child).await;
    let left = components_of(&data);
    assert!(left.is_empty(), "components left running: {left:?}");
}

#[tokio::test]
async fn mount_refuses_what_it_cannot_do() {
    let dir = MountedDir::new();
    let data = dir.path().join("data");
    let missing = stowage(&["mount", "nope", "--target", "/tmp/x"], &data).await;
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("is `stowage up --data"),
        "{}",
        text(&missing)
    );
    let unknown = stowage(
        &["unmount", "--target", dir.path().to_str().expect("utf8")],
        &data,
    )
    .await;
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains("nothing was mounted"),
        "{}",
        text(&unknown)
    );
}

/// A static PV in the default class, pinned to `node`, for a CSI volume `handle`.
fn static_volume(name: &str, size: &str, node: &str, handle: &str, context: &str) -> String {
    let source = format!(
        r#"  csi: {{driver: csi.stowage.io, volumeHandle: "{handle}", volumeAttributes: {context}}}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {{key: topology.stowage.io/node, operator: In, values: [{node}]}}"#
    );
    let modes = "[ReadWriteOnce]";
    volume_manifest(name, size, modes, "stowage-local", "Retain", &source)
}

#[tokio::test]
async fn mount_pre_binds_the_smallest_static_volume_this_node_can_reach() {
    let dir = MountedDir::new();
    let data = dir.path().join("data");
    let nfs = [
        "--nfs-server",
        "127.0.0.1:2049",
        "--nfs-share",
        "/exports/stowage",
    ];
    let running = up_with(&data, free_port(), &nfs);
    wait_until_up(&data).await;
    let class = text(&kubectl(
        &data,
        &[
            "get",
            "storageclass",
            "stowage-nfs",
            "-o",
            "jsonpath={.parameters}",
        ],
        None,
    ));
    assert!(
        class.contains(r#""server":"127.0.0.1:2049""#)
            && class.contains(r#""share":"/exports/stowage""#),
        "the NFS class is seeded with the configured export: {class}"
    );
    let csi = Csi::connect(&data.join("node.sock"))
        .await
        .expect("node socket");
    let volume = csi
        .create(stowage_tests::csi::create_request(
            "static-data",
            128 << 20,
            &[],
        ))
        .await
        .expect("CreateVolume");
    let context = serde_json::to_string(&volume.volume_context).expect("json");
    let volumes = [
        static_volume("fits", "128Mi", "machine", &volume.volume_id, &context),
        static_volume("larger", "1Gi", "machine", "no-such-volume", "{}"),
        static_volume("elsewhere", "65Mi", "other-node", "no-such-volume", "{}"),
    ];
    let applied = kubectl(&data, &["apply", "-f", "-"], Some(&volumes.join("---\n")));
    assert!(applied.status.success(), "{}", text(&applied));
    let applied = kubectl(&data, &["apply", "-f", "-"], Some(CLAIM));
    assert!(applied.status.success(), "{}", text(&applied));

    let target = dir.path().join("mnt");
    let target_arg = target.to_str().expect("utf8");
    let mounted = stowage(&["mount", "data", "--target", target_arg], &data).await;
    assert!(mounted.status.success(), "{}", text(&mounted));
    assert!(
        text(&mounted).contains("pre-bound static volume fits"),
        "{}",
        text(&mounted)
    );
    std::fs::write(target.join("in-static.txt"), "x").expect("write");
    let pvs = text(&kubectl(
        &data,
        &[
            "get",
            "pv",
            "-o",
            "custom-columns=N:.metadata.name,S:.status.phase",
        ],
        None,
    ));
    assert!(
        pvs.contains("fits")
            && pvs
                .lines()
                .any(|l| l.starts_with("fits") && l.contains("Bound")),
        "{pvs}"
    );
    assert!(
        pvs.lines()
            .any(|l| l.starts_with("larger") && l.contains("Available")),
        "{pvs}"
    );
    let unmounted = stowage(&["unmount", "--target", target_arg], &data).await;
    assert!(unmounted.status.success(), "{}", text(&unmounted));
    assert!(mounts_under(dir.path()).is_empty());
    stop(running).await;
}

const NODE_ACCOUNT: &str = "system:serviceaccount:stowage-system:stowage-node";

#[tokio::test]
async fn each_component_has_its_own_account_with_only_the_deployments_rbac() {
    let dir = MountedDir::new();
    let data = dir.path().join("data");
    let running = up(&data, free_port());
    wait_until_up(&data).await;

    let tokens = std::fs::read_to_string(data.join("tokens.csv")).expect("token file");
    for user in [
        "system:serviceaccount:stowage-system:stowage-controller",
        NODE_ACCOUNT,
    ] {
        assert!(tokens.contains(&format!(",{user},")), "{user} in {tokens}");
    }
    for file in [
        "tokens.csv",
        "kubeconfigs/stowage-node",
        "kubeconfigs/stowage-controller",
    ] {
        let mode = std::fs::metadata(data.join(file))
            .expect("stat")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600,
            "{file}"
        );
    }

    let classes = kubectl_as(
        &data,
        "stowage-node",
        &["get", "storageclass", "-o", "name"],
    );
    assert!(classes.status.success(), "{}", text(&classes));
    let deleted = kubectl_as(
        &data,
        "stowage-node",
        &["delete", "storageclass", "stowage-local"],
    );
    assert!(!deleted.status.success());
    assert!(
        text(&deleted).contains(&format!(
            "Error from server (Forbidden): storageclasses.storage.k8s.io \"stowage-local\" is forbidden: User \"{NODE_ACCOUNT}\" cannot delete resource \"storageclasses\" in API group \"storage.k8s.io\" at the cluster scope"
        )),
        "{}",
        text(&deleted)
    );
    let kept = kubectl(
        &data,
        &["get", "storageclass", "stowage-local", "-o", "name"],
        None,
    );
    assert!(kept.status.success(), "{}", text(&kept));

    // Leases: a Role of stowage-system, bound there only.
    let own = kubectl_as(
        &data,
        "stowage-controller",
        &["get", "leases", "-n", "stowage-system"],
    );
    assert!(own.status.success(), "{}", text(&own));
    let elsewhere = kubectl_as(
        &data,
        "stowage-controller",
        &["get", "leases", "-n", "default"],
    );
    assert!(
        text(&elsewhere).contains(
            "cannot list resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"default\""
        ),
        "{}",
        text(&elsewhere)
    );
    let applied = kubectl(
        &data,
        &["get", "clusterrolebinding", "stowage-node", "-o", "name"],
        None,
    );
    assert!(applied.status.success(), "{}", text(&applied));
    stop(running).await;
}

/// deploy/rbac.yaml with `create` taken from the node account's PersistentVolume rule.
fn rbac_without_node_pv_create() -> String {
    let deployed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rbac.yaml"))
            .expect("deploy/rbac.yaml");
    let node_role = deployed
        .find("kind: ClusterRole\nmetadata:\n  name: stowage-node")
        .expect("the node ClusterRole");
    let (before, after) = deployed.split_at(node_role);
    let rule = r#"resources: ["persistentvolumes"]
    verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]"#;
    assert!(after.contains(rule), "the rule as written: {after}");
    let narrowed = after.replacen(rule, &rule.replace(r#""create", "#, ""), 1);
    format!("{before}{narrowed}")
}

#[tokio::test]
async fn a_permission_dropped_from_the_rbac_file_fails_provisioning_with_a_403() {
    let dir = MountedDir::new();
    let data = dir.path().join("data");
    let rbac = dir.path().join("rbac.yaml");
    std::fs::write(&rbac, rbac_without_node_pv_create()).expect("write rbac");
    let port = free_port();
    let narrowed = up_with(&data, port, &["--rbac", rbac.to_str().expect("utf8")]);
    wait_until_up(&data).await;
    let claim = CLAIM.replace(
        "accessModes",
        "storageClassName: stowage-local-immediate\n  accessModes",
    );
    let applied = kubectl(&data, &["apply", "-f", "-"], Some(&claim));
    assert!(applied.status.success(), "{}", text(&applied));

    let refusal = format!(
        "persistentvolumes is forbidden: User \"{NODE_ACCOUNT}\" cannot create resource \"persistentvolumes\" in API group \"\" at the cluster scope"
    );
    let event = wait_for(
        "the refusal in a ProvisioningFailed event",
        Duration::from_secs(60),
        async || {
            let events = kubectl(
                &data,
                &[
                    "get",
                    "events",
                    "--field-selector",
                    "involvedObject.name=data,reason=ProvisioningFailed",
                    "-o",
                    "jsonpath={.items[*].message}",
                ],
                None,
            );
            let messages = text(&events);
            messages.contains(&refusal).then_some(messages)
        },
    )
    .await;
    assert!(event.contains("creating PersistentVolume pvc-"), "{event}");
    let phase = text(&kubectl(
        &data,
        &["get", "pvc", "data", "-o", "jsonpath={.status.phase}"],
        None,
    ));
    assert_eq!(phase, "Pending");
    stop(narrowed).await;

    // The deployed file again: the rule is back, and the claim gets its volume.
    let deployed = up(&data, port);
    wait_until_up(&data).await;
    wait_for(
        "the claim to be bound",
        Duration::from_secs(60),
        async || {
            let out = kubectl(
                &data,
                &["get", "pvc", "data", "-o", "jsonpath={.status.phase}"],
                None,
            );
            (text(&out) == "Bound").then_some(())
        },
    )
    .await;
    stop(deployed).await;
}
