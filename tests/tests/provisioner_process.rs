//! The provisioner as the real `stowage provisioner` process: killed with SIGKILL
//! between CreateVolume taking effect and its reply, and run as two replicas under
//! leader election, where exactly one acts and the other takes over when it dies.
//! Against the embedded API server, the real controller binary and an in-process
//! NFSv3 server.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use stowage_tests::api::InProcessApi;
use stowage_tests::csi::Csi;
use stowage_tests::nfs::MemNfs;
use stowage_tests::process::{ProvisionerProcess, Stowage};
use stowage_tests::relay::Relay;
use stowage_tests::wait_for;
use tempfile::TempDir;

const SUCCEEDED: &str = r#"stowage_provisioner_provisions_total{outcome="success"}"#;
const LEADER: &str = "stowage_provisioner_leader";

/// The API server, an NFS export and the controller plugin serving it.
struct Setup {
    _dir: TempDir,
    api: InProcessApi,
    _nfs: MemNfs,
    _controller: Stowage,
    csi: Csi,
    socket: std::path::PathBuf,
}

impl Setup {
    async fn start() -> Self {
        let dir = TempDir::new().expect("tempdir");
        let api = InProcessApi::start(&dir.path().join("api")).await;
        let nfs = MemNfs::start().await;
        let socket = dir.path().join("controller.sock");
        let state = dir.path().join("state");
        let (controller, csi) = Stowage::start(
            "controller",
            &socket,
            &["--state-dir", state.to_str().expect("utf8")],
        )
        .await;
        let class: StorageClass = serde_json::from_value(json!({
            "metadata": {"name": "nfs"},
            "provisioner": "csi.stowage.io",
            "reclaimPolicy": "Delete",
            "parameters": {"type": "nfs", "server": nfs.server(), "share": "/"},
        }))
        .expect("class");
        Api::<StorageClass>::all(api.client.clone())
            .create(&PostParams::default(), &class)
            .await
            .expect("create class");
        Self {
            _dir: dir,
            api,
            _nfs: nfs,
            _controller: controller,
            csi,
            socket,
        }
    }

    fn dir(&self) -> &Path {
        self._dir.path()
    }

    fn client(&self) -> Client {
        self.api.client.clone()
    }

    async fn claim(&self, name: &str) -> PersistentVolumeClaim {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "nfs",
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
    let relay = Relay::start(&setup.dir().join("relay.sock"), &setup.socket);
    let first = ProvisionerProcess::start(&setup.api.kubeconfig, &relay.socket, &[]).await;

    relay.hold_replies();
    let claim = setup.claim("interrupted").await;
    let name = format!("pvc-{}", claim.uid().expect("uid"));
    let made = wait_for(
        "CreateVolume to take effect on the controller",
        Duration::from_secs(20),
        async || {
            let volumes = setup.csi.list_all(0).await.ok()?;
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

    let _second = ProvisionerProcess::start(&setup.api.kubeconfig, &setup.socket, &[]).await;
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
    let listed = setup.csi.list_all(0).await.expect("ListVolumes");
    assert_eq!(listed.len(), 1, "no second volume: {listed:?}");
    let all = volumes.list(&Default::default()).await.expect("list");
    assert_eq!(all.items.len(), 1, "one PersistentVolume");
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("stowage-provisioner")
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
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
        ProvisionerProcess::start(kubeconfig, &setup.socket, &election).await,
        ProvisionerProcess::start(kubeconfig, &setup.socket, &election).await,
    ];
    let leases: Api<Lease> = Api::namespaced(setup.client(), "default");
    let holder_now = wait_for("a lease holder", Duration::from_secs(10), async || {
        holder(&leases).await
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
        holder(&leases).await.filter(|h| *h != holder_now)
    })
    .await;
    let took = killed.elapsed();
    assert!(
        successor.ends_with(&format!("-{}", standby.pid())),
        "{successor}"
    );
    assert!(
        took < Duration::from_secs(3),
        "took over in {took:?}: the 2 s lease runs from the last renewal the standby saw, plus its next retry"
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
    assert_eq!(setup.csi.list_all(0).await.expect("list").len(), 2);
}
