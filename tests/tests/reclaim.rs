//! Reclaim policies end to end: the provisioner (central and node instances) against
//! the embedded API server; Recycle of hostPath (the real binary) and NFS (the
//! in-process NFSv3 server) volumes, Delete through the node plugin's CSI socket,
//! failures marked Failed and retried with backoff.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use nfs_session::{Export, Session};
use provisioner::{Config, Scope};
use serde_json::{Value, json};
use stowage_tests::api::{InProcessApi, wait_for_event, wait_for_volume_gone};
use stowage_tests::csi::create_request;
use stowage_tests::driver::Launch;
use stowage_tests::nfs::MemNfs;
use stowage_tests::process::stowage_bin;
use stowage_tests::wait_for;
use tempfile::TempDir;
use tokio::process::Command;

const NODE: &str = "node-a";

fn object<T: k8s_openapi::serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("object")
}

fn pinned_to(node: &str) -> Value {
    json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
    ]}]}})
}

fn claim(name: &str, volume: &str) -> PersistentVolumeClaim {
    object(json!({
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "volumeName": volume,
            "resources": {"requests": {"storage": "1Gi"}},
        }
    }))
}

fn volume(name: &str, policy: &str, source: Value) -> PersistentVolume {
    let mut spec = json!({
        "capacity": {"storage": "1Gi"},
        "accessModes": ["ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": policy,
        "storageClassName": "",
    });
    json_patch::merge(&mut spec, &source);
    object(json!({"metadata": {"name": name}, "spec": spec}))
}

/// The phase, and whether the status carries a message (a Failed one does). As
/// upstream, the status has no reason: that goes with the event.
fn phase(pv: &PersistentVolume) -> (String, bool) {
    let status = pv.status.clone().unwrap_or_default();
    assert_eq!(status.reason, None, "no status.reason, as upstream");
    (
        status.phase.unwrap_or_default(),
        status.message.is_some_and(|m| !m.is_empty()),
    )
}

struct Cluster {
    api: InProcessApi,
    client: Client,
    volumes: Api<PersistentVolume>,
    claims: Api<PersistentVolumeClaim>,
}

impl Cluster {
    async fn start(dir: &Path) -> Self {
        let api = InProcessApi::start(dir).await;
        let client = api.client.clone();
        Self {
            volumes: Api::all(client.clone()),
            claims: Api::namespaced(client.clone(), "default"),
            client,
            api,
        }
    }

    fn run_provisioner(&self, scope: Scope, csi: Option<&Path>, allow: &[&Path]) {
        let config = Config {
            csi: csi.map(csi_proto::channel::lazy),
            host_path_allow: allow.iter().map(|p| p.to_path_buf()).collect(),
            ..Config::new(scope)
        };
        tokio::spawn(provisioner::run(
            self.client.clone(),
            config,
            std::future::pending(),
        ));
    }

    /// Creates the volume and a claim naming it, and waits until both are Bound.
    async fn bound(&self, pv: PersistentVolume, claim_name: &str) {
        let name = pv.name_any();
        self.volumes
            .create(&PostParams::default(), &pv)
            .await
            .expect("pv");
        self.claims
            .create(&PostParams::default(), &claim(claim_name, &name))
            .await
            .expect("pvc");
        self.phase_of(&name, "Bound", "").await;
    }

    async fn release(&self, claim_name: &str) {
        self.claims
            .delete(claim_name, &DeleteParams::default())
            .await
            .expect("delete claim");
    }

    /// Waits for the phase; a failure `reason` must come with a message in the
    /// status and a Warning event of that reason.
    async fn phase_of(&self, name: &str, wanted: &str, reason: &str) -> PersistentVolume {
        let what = format!("{name} {wanted} {reason}");
        let pv = wait_for(&what, Duration::from_secs(30), async || {
            let pv = self.volumes.get(name).await.ok()?;
            (phase(&pv) == (wanted.to_string(), !reason.is_empty())).then_some(pv)
        })
        .await;
        if !reason.is_empty() {
            let event = self.event(name, reason).await;
            assert_eq!(event.type_.as_deref(), Some("Warning"), "{what}");
        }
        pv
    }

    async fn gone(&self, name: &str) {
        wait_for_volume_gone(&self.client, name).await;
    }

    async fn event(&self, volume: &str, reason: &str) -> Event {
        wait_for_event(&self.client, "PersistentVolume", volume, reason).await
    }
}

fn fill(dir: &Path) {
    std::fs::create_dir_all(dir.join("deep/er")).expect("mkdir");
    std::fs::write(dir.join("deep/er/data"), b"old tenant").expect("write");
    std::fs::write(dir.join(".dotfile"), b"old tenant").expect("write");
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).expect("read dir").count()
}

