//! The embedded API server, in-process or as the real binary, and kube-rs clients for it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use apiserver::{ApiServer, Config, Store};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::process::{self, stowage_bin};
use crate::wait_for;

/// A kube-rs client built from a kubeconfig file exactly as a user's would be.
pub async fn client_from(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig to config");
    Client::try_from(config).expect("client")
}

/// The server on a task of this test's runtime, on a loopback port.
pub struct InProcessApi {
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub address: SocketAddr,
    pub store: Store,
    stop: Option<oneshot::Sender<()>>,
}

impl InProcessApi {
    pub async fn start(dir: &Path) -> Self {
        Self::start_with(dir, |_| {}).await
    }

    pub async fn start_with(dir: &Path, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)), dir);
        adjust(&mut config);
        let server = ApiServer::bind(config).await.expect("bind API server");
        let kubeconfig = server.kubeconfig().to_path_buf();
        let address = server.address();
        let store = server.store().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        let client = client_from(&kubeconfig).await;
        Self {
            client,
            kubeconfig,
            address,
            store,
            stop: Some(stop),
        }
    }
}

impl Drop for InProcessApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `stowage apiserver` as a child process, killed when dropped.
pub struct ApiProcess {
    child: Child,
    pub kubeconfig: PathBuf,
}

impl ApiProcess {
    /// Starts the binary on a free loopback port and waits until it answers.
    pub async fn start(dir: &Path, extra: &[&str]) -> (Self, Client) {
        let kubeconfig = dir.join("kubeconfig");
        let _ = std::fs::remove_file(&kubeconfig);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(stowage_bin())
            .args([
                "apiserver",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data",
            ])
            .arg(dir)
            .args(extra)
            .env(
                "STOWAGE_LOG",
                std::env::var("STOWAGE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn stowage apiserver");
        let mut this = Self { child, kubeconfig };
        let client = wait_for("the API server", Duration::from_secs(20), async || {
            if let Ok(Some(status)) = this.child.try_wait() {
                panic!("stowage apiserver exited early: {status}");
            }
            if !this.kubeconfig.exists() {
                return None;
            }
            let client = client_from(&this.kubeconfig).await;
            client.apiserver_version().await.ok()?;
            Some(client)
        })
        .await;
        (this, client)
    }

    /// kill -9: nothing gets flushed that was not already durable.
    pub async fn kill_hard(mut self) {
        process::kill_hard(&mut self.child).await;
    }

    /// SIGTERM, then wait for the exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        process::terminate(&mut self.child).await
    }
}

/// Waits (20 s at most) for an event with `reason` about `kind` `name`; events about
/// cluster-scoped objects live in "default", as upstream puts them.
pub async fn wait_for_event(
    client: &Client,
    kind: &str,
    name: &str,
    reason: &str,
) -> k8s_openapi::api::core::v1::Event {
    let events: kube::Api<k8s_openapi::api::core::v1::Event> =
        kube::Api::namespaced(client.clone(), "default");
    let fields = format!("involvedObject.name={name},involvedObject.kind={kind}");
    crate::wait_for(
        &format!("a {reason} event on {kind} {name}"),
        std::time::Duration::from_secs(20),
        async || {
            let params = kube::api::ListParams::default().fields(&fields);
            let list = events.list(&params).await.ok()?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason))
        },
    )
    .await
}

/// Waits (30 s at most) until the PersistentVolume `name` no longer exists.
pub async fn wait_for_volume_gone(client: &Client, name: &str) {
    let volumes: kube::Api<k8s_openapi::api::core::v1::PersistentVolume> =
        kube::Api::all(client.clone());
    crate::wait_for(
        &format!("{name} deleted"),
        std::time::Duration::from_secs(30),
        async || volumes.get_opt(name).await.ok()?.is_none().then_some(()),
    )
    .await;
}

/// Who holds the Lease `name` in `leases`' namespace; None while nobody does.
pub async fn lease_holder(
    leases: &kube::Api<k8s_openapi::api::coordination::v1::Lease>,
    name: &str,
) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// The CSI volume a PV names, as kubelet hands it to the node plugin: its handle and
/// attributes.
pub fn csi_volume(volume: &PersistentVolume) -> csi_proto::v1::Volume {
    let csi = volume
        .spec
        .as_ref()
        .and_then(|s| s.csi.as_ref())
        .expect("a CSI volume");
    csi_proto::v1::Volume {
        volume_id: csi.volume_handle.clone(),
        volume_context: csi
            .volume_attributes
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// Creates a static 1Gi hostPath volume and a claim of no class that matches it, both
/// named `name`: what the binder binds to each other.
pub async fn matching_pair(
    client: &Client,
    name: &str,
) -> (PersistentVolume, PersistentVolumeClaim) {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pv = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": "", "hostPath": {"path": "/srv/x"}}
    }))
    .expect("pv");
    let pvc = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .expect("pvc");
    let params = PostParams::default();
    let pv = volumes.create(&params, &pv).await.expect("create pv");
    let pvc = claims.create(&params, &pvc).await.expect("create pvc");
    (pv, pvc)
}
