//! The provisioner as the real `stowage provisioner` process: killed with SIGKILL
//! between CreateVolume taking effect and its reply, and run as two replicas under
//! leader election, where exactly one acts and the other takes over when it dies.
//! Against the embedded API server, the real controller binary and an in-process
//! NFSv3 server.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use stowage_tests::api::{InProcessApi, lease_holder, wait_for_event, wait_for_volume_gone};
use stowage_tests::driver::{Driver, Launch};
use stowage_tests::nfs::MemNfs;
use stowage_tests::process::ProvisionerProcess;
use stowage_tests::relay::Relay;
use stowage_tests::wait_for;
use tempfile::TempDir;

const SUCCEEDED: &str = r#"stowage_provisioner_provisions_total{outcome="success"}"#;
const LEADER: &str = "stowage_provisioner_leader";

/// The API server, an NFS export and the controller plugin serving it.
struct Setup {
    dir: TempDir,
    api: InProcessApi,
    nfs: MemNfs,
    controller: Driver,
}

impl Setup {
    async fn start() -> Self {
        let dir = TempDir::new().expect("tempdir");
        let api = InProcessApi::start(&dir.path().join("api")).await;
        let nfs = MemNfs::start().await;
        let controller = Launch::controller().in_dir(dir.path()).start().await;
        let setup = Self {
            dir,
            api,
            nfs,
            controller,
        };
        setup.add_class("nfs", json!({})).await;
        setup
    }

    /// An NFS class on the test's export, with `extra` parameters.
    async fn add_class(&self, name: &str, extra: serde_json::Value) {
        let mut parameters = json!({"type": "nfs", "server": self.nfs.server(), "share": "/"});
        json_patch::merge(&mut parameters, &extra);
        let class: StorageClass = serde_json::from_value(json!({
            "metadata": {"name": name},
            "provisioner": "csi.stowage.io",
            "reclaimPolicy": "Delete",
            "parameters": parameters,
        }))
        .expect("class");
        Api::<StorageClass>::all(self.client())
            .create(&PostParams::default(), &class)
            .await
            .expect("create class");
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn client(&self) -> Client {
        self.api.client.clone()
    }

    async fn claim(&self, name: &str) -> PersistentVolumeClaim {
        self.claim_of(name, "nfs").await
    }

    async fn claim_of(&self, name: &str, class: &str) -> PersistentVolumeClaim {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": class,
                "resources": {"requests": {"storage": "1Gi"}},
            }
        }))
        .expect("claim");
        Api::namespaced(self.client(), "default")
            .create(&PostParams::default(), &claim)
            .await
            .expect("create claim")
    }

    /// Waits until the claim is Bound and returns its volume.
    async fn bound(&self, name: &str) -> PersistentVolume {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client(), "default");
        let volumes: Api<PersistentVolume> = Api::all(self.client());
        wait_for(
            &format!("{name} Bound"),
            Duration::from_secs(30),
            async || {
                let claim = claims.get(name).await.ok()?;
                (claim.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(())?;
                volumes.get(&claim.spec?.volume_name?).await.ok()
            },
        )
        .await
    }
}

#[tokio::test]
async fn a_provisioner_killed_between_create_volume_and_its_reply_neither_leaks_nor_duplicates() {
    let setup = Setup::start().await;
    let relay = Relay::start(&setup.dir().join("relay.sock"), &setup.controller.socket());
    let first = ProvisionerProcess::start(&setup.api.kubeconfig, &relay.socket, &[]).await;

    relay.hold_replies();
    let claim = setup.claim("interrupted").await;
    let name = format!("pvc-{}", claim.uid().expect("uid"));
    let made = wait_for(
        "CreateVolume to take effect on the controller",
        Duration::from_secs(20),
        async || {
            let volumes = setup.controller.csi.list_all(0).await.ok()?;
            (volumes.len() == 1).then(|| volumes[0].volume_id.clone())
        },
    )
    .await;
    let volumes: Api<PersistentVolume> = Api::all(setup.client());
    assert!(
        volumes.get_opt(&name).await.expect("get").is_none(),
        "the provisioner is stuck before creating the PersistentVolume"
    );
    first.kill_hard().await;

    let _second =
        ProvisionerProcess::start(&setup.api.kubeconfig, &setup.controller.socket(), &[]).await;
    let pv = setup.bound("interrupted").await;
    assert_eq!(
        pv.name_any(),
        name,
        "the volume keeps its deterministic name"
    );
    assert_eq!(
        pv.spec.and_then(|s| s.csi).expect("csi").volume_handle,
        made,
        "the restarted provisioner adopted the volume the killed one made"
    );
    let listed = setup.controller.csi.list_all(0).await.expect("ListVolumes");
    assert_eq!(listed.len(), 1, "no second volume: {listed:?}");
    let all = volumes.list(&Default::default()).await.expect("list");
    assert_eq!(all.items.len(), 1, "one PersistentVolume");
}

