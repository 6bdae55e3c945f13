//! `stowage up` as a user drives it: the real binary on a free port with its state in
//! a directory, kubectl with the admin's kubeconfig, `stowage mount`/`status`.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::mounts::MountedDir;
use crate::process::stowage_bin;
use crate::wait_for;

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// `stowage up` on node `machine` at `127.0.0.1:port` with its state in `data`.
pub fn up(data: &Path, port: u16) -> Child {
    up_with(data, port, &[])
}

/// [`up`] with more flags.
pub fn up_with(data: &Path, port: u16, extra: &[&str]) -> Child {
    Command::new(stowage_bin())
        .args(["up", "--node-name", "machine"])
        .args(extra)
        .arg("--listen")
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

pub async fn stowage(args: &[&str], data: &Path) -> Output {
    Command::new(stowage_bin())
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .await
        .expect("run stowage")
}

/// kubectl with the admin's kubeconfig that `up` wrote into `data`.
pub fn kubectl(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    kubectl_with(&data.join("kubeconfig"), args, stdin)
}

/// kubectl as one component's service account, with the kubeconfig `up` wrote for it.
pub fn kubectl_as(data: &Path, account: &str, args: &[&str]) -> Output {
    kubectl_with(&data.join("kubeconfigs").join(account), args, None)
}

/// kubectl with any kubeconfig, `stdin` written to it when given.
pub fn kubectl_with(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
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

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn apply(data: &Path, manifest: &str) {
    let applied = kubectl(data, &["apply", "-f", "-"], Some(manifest));
    assert!(applied.status.success(), "{}", text(&applied));
}

/// One field of an object, empty when the object or the field is missing.
pub fn field(data: &Path, object: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(object);
    let jsonpath = format!("-o=jsonpath={{{path}}}");
    args.push(&jsonpath);
    String::from_utf8_lossy(&kubectl(data, &args, None).stdout).to_string()
}

/// Starts `up` with its data in `dir/data` and waits until it serves.
pub async fn start(dir: &MountedDir) -> (Child, PathBuf) {
    let data = dir.path().join("data");
    let child = up(&data, free_port());
    wait_until_up(&data).await;
    (child, data)
}

/// Waits until the `up` keeping its state in `data` serves the API, the node socket
/// and its provisioners.
pub async fn wait_until_up(data: &Path) {
    wait_for("stowage up to serve", Duration::from_secs(60), async || {
        let out = kubectl(data, &["get", "storageclass", "-o", "name"], None);
        let names = String::from_utf8_lossy(&out.stdout).to_string();
        (names.contains("stowage-local-immediate") && data.join("node.sock").exists()).then_some(())
    })
    .await;
    // The provisioners start last; status answering means the API is there for them too.
    wait_for("the provisioners", Duration::from_secs(30), async || {
        stowage(&["status"], data)
            .await
            .status
            .success()
            .then_some(())
    })
    .await;
}

/// Ctrl-C, and a clean exit within 30 s.
pub async fn stop(mut child: Child) {
    let pid = i32::try_from(child.id().expect("running")).expect("pid");
    kill(Pid::from_raw(pid), Signal::SIGINT).expect("SIGINT");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("up stops within 30 s")
        .expect("wait");
    assert!(status.success(), "up exits cleanly on Ctrl-C: {status}");
}

/// A running `stowage up` on a data directory of its own, stopped on drop.
pub struct Up {
    dir: MountedDir,
    child: Option<Child>,
}

impl Up {
    /// `up` with `extra` flags, once it serves.
    pub async fn start(extra: &[&str]) -> Self {
        let dir = MountedDir::new();
        let child = up_with(&dir.path().join("data"), free_port(), extra);
        let up = Self {
            dir,
            child: Some(child),
        };
        wait_until_up(&up.data()).await;
        up
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A directory of this test's own (below /tmp: the hostPath deleter's domain).
    pub fn scratch(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).expect("mkdir");
        path
    }

    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        kubectl(&self.data(), args, stdin)
    }

    /// kubectl that must succeed; its output.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
        text(&out)
    }

    pub fn apply(&self, manifest: &str) {
        self.run(&["apply", "-f", "-"], Some(manifest));
    }

    /// The object as JSON, if it exists.
    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let out = self.kubectl(&["get", kind, name, "-o", "json"], None);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("json"))
    }

    /// Waits until `kind/name` satisfies `check`, which `what` describes.
    pub async fn until(
        &self,
        what: &str,
        kind: &str,
        name: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(what, Duration::from_secs(60), async || {
            self.get(kind, name).filter(|object| check(object))
        })
        .await
    }

    /// Waits until `kind/name` is in `phase` (`.status.phase`); the object then.
    pub async fn phase_is(&self, kind: &str, name: &str, phase: &str) -> Value {
        let what = format!("{kind}/{name} {phase}");
        self.until(&what, kind, name, |o| o["status"]["phase"] == phase)
            .await
    }

    /// The first event about `name` with `reason`, as JSON.
    pub async fn event(&self, name: &str, reason: &str) -> Value {
        let selector = format!("involvedObject.name={name},reason={reason}");
        let args = [
            "get",
            "events",
            "-A",
            "--field-selector",
            &selector,
            "-o",
            "json",
        ];
        wait_for(
            &format!("a {reason} event on {name}"),
            Duration::from_secs(30),
            async || {
                let list: Value = serde_json::from_slice(&self.kubectl(&args, None).stdout).ok()?;
                list["items"].as_array()?.first().cloned()
            },
        )
        .await
    }

    /// Ctrl-C, and `up` stops its components before it exits.
    pub async fn stop(mut self) {
        if let Some(child) = self.child.take() {
            stop(child).await;
        }
    }
}

