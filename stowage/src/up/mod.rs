//! `stowage up`: the whole system on one machine. The embedded API server, the
//! controller, the node plugin and both provisioner instances run as supervised
//! child processes of this one, wired together under a data directory.

mod claim;
mod credentials;
mod error;
pub mod parent;
mod rbac;
mod seed;
mod supervisor;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::ListParams;

use crate::kubeconfig;
use crate::layout::{DEFAULT_DATA, Layout};
pub use error::Error;
use rbac::RbacFile;
use seed::NfsExport;
use supervisor::{Component, Supervisor};

#[derive(clap::Args)]
pub struct UpArgs {
    /// Directory for all state: the API store, volumes, sockets, the kubeconfig.
    #[arg(long, default_value = DEFAULT_DATA)]
    data: PathBuf,
    /// Address of the embedded API server; loopback unless you mean to expose it.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// This machine's node name; the host name by default.
    #[arg(long)]
    node_name: Option<String>,
    /// NFS server (`host` or `host:port`) for the `stowage-nfs` class; none by default.
    #[arg(long, requires = "nfs_share")]
    nfs_server: Option<String>,
    /// The export on --nfs-server that holds one subdirectory per volume.
    #[arg(long, requires = "nfs_server")]
    nfs_share: Option<String>,
    /// A prefix hostPath volumes may use; repeat for more. None by default.
    #[arg(long = "host-path-allow")]
    host_path_allow: Vec<PathBuf>,
    /// The RBAC the components run under, applied at every start; the built-in
    /// deploy/rbac.yaml by default. Its roles and bindings replace those of earlier starts.
    #[arg(long)]
    rbac: Option<PathBuf>,
    /// How long a deleted Node stays gone before the Released local volumes pinned
    /// to it go Failed (the provisioner's --gone-node-grace).
    #[arg(long, default_value = "10m", value_parser = crate::parse_duration)]
    gone_node_grace: Duration,
    /// `keep` or `remove-volumes`: whether those volumes' PV objects are then deleted
    /// (the provisioner's --gone-node-policy).
    #[arg(long, default_value = "keep", value_parser = ["keep", "remove-volumes"])]
    gone_node_policy: String,
}

const STARTUP: Duration = Duration::from_secs(60);
/// One machine's figures are cheap to ask for: often enough that `stowage mount`
/// sees the space a volume just took.
const CAPACITY_POLL: &str = "5s";

pub async fn run(args: UpArgs) -> Result<(), Error> {
    // Installed first: a Ctrl-C at any point from here stops `up` through its
    // shutdown path instead of killing it with the children still running.
    let shutdown = driver_contract::socket::shutdown_signal();
    tokio::pin!(shutdown);
    let absolute = std::path::absolute(&args.data).map_err(|source| Error::Data {
        path: args.data.clone(),
        source,
    })?;
    let layout = Layout::new(&absolute);
    let node = args.node_name.clone().unwrap_or_else(host_name);
    let rbac = read_rbac(args.rbac.as_deref())?;
    // Held until `up` ends; checked before anything is written or started, so a
    // second `up` or a busy port ends this one at once with the flag to change.
    let data = layout.data();
    std::fs::create_dir_all(data).map_err(|source| Error::Create {
        path: data.to_path_buf(),
        source,
    })?;
    let _lock = claim::lock_data(data)?;
    claim::check_listen(args.listen)?;
    prepare(&layout, &node)?;
    credentials::issue(&layout)?;
    let mut supervisor = Supervisor::default();
    let interrupted = tokio::select! {
        started = start(&mut supervisor, &layout, &node, &args, rbac) => match started {
            Ok(()) => false,
            Err(e) => {
                supervisor.shutdown().await;
                return Err(e);
            }
        },
        () = &mut shutdown => true,
    };
    if !interrupted {
        print_banner(&layout, &node);
        shutdown.await;
    }
    println!("stopping…");
    supervisor.shutdown().await;
    Ok(())
}

fn print_banner(layout: &Layout, node: &str) {
    println!("stowage is up on node {node}.");
    println!("  export KUBECONFIG={}", layout.kubeconfig().display());
    println!("  kubectl get storageclass");
    println!(
        "  stowage mount CLAIM --namespace default --target /mnt/CLAIM --data {}",
        layout.data().display()
    );
    println!("  stowage status --data {}", layout.data().display());
    println!("Ctrl-C stops everything; `stowage up` on the same --data resumes.");
}

fn prepare(layout: &Layout, node: &str) -> Result<(), Error> {
    for dir in [
        layout.data().to_path_buf(),
        layout.kubelet(),
        layout.mounts(),
    ] {
        std::fs::create_dir_all(&dir).map_err(|source| Error::Create { path: dir, source })?;
    }
    let path = layout.node_name_file();
    std::fs::write(&path, node).map_err(|source| Error::Write { path, source })
}

