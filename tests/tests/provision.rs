//! Dynamic provisioning end to end: the embedded API server, the real node plugin
//! (local volumes) and controller (NFS volumes, against the in-process NFSv3 server)
//! binaries, and the provisioner's central and node instances.

use std::path::Path;
use std::time::Duration;

use futures_util::future::join_all;
use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::{Api, Client, ResourceExt};
use provisioner::{Config, Metrics, Scope};
use serde_json::{Value, json};
use stowage_tests::api::{InProcessApi, wait_for_event, wait_for_volume_gone};
use stowage_tests::driver::Launch;
use stowage_tests::mounts::MountedDir;
use stowage_tests::nfs::MemNfs;
use stowage_tests::wait_for;
use tempfile::TempDir;

const NODE: &str = "node-a";

fn object<T: k8s_openapi::serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("object")
}

fn class(name: &str, binding: &str, parameters: Value) -> StorageClass {
    object(json!({
        "metadata": {"name": name},
        "provisioner": "csi.stowage.io",
        "volumeBindingMode": binding,
        "reclaimPolicy": "Delete",
        "allowVolumeExpansion": true,
        "parameters": parameters,
    }))
}

fn claim(name: &str, class: &str, annotations: Value) -> PersistentVolumeClaim {
    object(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": class,
            "resources": {"requests": {"storage": "64Mi"}},
        }
    }))
}

struct Cluster {
    _api: InProcessApi,
    client: Client,
    claims: Api<PersistentVolumeClaim>,
    volumes: Api<PersistentVolume>,
}

impl Cluster {
    async fn start(dir: &Path) -> Self {
        let api = InProcessApi::start(dir).await;
        let client = api.client.clone();
        Self {
            claims: Api::namespaced(client.clone(), "default"),
            volumes: Api::all(client.clone()),
            client,
            _api: api,
        }
    }

    /// Starts an instance of `scope`; its metrics.
    fn run(&self, scope: Scope, socket: &Path) -> Metrics {
        let config = Config {
            csi: Some(csi_proto::channel::lazy(socket)),
            ..Config::new(scope)
        };
        let metrics = config.metrics.clone();
        tokio::spawn(provisioner::run(
            self.client.clone(),
            config,
            std::future::pending(),
        ));
        metrics
    }

    async fn add_class(&self, class: StorageClass) {
        Api::<StorageClass>::all(self.client.clone())
            .create(&PostParams::default(), &class)
            .await
            .expect("class");
    }