impl Drop for Up {
    /// A test that failed half-way still stops `up` and its components.
    fn drop(&mut self) {
        if let Some(pid) = self
            .child
            .as_ref()
            .and_then(Child::id)
            .and_then(|id| i32::try_from(id).ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
        }
    }
}

/// A claim of 64Mi in the default class with `labels` (`key: value, ...`, or empty),
/// restored from the VolumeSnapshot `snapshot` when given.
pub fn claim_manifest(name: &str, labels: &str, snapshot: Option<&str>) -> String {
    let source = snapshot.map_or_else(String::new, |s| {
        format!(
            "  dataSource: {{apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: {s}}}\n"
        )
    });
    format!(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}, labels: {{{labels}}}}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 64Mi}}}}
{source}"#
    )
}

/// `stowage mount` of claim `name` in namespace default at `target` (which binds and
/// provisions it): its output, for the caller to check.
pub async fn mount_at(data: &Path, name: &str, target: &Path) -> Output {
    let target = target.to_str().expect("utf8");
    let args = ["mount", name, "--namespace", "default", "--target", target];
    stowage(&args, data).await
}

/// Mounts claim `name` at `<dir>/<name>` with [`mount_at`], which must succeed, and
/// returns the target.
pub async fn mount_claim(dir: &MountedDir, data: &Path, name: &str) -> PathBuf {
    let target = dir.path().join(name);
    let mounted = mount_at(data, name, &target).await;
    assert!(mounted.status.success(), "{}", text(&mounted));
    target
}

/// `stowage unmount` of a target [`mount_claim`] made.
pub async fn unmount(data: &Path, target: &Path) {
    let args = ["unmount", "--target", target.to_str().expect("utf8")];
    let out = stowage(&args, data).await;
    assert!(out.status.success(), "{}", text(&out));
}

