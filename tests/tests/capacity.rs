//! Capacity tracking under `stowage up`, driven with kubectl: the node-mode
//! provisioner (as the deployment's node account) publishes one CSIStorageCapacity
//! per local class for its node, follows classes that come and go, and a claim
//! larger than the node's room is refused — by `stowage mount` (the scheduler's
//! part) and by the provisioner for an Immediate claim — with a Warning event that
//! says so, rather than an error from inside CreateVolume.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use stowage_tests::mounts::MountedDir;
use stowage_tests::process::stowage_bin;
use stowage_tests::up::{free_port, kubectl, up_with};
use stowage_tests::wait_for;
use tokio::process::{Child, Command};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn up(data: &Path) -> Child {
    up_with(data, free_port(), &[])
}

/// `class=node=capacity` for every published object.
fn published(data: &Path) -> Vec<String> {
    let out = kubectl(
        data,
        &[
            "get",
            "csistoragecapacity",
            "-n",
            "stowage-system",
            "-o",
            r#"jsonpath={range .items[*]}{.storageClassName}={.nodeTopology.matchLabels.topology\.stowage\.io/node}={.capacity}{"\n"}{end}"#,
        ],
        None,
    );
    stdout(&out).lines().map(str::to_string).collect()
}

/// The classes of the published objects, sorted.
fn classes_of(published: &[String]) -> Vec<String> {
    let mut classes: Vec<String> = published
        .iter()
        .filter_map(|line| line.split('=').next().map(str::to_string))
        .collect();
    classes.sort();
    classes
}

async fn wait_for_classes(data: &Path, expected: &[&str]) -> Vec<String> {
    wait_for(
        &format!("capacity published for exactly {expected:?}"),
        Duration::from_secs(60),
        async || {
            let lines = published(data);
            (classes_of(&lines) == expected).then_some(lines)
        },
    )
    .await
}

async fn wait_for_warning(data: &Path, claim: &str) -> String {
    wait_for(
        &format!("a NotEnoughCapacity event on {claim}"),
        Duration::from_secs(30),
        async || {
            let out = kubectl(
                data,
                &[
                    "get",
                    "events",
                    "--field-selector",
                    &format!("involvedObject.name={claim},reason=NotEnoughCapacity"),
                    "-o",
                    "jsonpath={.items[*].type}|{.items[*].message}",
                ],
                None,
            );
            let text = stdout(&out);
            text.starts_with("Warning").then_some(text)
        },
    )
    .await
}

fn claim(name: &str, class: &str, size: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  \
         storageClassName: {class}\n  accessModes: [ReadWriteOnce]\n  \
         resources: {{requests: {{storage: {size}}}}}\n"
    )
}

const LOCAL_CLASSES: [&str; 3] = [
    "stowage-local",
    "stowage-local-immediate",
    "stowage-local-retain",
];