/// Runs `stowage provisioner` as a process against the server's kubeconfig.
fn provisioner_process(kubeconfig: &Path, extra: &[&str]) -> tokio::process::Child {
    Command::new(stowage_bin())
        .arg("provisioner")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(extra)
        .env(
            "STOWAGE_LOG",
            std::env::var("STOWAGE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .kill_on_drop(true)
        .spawn()
        .expect("spawn stowage provisioner")
}

#[tokio::test]
async fn recycle_scrubs_a_host_path_on_its_node_and_makes_it_available_again() {
    let dir = TempDir::new().expect("tempdir");
    let cluster = Cluster::start(&dir.path().join("api")).await;
    let allowed = dir.path().join("allowed");
    let data = allowed.join("vol");
    fill(&data);
    let outside = dir.path().join("outside");
    fill(&outside);
    let allow = allowed.to_str().expect("utf8");
    let _central = provisioner_process(&cluster.api.kubeconfig, &[]);
    let _node = provisioner_process(
        &cluster.api.kubeconfig,
        &["--node", NODE, "--host-path-allow", allow],
    );

    let pv = volume(
        "recycled",
        "Recycle",
        json!({"hostPath": {"path": data.to_str().expect("utf8")}, "nodeAffinity": pinned_to(NODE)}),
    );
    cluster.bound(pv, "first").await;
    cluster.release("first").await;
    let available = cluster.phase_of("recycled", "Available", "").await;
    assert!(data.is_dir(), "the directory itself stays");
    assert_eq!(entries(&data), 0, "everything inside is gone");
    assert!(
        available.spec.and_then(|s| s.claim_ref).is_none(),
        "a binding the controller made is cleared"
    );
    cluster.event("recycled", "VolumeRecycled").await;

    // Available again: a new claim binds to it.
    cluster
        .claims
        .create(&PostParams::default(), &claim("second", "recycled"))
        .await
        .expect("pvc");
    cluster.phase_of("recycled", "Bound", "").await;

    // A path outside the allow-list is refused: Failed, and nothing outside is touched.
    let escape = volume(
        "escape",
        "Recycle",
        json!({"hostPath": {"path": outside.to_str().expect("utf8")}, "nodeAffinity": pinned_to(NODE)}),
    );
    cluster.bound(escape, "third").await;
    cluster.release("third").await;
    let failed = cluster
        .phase_of("escape", "Failed", "VolumeFailedRecycle")
        .await;
    let message = failed.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.contains("--host-path-allow"), "{message}");
    assert_eq!(
        entries(&outside),
        2,
        "nothing outside the allow-list is scrubbed"
    );
    let event = cluster.event("escape", "VolumeFailedRecycle").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
}

#[tokio::test]
async fn a_failed_recycle_is_retried_with_backoff_until_it_succeeds() {
    let dir = TempDir::new().expect("tempdir");
    let cluster = Cluster::start(&dir.path().join("api")).await;
    let allowed = dir.path().join("allowed");
    std::fs::create_dir(&allowed).expect("mkdir");
    let data = allowed.join("later");
    cluster.run_provisioner(Scope::Central, None, &[]);
    cluster.run_provisioner(Scope::Node(NODE.into()), None, &[&allowed]);

    let pv = volume(
        "later",
        "Recycle",
        json!({"hostPath": {"path": data.to_str().expect("utf8")}, "nodeAffinity": pinned_to(NODE)}),
    );
    cluster.bound(pv, "claim").await;
    cluster.release("claim").await;
    // The directory does not exist yet: the scrub fails.
    cluster
        .phase_of("later", "Failed", "VolumeFailedRecycle")
        .await;
    fill(&data);
    // The retry (after the first backoff of 2 s) finds it and scrubs it.
    cluster.phase_of("later", "Available", "").await;
    assert_eq!(entries(&data), 0);
}

#[tokio::test]
async fn recycle_scrubs_an_nfs_export_through_the_userspace_client() {
    let dir = TempDir::new().expect("tempdir");
    let cluster = Cluster::start(dir.path()).await;
    let nfs = MemNfs::start().await;
    let export = Export::parse(&nfs.server(), "/").expect("export");
    let mut session = Session::connect(&export).await.expect("connect");
    let root = session.root();
    let sub = session
        .mkdir_all(&["vol".to_string(), "deep".to_string()], 0o755)
        .await
        .expect("mkdir");
    session
        .write_file_atomic(&sub, "data", b"old tenant")
        .await
        .expect("write");
    session
        .write_file_atomic(&root, "beside", b"not in the volume")
        .await
        .expect("write");
    cluster.run_provisioner(Scope::Central, None, &[]);

    // A static volume of our driver in upstream form, with subDir.
    let pv = volume(
        "nfs-recycled",
        "Recycle",
        json!({"csi": {"driver": "csi.stowage.io", "volumeHandle": "static-nfs",
            "volumeAttributes": {"server": nfs.server(), "share": "/", "subDir": "vol"}}}),
    );
    cluster.bound(pv, "nfs-claim").await;
    cluster.release("nfs-claim").await;
    cluster.phase_of("nfs-recycled", "Available", "").await;
    let vol = session
        .resolve(&["vol".to_string()])
        .await
        .expect("resolve")
        .expect("the directory stays");
    assert!(session.read_dir(&vol).await.expect("readdir").is_empty());
    assert_eq!(
        session.read_file(&root, "beside").await.expect("read"),
        Some(b"not in the volume".to_vec()),
        "only the volume's directory is scrubbed"
    );
    session.close().await;
}

#[tokio::test]
async fn delete_calls_delete_volume_on_the_node_plugin_then_removes_the_volume() {
    let dir = TempDir::new().expect("tempdir");
    let cluster = Cluster::start(&dir.path().join("api")).await;
    let socket = dir.path().join("node.sock");
    let local_root = dir.path().join("local");
    // The node's reclaimer starts before its plugin: the first DeleteVolume fails.
    cluster.run_provisioner(Scope::Central, None, &[]);
    cluster.run_provisioner(Scope::Node(NODE.into()), Some(&socket), &[]);

    let mut plugin = Launch::node(NODE).in_dir(dir.path()).start().await;
    let created = plugin
        .csi
        .create(create_request("pvc-1", 1 << 20, &[("type", "local")]))
        .await
        .expect("CreateVolume");
    let handle = created.volume_id.clone();
    assert!(handle.starts_with("local:"), "{handle}");
    assert_eq!(
        entries(&local_root.join("volumes")),
        1,
        "its data (the record is in records.log)"
    );
    plugin.terminate().await;

    let pv: PersistentVolume = object(json!({
        "metadata": {
            "name": "pvc-1",
            "annotations": {"pv.kubernetes.io/provisioned-by": "csi.stowage.io"},
            "finalizers": ["external-provisioner.volume.kubernetes.io/finalizer"],
        },
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "",
            "csi": {"driver": "csi.stowage.io", "volumeHandle": handle},
            // As the provisioner writes CreateVolume's accessible topology: the node
            // whose instance reclaims the volume comes from here, not from the handle.
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "topology.stowage.io/node", "operator": "In", "values": [NODE]}
            ]}]}},
        }
    }));
    cluster.bound(pv, "claim").await;
    cluster.release("claim").await;
    let failed = cluster
        .phase_of("pvc-1", "Failed", "VolumeFailedDelete")
        .await;
    let message = failed.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.contains("DeleteVolume failed"), "{message}");

    // The plugin comes back; the retry deletes the volume, then the object.
    plugin.relaunch().await;
    cluster.gone("pvc-1").await;
    assert_eq!(entries(&local_root.join("volumes")), 0, "DeleteVolume ran");

    // A hostPath volume outside /tmp: upstream's testing deleter refuses it.
    let static_pv = volume(
        "static",
        "Delete",
        json!({"hostPath": {"path": "/srv/static"}}),
    );
    cluster.bound(static_pv, "static-claim").await;
    cluster.release("static-claim").await;
    let failed = cluster
        .phase_of("static", "Failed", "VolumeFailedDelete")
        .await;
    assert!(
        failed
            .status
            .and_then(|s| s.message)
            .unwrap_or_default()
            .contains("host_path deleter only supports /tmp/.+ but received provided /srv/static")
    );
}