/// The snapshots the driver keeps on this machine (data and record files).
pub fn stored_snapshots(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("local/snapshots"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect()
}

/// Waits (a minute at most) until `kubectl get <object>` finds nothing.
pub async fn gone(data: &Path, object: &[&str]) {
    wait_for(
        &format!("{object:?} to be gone"),
        Duration::from_secs(60),
        async || {
            let mut args = vec!["get"];
            args.extend_from_slice(object);
            text(&kubectl(data, &args, None))
                .contains("NotFound")
                .then_some(())
        },
    )
    .await;
}

/// Waits (`timeout` at most) until `kubectl get <object>` reports `.status.readyToUse`.
pub async fn ready(data: &Path, object: &[&str], timeout: Duration) {
    wait_for(&format!("{object:?} to be ready"), timeout, async || {
        (field(data, object, ".status.readyToUse") == "true").then_some(())
    })
    .await;
}

/// Waits (30 s at most) until the driver keeps no snapshot on this machine.
pub async fn snapshots_removed(data: &Path) {
    wait_for(
        "the snapshots' data to be removed",
        Duration::from_secs(30),
        async || stored_snapshots(data).is_empty().then_some(()),
    )
    .await;
}

/// `kubectl delete <object>`, which must succeed, and waits until it is [`gone`].
pub async fn deleted(data: &Path, object: &[&str]) {
    let mut args = vec!["delete"];
    args.extend_from_slice(object);
    let deleted = kubectl(data, &args, None);
    assert!(deleted.status.success(), "{}", text(&deleted));
    gone(data, object).await;
}

/// A PersistentVolume manifest: `name` of `size`, `modes` (a YAML list), in `class`,
/// reclaimed by `policy`, and `source`: the rest of its spec (its volume source and
/// anything more), each line indented two spaces.
pub fn volume_manifest(
    name: &str,
    size: &str,
    modes: &str,
    class: &str,
    policy: &str,
    source: &str,
) -> String {
    format!(
        r#"
apiVersion: v1
kind: PersistentVolume
metadata: {{name: {name}}}
spec:
  capacity: {{storage: {size}}}
  accessModes: {modes}
  storageClassName: {class}
  persistentVolumeReclaimPolicy: {policy}
{source}
"#
    )
}

/// Deletes `object` under a Retain policy: once it is gone, `content` keeps its
/// `handle` field (watched for 2 s, as nothing else ends the wait) and the driver
/// keeps the data.
pub async fn delete_retained(data: &Path, object: &[&str], content: &[&str], handle: (&str, &str)) {
    deleted(data, object).await;
    let (path, value) = handle;
    crate::holds_for(
        &format!("Retain keeps {content:?}"),
        Duration::from_secs(2),
        async || field(data, content, path) == value,
    )
    .await;
    assert!(!stored_snapshots(data).is_empty(), "and the data");
}

/// Restores claim `name` (with `labels`) from the VolumeSnapshot `snapshot`, mounts it
/// with [`mount_claim`], reads its `data.txt` and unmounts it: what the file held.
pub async fn restored_text(
    dir: &MountedDir,
    data: &Path,
    (name, labels): (&str, &str),
    snapshot: &str,
) -> String {
    apply(data, &claim_manifest(name, labels, Some(snapshot)));
    let restored = mount_claim(dir, data, name).await;
    let text = std::fs::read_to_string(restored.join("data.txt")).expect("read restored");
    unmount(data, &restored).await;
    text
}

/// Imports a snapshot taken elsewhere as an administrator does: a pre-provisioned
/// `<kind>Content` named `content` whose `source` (YAML after `source:`) names the
/// driver's handles, and a `<kind>` `imported` that names that content. Waits
/// (`timeout` at most) until `imported` is ready and checks the content is bound to it.
/// `kind` is VolumeSnapshot or VolumeGroupSnapshot, of API group `group`.
pub async fn import(
    data: &Path,
    (group, kind): (&str, &str),
    content: &str,
    source: &str,
    timeout: Duration,
) {
    let mut field_name = kind.to_string();
    field_name[..1].make_ascii_lowercase();
    apply(
        data,
        &format!(
            r#"
apiVersion: {group}/v1
kind: {kind}Content
metadata: {{name: {content}}}
spec:
  deletionPolicy: Delete
  driver: csi.stowage.io
  source: {source}
  {field_name}Ref: {{name: imported, namespace: default}}
---
apiVersion: {group}/v1
kind: {kind}
metadata: {{name: imported}}
spec:
  source: {{{field_name}ContentName: {content}}}
"#
        ),
    );
    let resource = kind.to_lowercase();
    ready(data, &[&resource, "imported"], timeout).await;
    let content_resource = format!("{resource}content");
    let reference = format!(".spec.{field_name}Ref.uid");
    assert_eq!(
        field(data, &[&content_resource, content], &reference),
        field(data, &[&resource, "imported"], ".metadata.uid"),
        "the pre-provisioned content is bound to the {kind}"
    );
}

/// Makes claim `name` (with `labels`) and writes `text` to its `data.txt` through
/// [`mount_claim`], unmounted again.
pub async fn claim_holding(
    dir: &MountedDir,
    data: &Path,
    (name, labels): (&str, &str),
    text: &str,
) {
    apply(data, &claim_manifest(name, labels, None));
    let target = mount_claim(dir, data, name).await;
    std::fs::write(target.join("data.txt"), text).expect("write data.txt");
    unmount(data, &target).await;
}