    /// Creates the claim and waits until it is Bound; returns its volume.
    async fn bound(&self, claim: PersistentVolumeClaim) -> PersistentVolume {
        let name = claim.name_any();
        self.claims
            .create(&PostParams::default(), &claim)
            .await
            .expect("claim");
        let claim = wait_for(
            &format!("{name} Bound"),
            Duration::from_secs(30),
            async || {
                let c = self.claims.get(&name).await.ok()?;
                (c.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(c)
            },
        )
        .await;
        let volume = claim.spec.and_then(|s| s.volume_name).expect("volumeName");
        self.volumes.get(&volume).await.expect("volume")
    }

    async fn delete_and_wait_gone(&self, claim: &str, volume: &str) {
        self.claims
            .delete(claim, &DeleteParams::default())
            .await
            .expect("delete");
        wait_for_volume_gone(&self.client, volume).await;
    }

    /// Sets the claim's storage request; the API server's answer.
    async fn resize(&self, name: &str, size: &str) -> kube::Result<PersistentVolumeClaim> {
        let mut claim = self.claims.get(name).await.expect("get");
        claim
            .spec
            .get_or_insert_default()
            .resources
            .get_or_insert_default()
            .requests
            .get_or_insert_default()
            .insert("storage".into(), Quantity(size.into()));
        self.claims
            .replace(name, &PostParams::default(), &claim)
            .await
    }

    async fn event(&self, claim: &str, reason: &str) -> Event {
        wait_for_event(&self.client, "PersistentVolumeClaim", claim, reason).await
    }
}

/// The CSI volume handle a PV records.
fn handle(pv: &PersistentVolume) -> String {
    pv.spec
        .clone()
        .and_then(|s| s.csi)
        .expect("csi")
        .volume_handle
}

/// A claim filled from `source` (a claim or a VolumeSnapshot, as `dataSource` names it).
fn claim_from(name: &str, class: &str, source: &Value) -> PersistentVolumeClaim {
    let mut claim = claim(name, class, json!({}));
    claim.spec.get_or_insert_default().data_source = Some(object(source.clone()));
    claim
}

/// Where a local directory volume keeps its data: `volumes/<key>` for `local:<key>:<node>`.
fn data_dir(local_root: &Path, pv: &PersistentVolume) -> std::path::PathBuf {
    let handle = handle(pv);
    let key = handle.split(':').nth(1).expect("key");
    local_root.join("volumes").join(key)
}

fn volume_dirs(local_root: &Path) -> usize {
    std::fs::read_dir(local_root.join("volumes"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn local_claims_are_provisioned_on_their_node_bound_and_deleted() {
    let dir = TempDir::new().expect("tempdir");
    let cluster = Cluster::start(&dir.path().join("api")).await;
    let _node = Launch::node(NODE).in_dir(dir.path()).start().await;
    let socket = dir.path().join("node.sock");
    let local_root = dir.path().join("local");
    cluster.run(Scope::Central, &dir.path().join("no-controller.sock"));
    cluster.run(Scope::Node(NODE.into()), &socket);
    cluster
        .add_class(class(
            "local-wait",
            "WaitForFirstConsumer",
            json!({"type": "local"}),
        ))
        .await;
    cluster
        .add_class(class("local-now", "Immediate", json!({"type": "local"})))
        .await;

    // WaitForFirstConsumer: nothing until the scheduler's choice is written.
    cluster
        .claims
        .create(
            &PostParams::default(),
            &claim("waiting", "local-wait", json!({})),
        )
        .await
        .expect("claim");
    cluster.event("waiting", "WaitForFirstConsumer").await;
    assert_eq!(
        volume_dirs(&local_root),
        0,
        "no volume before a node is chosen"
    );
    let mut waiting = cluster.claims.get("waiting").await.expect("get");
    waiting
        .annotations_mut()
        .insert("volume.kubernetes.io/selected-node".into(), NODE.into());
    cluster
        .claims
        .replace("waiting", &PostParams::default(), &waiting)
        .await
        .expect("select node");
    let pv = wait_for("waiting Bound", Duration::from_secs(30), async || {
        let c = cluster.claims.get("waiting").await.ok()?;
        let name = c.spec.and_then(|s| s.volume_name)?;
        cluster.volumes.get(&name).await.ok()
    })
    .await;
    let uid = waiting.uid().expect("uid");
    assert_eq!(pv.name_any(), format!("pvc-{uid}"));
    let spec = pv.spec.clone().expect("spec");
    let csi = spec.csi.expect("csi");
    assert!(
        csi.volume_handle.starts_with("local:"),
        "{}",
        csi.volume_handle
    );
    let affinity = serde_json::to_value(&spec.node_affinity).expect("json");
    assert_eq!(
        affinity["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0],
        NODE
    );
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    let annotations = cluster
        .claims
        .get("waiting")
        .await
        .expect("get")
        .annotations()
        .clone();
    assert_eq!(
        annotations
            .get("volume.kubernetes.io/storage-provisioner")
            .map(String::as_str),
        Some("csi.stowage.io")
    );
    cluster.event("waiting", "ProvisioningSucceeded").await;

    // Immediate: the node instance takes the claim and provisions it.
    let now = cluster.bound(claim("now", "local-now", json!({}))).await;
    assert!(handle(&now).ends_with(NODE));
    assert_eq!(
        volume_dirs(&local_root),
        2,
        "two volumes' data (their records are in records.log)"
    );

    // Expansion: a bigger request grows the volume.
    cluster.resize("now", "128Mi").await.expect("grow");
    cluster.event("now", "VolumeResizeSuccessful").await;
    let grown = cluster.volumes.get(&now.name_any()).await.expect("pv");
    assert_eq!(
        grown.spec.and_then(|s| s.capacity).expect("capacity")["storage"].0,
        "128Mi"
    );
    let status = cluster
        .claims
        .get("now")
        .await
        .expect("get")
        .status
        .expect("status");
    assert_eq!(status.capacity.expect("capacity")["storage"].0, "128Mi");
    // The API refuses a shrink, as upstream's does (the provisioner would refuse it too).
    let refused = cluster
        .resize("now", "1Mi")
        .await
        .expect_err("shrinking is refused");
    assert!(matches!(refused, kube::Error::Api(s) if s.code == 422));

    // A clone: a claim whose dataSource is a bound claim gets a copy of its data.
    let original = data_dir(&local_root, &pv);
    std::fs::write(original.join("note"), b"cloned data").expect("write");
    let source = json!({"kind": "PersistentVolumeClaim", "name": "waiting"});
    let copied = cluster
        .bound(claim_from("copy", "local-now", &source))
        .await;
    assert_eq!(
        std::fs::read(data_dir(&local_root, &copied).join("note")).expect("read"),
        b"cloned data"
    );

    // Delete: DeleteVolume on the node, then the PersistentVolume goes.
    cluster
        .delete_and_wait_gone("waiting", &pv.name_any())
        .await;
    cluster.delete_and_wait_gone("now", &now.name_any()).await;
    cluster
        .delete_and_wait_gone("copy", &copied.name_any())
        .await;
    assert_eq!(volume_dirs(&local_root), 0, "every volume deleted on disk");
}

/// The binder names the provisioner on a new claim and the node instance takes it for
/// its node: one after the other, so neither meets the other's write. (When the node
/// took an Immediate claim as it arrived, about one claim in ten met a conflict.)
#[tokio::test]
async fn new_immediate_claims_are_written_by_one_controller_at_a_time() {
    const CLAIMS: usize = 200;
    let dir = TempDir::new().expect("tempdir");
    let cluster = Cluster::start(&dir.path().join("api")).await;
    let _node = Launch::node(NODE).in_dir(dir.path()).start().await;
    let central = cluster.run(Scope::Central, &dir.path().join("no-controller.sock"));
    let node = cluster.run(Scope::Node(NODE.into()), &dir.path().join("node.sock"));
    cluster
        .add_class(class("local-now", "Immediate", json!({"type": "local"})))
        .await;

    let claims: Vec<PersistentVolumeClaim> = (0..CLAIMS)
        .map(|i| claim(&format!("many-{i}"), "local-now", json!({})))
        .collect();
    let params = PostParams::default();
    join_all(claims.iter().map(|c| cluster.claims.create(&params, c)))
        .await
        .into_iter()
        .collect::<kube::Result<Vec<_>>>()
        .expect("claims");
    wait_for("every claim Bound", Duration::from_secs(120), async || {
        let claims = cluster.claims.list(&ListParams::default()).await.ok()?;
        let bound = claims
            .items
            .iter()
            .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
            .count();
        (bound == CLAIMS).then_some(())
    })
    .await;

    assert_eq!(
        (
            central.write_conflicts_of("binder"),
            node.write_conflicts_of("provisioner")
        ),
        (0, 0),
        "write conflicts (binder, node provisioner)"
    );
    for claim in cluster
        .claims
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
    {
        assert_eq!(
            claim
                .annotations()
                .get("volume.kubernetes.io/storage-provisioner")
                .map(String::as_str),
            Some("csi.stowage.io"),
            "{} names its provisioner",
            claim.name_any()
        );
    }
}

#[tokio::test]
async fn nfs_claims_are_provisioned_by_the_central_instance() {
    let dir = TempDir::new().expect("tempdir");
    let cluster = Cluster::start(&dir.path().join("api")).await;
    let nfs = MemNfs::start().await;
    let controller = Launch::controller().in_dir(dir.path()).start().await;
    let (csi, socket) = (&controller.csi, controller.socket());
    cluster.run(Scope::Central, &socket);
    cluster
        .add_class(class(
            "nfs",
            "Immediate",
            json!({"type": "nfs", "server": nfs.server(), "share": "/"}),
        ))
        .await;
    let pv = cluster.bound(claim("shared", "nfs", json!({}))).await;
    let handle = handle(&pv);
    assert!(handle.starts_with("nfs:"), "{handle}");
    let listed = csi.list_all(0).await.expect("ListVolumes");
    assert!(
        listed.iter().any(|v| v.volume_id == handle),
        "the driver has it"
    );

    cluster.delete_and_wait_gone("shared", &pv.name_any()).await;
    let listed = csi.list_all(0).await.expect("ListVolumes");
    assert!(
        listed.iter().all(|v| v.volume_id != handle),
        "DeleteVolume ran"
    );

    // A parameter the driver refuses: ProvisioningFailed with its message, still Pending.
    cluster
        .add_class(class(
            "broken",
            "Immediate",
            json!({"type": "nfs", "server": nfs.server(), "share": "/", "colour": "blue"}),
        ))
        .await;
    cluster
        .claims
        .create(
            &PostParams::default(),
            &claim("refused", "broken", json!({})),
        )
        .await
        .expect("claim");
    let failed = cluster.event("refused", "ProvisioningFailed").await;
    assert!(
        failed.message.unwrap_or_default().contains("colour"),
        "the driver's message names the parameter"
    );
    let refused = cluster.claims.get("refused").await.expect("get");
    assert_eq!(
        refused.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );
}

#[tokio::test]
async fn a_provisioner_restarted_after_create_volume_neither_leaks_nor_duplicates() {
    let dir = TempDir::new().expect("tempdir");
    let cluster = Cluster::start(&dir.path().join("api")).await;
    let node = Launch::node(NODE).in_dir(dir.path()).start().await;
    let csi = &node.csi;
    let socket = dir.path().join("node.sock");
    let local_root = dir.path().join("local");
    let immediate = class("local-now", "Immediate", json!({"type": "local"}));
    cluster.add_class(immediate.clone()).await;
    let selected = json!({"volume.kubernetes.io/selected-node": NODE});
    let created = cluster
        .claims
        .create(
            &PostParams::default(),
            &claim("survivor", "local-now", selected),
        )
        .await
        .expect("claim");
    // A previous instance got as far as CreateVolume, then died before the PV.
    let name = format!("pvc-{}", created.uid().expect("uid"));
    let request =
        provisioner::provision::request::create_request(&created, &immediate, Some(NODE), None)
            .expect("request");
    let made = csi.create(request).await.expect("CreateVolume");
    assert_eq!(volume_dirs(&local_root), 1, "one volume's data");

    cluster.run(Scope::Node(NODE.into()), &socket);
    cluster.run(Scope::Central, &dir.path().join("no-controller.sock"));
    let pv = wait_for("survivor bound", Duration::from_secs(30), async || {
        let c = cluster.claims.get("survivor").await.ok()?;
        (c.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(())?;
        cluster.volumes.get(&name).await.ok()
    })
    .await;
    assert_eq!(
        pv.spec.and_then(|s| s.csi).expect("csi").volume_handle,
        made.volume_id,
        "the restarted provisioner found the volume it had made"
    );
    assert_eq!(volume_dirs(&local_root), 1, "and made no second one");
}

fn snapshot_api(client: &Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", kind),
        plural,
    );
    if kind == "VolumeSnapshot" {
        Api::namespaced_with(client.clone(), "default", &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    }
}

/// What the snapshot controller and csi-snapshotter leave behind for a snapshot the
/// driver made: a VolumeSnapshotContent and a VolumeSnapshot bound to each other, ready.
async fn record_snapshot(client: &Client, name: &str, made: &csi_proto::v1::Snapshot) {
    let contents = snapshot_api(client, "VolumeSnapshotContent", "volumesnapshotcontents");
    let snapshots = snapshot_api(client, "VolumeSnapshot", "volumesnapshots");
    let content_name = format!("snapcontent-{name}");
    let content: DynamicObject = object(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": content_name},
        "spec": {
            "driver": "csi.stowage.io",
            "deletionPolicy": "Delete",
            "source": {"snapshotHandle": made.snapshot_id},
            "volumeSnapshotRef": {"name": name, "namespace": "default"},
        }
    }));
    contents
        .create(&PostParams::default(), &content)
        .await
        .expect("content");
    let snapshot: DynamicObject = object(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": name},
        "spec": {"source": {"volumeSnapshotContentName": content_name}},
    }));
    snapshots
        .create(&PostParams::default(), &snapshot)
        .await
        .expect("snapshot");
    let status = |value: Value| Patch::Merge(json!({"status": value}));
    contents
        .patch_status(
            &content_name,
            &PatchParams::default(),
            &status(
                json!({"snapshotHandle": made.snapshot_id, "readyToUse": true,
                           "restoreSize": made.size_bytes}),
            ),
        )
        .await
        .expect("content status");
    snapshots
        .patch_status(
            name,
            &PatchParams::default(),
            &status(json!({"boundVolumeSnapshotContentName": content_name,
                           "readyToUse": true})),
        )
        .await
        .expect("snapshot status");
}

#[tokio::test]
async fn a_claim_restores_a_volume_snapshot_once_it_is_ready() {
    let dir = TempDir::new().expect("tempdir");
    let cluster = Cluster::start(&dir.path().join("api")).await;
    let node = Launch::node(NODE).in_dir(dir.path()).start().await;
    let csi = &node.csi;
    let local_root = dir.path().join("local");
    cluster.run(Scope::Central, &dir.path().join("no-controller.sock"));
    cluster.run(Scope::Node(NODE.into()), &dir.path().join("node.sock"));
    cluster
        .add_class(class("local-now", "Immediate", json!({"type": "local"})))
        .await;
    let origin = cluster.bound(claim("origin", "local-now", json!({}))).await;
    std::fs::write(data_dir(&local_root, &origin).join("note"), b"before").expect("write");
    let handle = handle(&origin);
    let made = csi
        .snapshot("snap-origin", &handle)
        .await
        .expect("snapshot");
    std::fs::write(data_dir(&local_root, &origin).join("note"), b"after").expect("write");

    // The claim comes first: it waits, saying why, until the snapshot is ready.
    let source = json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
                        "name": "snap"});
    cluster
        .claims
        .create(
            &PostParams::default(),
            &claim_from("restored", "local-now", &source),
        )
        .await
        .expect("claim");
    let failed = cluster.event("restored", "ProvisioningFailed").await;
    let message = failed.message.unwrap_or_default();
    assert!(
        message.contains("snapshot default/snap does not exist"),
        "{message}"
    );
    let both: DynamicObject = object(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "snap"},
        "spec": {"source": {"persistentVolumeClaimName": "origin",
                            "volumeSnapshotContentName": "c"}},
    }));
    let refused = snapshot_api(&cluster.client, "VolumeSnapshot", "volumesnapshots")
        .create(&PostParams::default(), &both)
        .await
        .expect_err("a snapshot names one source");
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 422 && s.message.contains("exactly one of")),
        "{refused}"
    );
    record_snapshot(&cluster.client, "snap", &made).await;

    let pv = wait_for("restored Bound", Duration::from_secs(30), async || {
        let c = cluster.claims.get("restored").await.ok()?;
        let name = c.spec.and_then(|s| s.volume_name)?;
        cluster.volumes.get(&name).await.ok()
    })
    .await;
    assert_eq!(
        std::fs::read(data_dir(&local_root, &pv).join("note")).expect("read"),
        b"before",
        "the restored volume holds the data as it was at the snapshot"
    );
}

