//! A VolumeAttributesClass under `stowage up`, driven by kubectl: changing a bound
//! claim's `volumeAttributesClassName` reaches the volume through
//! ControllerModifyVolume (seen later: with `onDelete: retain` the data outlives the
//! deleted claim), the claim's status records the class as external-resizer writes
//! it, and the volume names it too.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use stowage_tests::mounts::MountedDir;
use stowage_tests::process::stowage_bin;
use stowage_tests::wait_for;
use tokio::process::{Child, Command};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn up(data: &Path, port: u16) -> Child {
    Command::new(stowage_bin())
        .args(["up", "--node-name", "machine", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data")
        .arg(data)
        .env("STOWAGE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn stowage up")
}

async fn stowage(args: &[&str], data: &Path) -> Output {
    Command::new(stowage_bin())
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .await
        .expect("run stowage")
}

fn kubectl(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(data.join("kubeconfig"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("kubectl output")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn apply(data: &Path, manifest: &str) {
    let applied = kubectl(data, &["apply", "-f", "-"], Some(manifest));
    assert!(applied.status.success(), "{}", text(&applied));
}

/// One field of an object, empty when the object or the field is missing.
fn field(data: &Path, object: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(object);
    let jsonpath = format!("-o=jsonpath={{{path}}}");
    args.push(&jsonpath);
    String::from_utf8_lossy(&kubectl(data, &args, None).stdout).to_string()
}

async fn start(dir: &MountedDir) -> (Child, std::path::PathBuf) {
    let data = dir.path().join("data");
    let child = up(&data, free_port());
    wait_for("stowage up to serve", Duration::from_secs(60), async || {
        let out = kubectl(&data, &["get", "storageclass", "-o", "name"], None);
        let names = String::from_utf8_lossy(&out.stdout).to_string();
        (names.contains("stowage-local-immediate") && data.join("node.sock").exists()).then_some(())
    })
    .await;
    wait_for("the provisioners", Duration::from_secs(30), async || {
        stowage(&["status"], &data)
            .await
            .status
            .success()
            .then_some(())
    })
    .await;
    (child, data)
}

async fn stop(mut child: Child) {
    let pid = i32::try_from(child.id().expect("running")).expect("pid");
    kill(Pid::from_raw(pid), Signal::SIGINT).expect("SIGINT");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("up stops within 30 s")
        .expect("wait");
    assert!(status.success(), "up exits cleanly on Ctrl-C: {status}");
}

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

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn a_class_change_reaches_the_volume_and_the_claims_status() {
    let dir = MountedDir::new();
    let (up, data) = start(&dir).await;
    apply(&data, RETAIN);
    apply(&data, CLAIM);
    let target = dir.path().join("mnt");
    let mounted = stowage(
        &[
            "mount",
            "data",
            "--namespace",
            "default",
            "--target",
            target.to_str().expect("utf8"),
        ],
        &data,
    )
    .await;
    assert!(mounted.status.success(), "{}", text(&mounted));
    std::fs::write(target.join("kept.txt"), "outlives the claim").expect("write");
    let unmounted = stowage(
        &["unmount", "--target", target.to_str().expect("utf8")],
        &data,
    )
    .await;
    assert!(unmounted.status.success(), "{}", text(&unmounted));

    // A class that does not exist yet leaves the claim Pending its modification.
    let patched = kubectl(
        &data,
        &[
            "patch",
            "pvc",
            "data",
            "--type=merge",
            "-p",
            r#"{"spec":{"volumeAttributesClassName":"later"}}"#,
        ],
        None,
    );
    assert!(patched.status.success(), "{}", text(&patched));
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
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        field(&data, &["pvc", "data"], ".metadata.resourceVersion"),
        version,
        "Pending is written once, not again on every pass"
    );

    let patched = kubectl(
        &data,
        &[
            "patch",
            "pvc",
            "data",
            "--type=merge",
            "-p",
            r#"{"spec":{"volumeAttributesClassName":"keep-data"}}"#,
        ],
        None,
    );
    assert!(patched.status.success(), "{}", text(&patched));
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
    let retained = walk(&data.join("local/retained"))
        .into_iter()
        .find(|p| p.ends_with("kept.txt"))
        .expect("onDelete retain kept the data of the deleted volume");
    assert_eq!(
        std::fs::read_to_string(retained).expect("read"),
        "outlives the claim"
    );
    stop(up).await;
}