#[tokio::test]
async fn capacity_is_published_per_class_and_a_node_without_room_is_refused() {
    let dir = MountedDir::new();
    let data = dir.path().join("data");
    let mut running = up(&data);

    let lines = wait_for_classes(&data, &LOCAL_CLASSES).await;
    for line in &lines {
        let fields: Vec<&str> = line.split('=').collect();
        assert_eq!(
            fields.get(1),
            Some(&"machine"),
            "this node's topology: {line}"
        );
        let bytes: u64 = fields.get(2).and_then(|b| b.parse().ok()).unwrap_or(0);
        assert!(bytes > 0, "a real figure: {line}");
    }
    let driver = stdout(&kubectl(
        &data,
        &[
            "get",
            "csidriver",
            "csi.stowage.io",
            "-o",
            "jsonpath={.spec.storageCapacity}",
        ],
        None,
    ));
    assert_eq!(driver, "true");

    // A class that comes is published, and its object goes with it.
    let class = "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: extra}\n\
                 provisioner: csi.stowage.io\nvolumeBindingMode: WaitForFirstConsumer\n";
    assert!(
        kubectl(&data, &["apply", "-f", "-"], Some(class))
            .status
            .success()
    );
    let with_extra = [
        "extra",
        LOCAL_CLASSES[0],
        LOCAL_CLASSES[1],
        LOCAL_CLASSES[2],
    ];
    wait_for_classes(&data, &with_extra).await;
    assert!(
        kubectl(&data, &["delete", "storageclass", "extra"], None)
            .status
            .success()
    );
    wait_for_classes(&data, &LOCAL_CLASSES).await;

    // The scheduler's part: `stowage mount` does not select a node without room.
    let huge = claim("huge", "stowage-local", "100Pi");
    assert!(
        kubectl(&data, &["apply", "-f", "-"], Some(&huge))
            .status
            .success()
    );
    let mount = Command::new(stowage_bin())
        .args(["mount", "huge", "--namespace", "default", "--target"])
        .arg(dir.path().join("huge"))
        .arg("--data")
        .arg(&data)
        .output()
        .await
        .expect("stowage mount");
    let stderr = String::from_utf8_lossy(&mount.stderr);
    assert!(!mount.status.success(), "refused: {stderr}");
    assert!(
        stderr.contains("node machine has room for") && stderr.contains("class stowage-local"),
        "{stderr}"
    );
    let event = wait_for_warning(&data, "huge").await;
    assert!(event.contains("node machine has room for"), "{event}");
    let selected = stdout(&kubectl(
        &data,
        &[
            "get",
            "pvc",
            "huge",
            "-o",
            "jsonpath={.metadata.annotations}",
        ],
        None,
    ));
    assert!(
        !selected.contains("selected-node"),
        "no node selected: {selected}"
    );

    // A scheduler that selected the node anyway: the node instance refuses before CreateVolume.
    let annotate = kubectl(
        &data,
        &[
            "annotate",
            "pvc",
            "huge",
            "volume.kubernetes.io/selected-node=machine",
        ],
        None,
    );
    assert!(annotate.status.success());
    let failed = wait_for(
        "ProvisioningFailed on huge",
        Duration::from_secs(30),
        async || {
            let out = kubectl(
                &data,
                &[
                    "get",
                    "events",
                    "--field-selector",
                    "involvedObject.name=huge,reason=ProvisioningFailed",
                    "-o",
                    "jsonpath={.items[*].message}",
                ],
                None,
            );
            let text = stdout(&out);
            (!text.is_empty()).then_some(text)
        },
    )
    .await;
    assert!(failed.contains("node machine has room for"), "{failed}");

    // The provisioner: an Immediate claim too big for the node is not taken.
    let immediate = claim("huge-now", "stowage-local-immediate", "100Pi");
    assert!(
        kubectl(&data, &["apply", "-f", "-"], Some(&immediate))
            .status
            .success()
    );
    let event = wait_for_warning(&data, "huge-now").await;
    assert!(
        event.contains("node machine has room for") && event.contains("stowage-local-immediate"),
        "{event}"
    );
    let phase = stdout(&kubectl(
        &data,
        &["get", "pvc", "huge-now", "-o", "jsonpath={.status.phase}"],
        None,
    ));
    assert_eq!(phase, "Pending");
    let volumes = stdout(&kubectl(&data, &["get", "pv", "-o", "name"], None));
    assert!(volumes.is_empty(), "no CreateVolume was tried: {volumes}");

    // A claim that fits still goes through.
    let small = claim("small", "stowage-local-immediate", "16Mi");
    assert!(
        kubectl(&data, &["apply", "-f", "-"], Some(&small))
            .status
            .success()
    );
    wait_for(
        "the small claim bound",
        Duration::from_secs(60),
        async || {
            let phase = stdout(&kubectl(
                &data,
                &["get", "pvc", "small", "-o", "jsonpath={.status.phase}"],
                None,
            ));
            (phase == "Bound").then_some(())
        },
    )
    .await;

    let pid = i32::try_from(running.id().expect("running")).expect("pid");
    kill(Pid::from_raw(pid), Signal::SIGINT).expect("SIGINT");
    let _ = tokio::time::timeout(Duration::from_secs(30), running.wait()).await;
}