#[tokio::test]
async fn growing_a_staged_image_volume_leaves_the_filesystem_to_the_node() {
    let dir = MountedDir::new();
    let cluster = Cluster::start(&dir.path().join("api")).await;
    let node = Launch::node(NODE)
        .in_dir(dir.path())
        .kubelet_dir()
        .start()
        .await;
    let (csi, kubelet) = (&node.csi, node.kubelet(""));
    cluster.run(Scope::Central, &dir.path().join("no-controller.sock"));
    cluster.run(Scope::Node(NODE.into()), &dir.path().join("node.sock"));
    cluster
        .add_class(class(
            "local-image",
            "Immediate",
            json!({"type": "local", "capacityEnforcement": "image"}),
        ))
        .await;
    let pv = cluster
        .bound(claim("grown", "local-image", json!({})))
        .await;
    let staged = stowage_tests::api::csi_volume(&pv);
    let staging = kubelet.join("plugins/csi.stowage.io/staging/grown");
    std::fs::create_dir_all(&staging).expect("staging dir, as kubelet makes it");
    csi.node_stage(&staged, &staging, stowage_tests::csi::mount_rwo())
        .await
        .expect("stage: a loop device now holds the image");

    cluster.resize("grown", "128Mi").await.expect("grow");
    cluster.event("grown", "FileSystemResizeRequired").await;
    let volume = cluster.volumes.get(&pv.name_any()).await.expect("pv");
    assert_eq!(
        volume.spec.and_then(|s| s.capacity).expect("capacity")["storage"].0,
        "128Mi",
        "the volume grew"
    );
    let status = cluster
        .claims
        .get("grown")
        .await
        .expect("get")
        .status
        .expect("status");
    assert_eq!(
        status.capacity.expect("capacity")["storage"].0,
        "64Mi",
        "the claim keeps its size until the node grows the filesystem"
    );
    let conditions = status.conditions.unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "FileSystemResizePending" && c.status == "True"),
        "{conditions:?}"
    );
    csi.node_unstage(&staged.volume_id, &staging)
        .await
        .expect("unstage");
}