#[tokio::test]
async fn of_two_replicas_one_acts_and_the_other_takes_over_when_it_is_killed() {
    let setup = Setup::start().await;
    let election = [
        "--leader-election",
        "--leader-election-namespace",
        "default",
        "--leader-election-lease-duration",
        "2s",
        "--leader-election-renew-deadline",
        "1500ms",
        "--leader-election-retry-period",
        "200ms",
    ];
    let kubeconfig = &setup.api.kubeconfig;
    let replicas = [
        ProvisionerProcess::start(kubeconfig, &setup.controller.socket(), &election).await,
        ProvisionerProcess::start(kubeconfig, &setup.controller.socket(), &election).await,
    ];
    let leases: Api<Lease> = Api::namespaced(setup.client(), "default");
    let holder_now = wait_for("a lease holder", Duration::from_secs(10), async || {
        lease_holder(&leases, "stowage-provisioner").await
    })
    .await;
    let leading = replicas
        .iter()
        .position(|r| holder_now.ends_with(&format!("-{}", r.pid())))
        .expect("the holder is one of the replicas");
    let [a, b] = replicas;
    let (leader, standby) = if leading == 0 { (a, b) } else { (b, a) };

    setup.claim("first").await;
    setup.bound("first").await;
    assert_eq!(leader.sample(LEADER).await, 1.0);
    assert_eq!(
        leader.sample(SUCCEEDED).await,
        1.0,
        "the leader provisioned"
    );
    assert_eq!(standby.sample(LEADER).await, 0.0);
    assert_eq!(
        standby.sample(SUCCEEDED).await,
        0.0,
        "the standby did nothing"
    );

    let killed = Instant::now();
    leader.kill_hard().await;
    let successor = wait_for("a new holder", Duration::from_secs(10), async || {
        lease_holder(&leases, "stowage-provisioner")
            .await
            .filter(|h| *h != holder_now)
    })
    .await;
    let took = killed.elapsed();
    assert!(
        successor.ends_with(&format!("-{}", standby.pid())),
        "{successor}"
    );
    assert!(
        took < Duration::from_secs(4),
        "took over in {took:?}: the 2 s lease runs from the last renewal the standby saw; \
         allow its next retry and a loaded machine"
    );
    println!("the standby took over {took:?} after the leader was killed");

    setup.claim("second").await;
    setup.bound("second").await;
    assert_eq!(standby.sample(LEADER).await, 1.0);
    assert_eq!(
        standby.sample(SUCCEEDED).await,
        1.0,
        "the new leader provisioned"
    );
    assert_eq!(
        setup.controller.csi.list_all(0).await.expect("list").len(),
        2
    );
}

#[tokio::test]
async fn class_secrets_reach_the_driver_and_the_volume_but_never_a_log() {
    const VALUE: &str = "s3cr3t-Value-7f3a";
    let setup = Setup::start().await;
    setup
        .add_class(
            "nfs-secret",
            json!({
                "csi.storage.k8s.io/provisioner-secret-name": "creds-${pvc.name}",
                "csi.storage.k8s.io/provisioner-secret-namespace": "${pvc.namespace}",
                "csi.storage.k8s.io/node-publish-secret-name": "mount-creds",
                "csi.storage.k8s.io/node-publish-secret-namespace": "default",
            }),
        )
        .await;
    let relay = Relay::start(&setup.dir().join("relay.sock"), &setup.controller.socket());
    let log = setup.dir().join("provisioner.log");
    let provisioner =
        ProvisionerProcess::start_logging(&setup.api.kubeconfig, &relay.socket, &[], &log).await;

    setup.claim_of("locked", "nfs-secret").await;
    let failed = wait_for_event(
        &setup.client(),
        "PersistentVolumeClaim",
        "locked",
        "ProvisioningFailed",
    )
    .await;
    let message = failed.message.unwrap_or_default();
    assert!(message.contains("secret default/creds-locked"), "{message}");

    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "creds-locked"},
        "stringData": {"password": VALUE},
    }))
    .expect("secret");
    let secrets: Api<Secret> = Api::namespaced(setup.client(), "default");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    let stored = secrets.get("creds-locked").await.expect("get secret");
    assert_eq!(
        stored.data.expect("data")["password"].0,
        VALUE.as_bytes(),
        "stringData is merged into data"
    );
    assert!(stored.string_data.is_none(), "stringData is write-only");
    assert_eq!(stored.type_.as_deref(), Some("Opaque"));

    let pv = setup.bound("locked").await;
    assert_eq!(
        relay.sent_count(VALUE.as_bytes()),
        1,
        "CreateVolume carried the secret"
    );
    let annotations = pv.annotations();
    assert_eq!(
        annotations
            .get("volume.kubernetes.io/provisioner-deletion-secret-name")
            .map(String::as_str),
        Some("creds-locked")
    );
    let csi = pv.spec.clone().and_then(|s| s.csi).expect("csi");
    let publish = csi.node_publish_secret_ref.expect("node publish secret");
    assert_eq!(publish.name.as_deref(), Some("mount-creds"));
    assert_eq!(publish.namespace.as_deref(), Some("default"));

    Api::<PersistentVolumeClaim>::namespaced(setup.client(), "default")
        .delete("locked", &Default::default())
        .await
        .expect("delete claim");
    wait_for_volume_gone(&setup.client(), &pv.name_any()).await;
    assert_eq!(
        relay.sent_count(VALUE.as_bytes()),
        2,
        "DeleteVolume carried it too"
    );
    assert!(
        setup
            .controller
            .csi
            .list_all(0)
            .await
            .expect("list")
            .is_empty()
    );

    drop(provisioner);
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(
        logged.contains("provisioned"),
        "the log is the debug log: {logged}"
    );
    assert!(!logged.contains(VALUE), "a secret value reached the log");
}
