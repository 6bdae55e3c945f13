//! Volumes of a node that is gone, under `stowage up` with kubectl: while the Node
//! exists its Released local volume stays Released; once it is deleted for longer
//! than `--gone-node-grace` the volume goes Failed naming the node, a Bound one's
//! claim gets a Warning event, and with `--gone-node-policy remove-volumes` the
//! Failed volume's PV object is deleted; the gone node's CSIStorageCapacity objects
//! are deleted either way, a present node's stay.

use std::path::Path;
use std::time::Duration;

use stowage_tests::up::{Up, kubectl};
use stowage_tests::{holds_for, wait_for};

async fn up(policy: &str) -> Up {
    Up::start(&["--gone-node-grace", "2s", "--gone-node-policy", policy]).await
}

fn get(data: &Path, args: &[&str]) -> String {
    String::from_utf8_lossy(&kubectl(data, args, None).stdout).into_owned()
}

fn phase(data: &Path, pv: &str) -> String {
    get(
        data,
        &[
            "get",
            "pv",
            pv,
            "-o",
            "jsonpath={.status.phase}|{.status.message}",
        ],
    )
}

async fn wait_for_phase(data: &Path, pv: &str, wanted: &str) -> String {
    wait_for(
        &format!("{pv} {wanted}"),
        Duration::from_secs(30),
        async || {
            let now = phase(data, pv);
            now.starts_with(&format!("{wanted}|")).then_some(now)
        },
    )
    .await
}

const NODE: &str = "apiVersion: v1\nkind: Node\nmetadata:\n  name: gone-node\n  \
                    labels: {kubernetes.io/hostname: gone-node}\n";

/// A Retain local volume on gone-node, bound (or once bound) to `claim`.
fn volume(name: &str, claim: &str, uid: Option<&str>) -> String {
    let uid = uid.map(|u| format!(", uid: {u}")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {name}}}\nspec:\n  \
         capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  \
         persistentVolumeReclaimPolicy: Retain\n  storageClassName: ''\n  \
         local: {{path: /srv/{name}}}\n  \
         claimRef: {{namespace: default, name: {claim}{uid}}}\n  \
         nodeAffinity:\n    required:\n      nodeSelectorTerms:\n      - matchExpressions:\n        \
         - {{key: kubernetes.io/hostname, operator: In, values: [gone-node]}}\n"
    )
}

/// A capacity object as gone-node's own provisioner would have published it.
const GONE_NODE_CAPACITY: &str = "apiVersion: storage.k8s.io/v1\nkind: CSIStorageCapacity\n\
    metadata:\n  name: gone-node-local\n  namespace: stowage-system\n  \
    labels: {csi.storage.k8s.io/drivername: csi.stowage.io, \
    csi.storage.k8s.io/managed-by: stowage-gone-node}\n\
    storageClassName: stowage-local\ncapacity: 10Gi\n\
    nodeTopology:\n  matchLabels: {topology.stowage.io/node: gone-node}\n";

fn capacity_nodes(data: &Path) -> String {
    get(
        data,
        &[
            "get",
            "csistoragecapacities",
            "-A",
            "-o",
            "jsonpath={.items[*].nodeTopology.matchLabels.topology\\.stowage\\.io/node}",
        ],
    )
}

fn claim(name: &str, volume: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  \
         storageClassName: ''\n  volumeName: {volume}\n  accessModes: [ReadWriteOnce]\n  \
         resources: {{requests: {{storage: 1Gi}}}}\n"
    )
}

#[tokio::test]
async fn volumes_of_a_deleted_node_go_failed_and_their_claims_are_warned() {
    let running = up("keep").await;
    let data = running.data();
    running.apply(NODE);
    running.apply(GONE_NODE_CAPACITY);
    running.apply(&volume("released-pv", "vanished", Some("0000-gone")));
    running.apply(&volume("bound-pv", "kept", None));
    running.apply(&claim("kept", "bound-pv"));
    wait_for_phase(&data, "released-pv", "Released").await;
    wait_for_phase(&data, "bound-pv", "Bound").await;

    // The node is there: longer than the grace period changes nothing (the window is
    // what is tested: it outlasts the grace period `up` is given).
    holds_for(
        "a Released volume of a present node stays Released",
        Duration::from_secs(5),
        async || phase(&data, "released-pv").starts_with("Released|"),
    )
    .await;
    let published = wait_for(
        "this node's capacity",
        Duration::from_secs(30),
        async || {
            let nodes = capacity_nodes(&data);
            nodes.contains("machine").then_some(nodes)
        },
    )
    .await;
    assert!(published.contains("gone-node"), "{published}");

    assert!(
        kubectl(&data, &["delete", "node", "gone-node"], None)
            .status
            .success()
    );
    let failed = wait_for_phase(&data, "released-pv", "Failed").await;
    assert!(failed.contains("node gone-node is gone"), "{failed}");
    let event = wait_for(
        "a Warning on the bound claim",
        Duration::from_secs(30),
        async || {
            let text = get(
                &data,
                &[
                    "get",
                    "events",
                    "--field-selector",
                    "involvedObject.name=kept,reason=VolumeNodeGone",
                    "-o",
                    "jsonpath={.items[*].type}|{.items[*].message}",
                ],
            );
            text.starts_with("Warning").then_some(text)
        },
    )
    .await;
    assert!(event.contains("node gone-node is gone"), "{event}");
    let left = wait_for(
        "the gone node's capacity removed",
        Duration::from_secs(30),
        async || {
            let nodes = capacity_nodes(&data);
            (!nodes.contains("gone-node")).then_some(nodes)
        },
    )
    .await;
    assert!(
        left.contains("machine"),
        "a present node's capacity stays: {left}"
    );
    // Bound stays Bound (the claim is the user's to act on); keep leaves the Failed PV.
    holds_for(
        "the Bound volume stays Bound and the Failed one stays",
        Duration::from_secs(3),
        async || {
            phase(&data, "bound-pv").starts_with("Bound|")
                && phase(&data, "released-pv").starts_with("Failed|")
        },
    )
    .await;
    running.stop().await;
}

#[tokio::test]
async fn the_opt_in_policy_removes_the_failed_volumes_of_a_deleted_node() {
    let running = up("remove-volumes").await;
    let data = running.data();
    running.apply(NODE);
    running.apply(&volume("released-pv", "vanished", Some("0000-gone")));
    wait_for_phase(&data, "released-pv", "Released").await;
    assert!(
        kubectl(&data, &["delete", "node", "gone-node"], None)
            .status
            .success()
    );
    wait_for("the PV removed", Duration::from_secs(30), async || {
        let out = kubectl(&data, &["get", "pv", "released-pv"], None);
        String::from_utf8_lossy(&out.stderr)
            .contains("NotFound")
            .then_some(())
    })
    .await;
    running.stop().await;
}