/// The node named by a local volume's handle, `local:<key>:<node>`.
fn node_of(pv: &PersistentVolume) -> String {
    handle(pv).rsplit(':').next().expect("node").to_string()
}

#[tokio::test]
async fn clones_and_restores_of_local_volumes_land_on_the_source_node() {
    let dir = TempDir::new().expect("tempdir");
    let cluster = Cluster::start(&dir.path().join("api")).await;
    let mut plugins = Vec::new();
    for node in ["node-a", "node-b"] {
        let home = dir.path().join(node);
        std::fs::create_dir_all(&home).expect("node dir");
        let plugin = Launch::node(node).in_dir(&home).start().await;
        cluster.run(Scope::Node(node.into()), &plugin.socket());
        plugins.push((node, home, plugin));
    }
    cluster.run(Scope::Central, &dir.path().join("no-controller.sock"));
    cluster
        .add_class(class("local-now", "Immediate", json!({"type": "local"})))
        .await;
    let origin = cluster.bound(claim("origin", "local-now", json!({}))).await;
    let home = |node: &str| dir.path().join(node).join("local");
    let holder = node_of(&origin);
    std::fs::write(data_dir(&home(&holder), &origin).join("note"), b"kept").expect("write");

    // Both nodes race for Immediate claims; only the source's node may take these.
    let source = json!({"kind": "PersistentVolumeClaim", "name": "origin"});
    for i in 0..4 {
        let copied = cluster
            .bound(claim_from(&format!("copy-{i}"), "local-now", &source))
            .await;
        assert_eq!(
            node_of(&copied),
            holder,
            "clone {i} is on the source's node"
        );
        assert_eq!(
            std::fs::read(data_dir(&home(&holder), &copied).join("note")).expect("read"),
            b"kept"
        );
    }
    let handle = handle(&origin);
    let (_, _, plugin) = plugins
        .iter()
        .find(|(node, ..)| *node == holder)
        .expect("holder");
    let made = plugin
        .csi
        .snapshot("snap-origin", &handle)
        .await
        .expect("snapshot");
    record_snapshot(&cluster.client, "snap", &made).await;
    let snapshot = json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
                          "name": "snap"});
    for i in 0..4 {
        let pv = cluster
            .bound(claim_from(&format!("restored-{i}"), "local-now", &snapshot))
            .await;
        assert_eq!(
            node_of(&pv),
            holder,
            "restore {i} is on the snapshot's node"
        );
    }
}