async fn start(
    supervisor: &mut Supervisor,
    layout: &Layout,
    node: &str,
    args: &UpArgs,
    rbac: RbacFile,
) -> Result<(), Error> {
    supervisor.start(component(
        "apiserver",
        [
            "apiserver".into(),
            "--listen".into(),
            args.listen.to_string().into(),
            "--data".into(),
            layout.data().into(),
            "--token-file".into(),
            layout.tokens().into(),
            // The provisioner's pvc-protection and pv-protection controllers run
            // here, so claims and volumes get their finalizers as in a cluster.
            "--storage-object-in-use-protection".into(),
        ],
    ))?;
    let client = wait_for_api(&layout.kubeconfig()).await?;
    let nfs = match (&args.nfs_server, &args.nfs_share) {
        (Some(server), Some(share)) => Some(NfsExport {
            server: server.clone(),
            share: share.clone(),
        }),
        _ => None,
    };
    seed::seed(&client, node, nfs.as_ref()).await?;
    rbac.apply(&client).await?;
    credentials::write_kubeconfigs(layout, args.listen)?;

    supervisor.start(component(
        "controller",
        [
            "controller".into(),
            "--endpoint".into(),
            endpoint(&layout.controller_socket()),
            "--state-dir".into(),
            layout.controller_state().into(),
        ],
    ))?;
    let mut node_args: Vec<OsString> = vec![
        "node".into(),
        "--endpoint".into(),
        endpoint(&layout.node_socket()),
        "--node-id".into(),
        node.into(),
        "--local-root".into(),
        layout.local_root().into(),
        "--state-dir".into(),
        layout.node_state().into(),
        "--kubelet-dir".into(),
        layout.kubelet().into(),
    ];
    node_args.extend(allow_args(&args.host_path_allow));
    supervisor.start(component("node", node_args))?;
    for socket in [layout.controller_socket(), layout.node_socket()] {
        wait_for_socket(&socket).await?;
    }

    // Every controller, and no --defer-binding-to: one machine has no
    // kube-controller-manager, so this binder always binds.
    supervisor.start(component(
        "provisioner",
        [
            "provisioner".into(),
            "--kubeconfig".into(),
            layout.component_kubeconfig(credentials::CONTROLLER).into(),
            "--csi-endpoint".into(),
            endpoint(&layout.controller_socket()),
            "--gone-node-grace".into(),
            format!("{}ms", args.gone_node_grace.as_millis()).into(),
            "--gone-node-policy".into(),
            args.gone_node_policy.clone().into(),
        ],
    ))?;
    let mut node_provisioner: Vec<OsString> = vec![
        "provisioner".into(),
        "--kubeconfig".into(),
        layout.component_kubeconfig(credentials::NODE).into(),
        "--csi-endpoint".into(),
        endpoint(&layout.node_socket()),
        "--node".into(),
        node.into(),
        "--enable-capacity".into(),
        "--capacity-poll-interval".into(),
        CAPACITY_POLL.into(),
    ];
    let mut allowed = args.host_path_allow.clone();
    allowed.push(layout.local_root());
    node_provisioner.extend(allow_args(&allowed));
    supervisor.start(component("node-provisioner", node_provisioner))
}

/// The RBAC file to apply, parsed before anything starts so a bad one stops `up` at once.
fn read_rbac(path: Option<&Path>) -> Result<RbacFile, Error> {
    let file = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::ReadRbac {
                path: path.to_path_buf(),
                source,
            })?;
            RbacFile::parse(&text, &path.display().to_string())?
        }
        None => RbacFile::parse(rbac::DEPLOYED, "deploy/rbac.yaml")?,
    };
    Ok(file)
}

fn component(name: &'static str, args: impl IntoIterator<Item = OsString>) -> Component {
    Component {
        name,
        args: args.into_iter().collect(),
    }
}

fn endpoint(socket: &Path) -> OsString {
    format!("unix://{}", socket.display()).into()
}

fn allow_args(prefixes: &[PathBuf]) -> Vec<OsString> {
    prefixes
        .iter()
        .flat_map(|p| [OsString::from("--host-path-allow"), p.into()])
        .collect()
}

async fn wait_for_api(kubeconfig: &Path) -> Result<kube::Client, Error> {
    wait_until("the API server", async || {
        let client = kubeconfig::client(kubeconfig).await.ok()?;
        let namespaces = Api::<Namespace>::all(client.clone());
        namespaces
            .list(&ListParams::default().limit(1))
            .await
            .ok()?;
        Some(client)
    })
    .await
}

async fn wait_for_socket(socket: &Path) -> Result<(), Error> {
    wait_until(&socket.display().to_string(), async || {
        let channel = csi_proto::channel::connect(socket).await.ok()?;
        let mut identity = csi_proto::v1::identity_client::IdentityClient::new(channel);
        identity
            .probe(csi_proto::v1::ProbeRequest {})
            .await
            .ok()
            .map(drop)
    })
    .await
}

/// Polls `ready` until it answers, saying what it waits for; gives up after [`STARTUP`].
async fn wait_until<T>(what: &str, mut ready: impl AsyncFnMut() -> Option<T>) -> Result<T, Error> {
    eprintln!("waiting for {what}…");
    let deadline = Instant::now() + STARTUP;
    loop {
        if let Some(value) = ready().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(Error::NoAnswer {
                what: what.to_string(),
                timeout: STARTUP,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// This machine's name, lowercased as Kubernetes node names are.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