#[tokio::test]
async fn a_claim_recreated_with_a_new_uid_leaves_its_old_volume_released() {
    let dir = TempDir::new().expect("tempdir");
    let cluster = Cluster::start(dir.path()).await;
    cluster.run_provisioner(Scope::Central, None, &[]);
    let pv = volume("kept", "Retain", json!({"hostPath": {"path": "/srv/kept"}}));
    cluster.bound(pv, "same-name").await;
    let old_uid = cluster.claims.get("same-name").await.expect("get").uid();
    cluster.release("same-name").await;
    let fresh: PersistentVolumeClaim = object(json!({
        "metadata": {"name": "same-name"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "resources": {"requests": {"storage": "1Gi"}}}
    }));
    cluster
        .claims
        .create(&PostParams::default(), &fresh)
        .await
        .expect("pvc");
    cluster.phase_of("kept", "Released", "").await;
    // The binder has looked at the new claim once it says why it stays Pending.
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    let fresh_uid = cluster.claims.get("same-name").await.expect("get").uid();
    wait_for(
        "FailedBinding on the new claim",
        Duration::from_secs(20),
        async || {
            let fields = "involvedObject.name=same-name,involvedObject.kind=PersistentVolumeClaim";
            let list = events
                .list(&ListParams::default().fields(fields))
                .await
                .ok()?;
            list.items.into_iter().find(|e| {
                e.reason.as_deref() == Some("FailedBinding") && e.involved_object.uid == fresh_uid
            })
        },
    )
    .await;
    let released = cluster.volumes.get("kept").await.expect("get");
    assert_eq!(phase(&released).0, "Released");
    let claim_ref = released
        .spec
        .and_then(|s| s.claim_ref)
        .expect("claimRef kept");
    assert_eq!(
        claim_ref.uid, old_uid,
        "Retain keeps the old claim's reference"
    );
    let pending = cluster.claims.get("same-name").await.expect("get");
    assert_eq!(
        pending.status.and_then(|s| s.phase).as_deref(),
        Some("Pending"),
        "the new claim does not take the released volume"
    );
}
