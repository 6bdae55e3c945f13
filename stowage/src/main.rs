//! `stowage`: parses flags, sets up tracing and runs the chosen component.

#![forbid(unsafe_code)]

mod bench;
mod capabilities;
mod kubeconfig;
mod layout;
mod up;
mod volume;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use csi_controller::{ControllerConfig, Driver, controller_routes};
use driver_contract::socket::{self, NotAUnixEndpoint};
use stowage::node_plugin::{self, NodeArgs, NodePluginError};
use stowage::serve::{self, ServeError};
use stowage::telemetry_endpoint::{self, MetricsEndpointError};

/// The flag `stowage up` gives its children; see [`up::parent`].
const EXIT_WITH_STDIN: &str = "--exit-with-stdin";

#[derive(Parser)]
#[command(
    name = "stowage",
    version,
    about = "Stowage: a CSI driver and provisioner for Kubernetes"
)]
struct Cli {
    /// Log filter, e.g. `info` or `csi_controller=debug`.
    #[arg(long, env = "STOWAGE_LOG", default_value = "info", global = true)]
    log: String,
    /// Stop when stdin reaches end of file: set by `stowage up` on its children,
    /// whose stdin is a pipe from it, so they end when it does.
    #[arg(long, global = true, hide = true)]
    exit_with_stdin: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the CSI Identity and Controller services.
    Controller(ControllerArgs),
    /// Serve the CSI Identity and Node services, and the Controller service for this node's local volumes.
    Node(NodeArgs),
    /// Serve the embedded Kubernetes-compatible API (single-machine mode).
    Apiserver(ApiserverArgs),
    /// Bind claims to volumes and reclaim released volumes (with --node: this node's volumes).
    Provisioner(ProvisionerArgs),
    /// Run the whole system on this machine: API server, controller, node plugin, provisioners.
    Up(up::UpArgs),
    /// Bind a claim (as the scheduler would), stage and publish it, and mount it at a path.
    Mount(volume::MountArgs),
    /// Undo `stowage mount`.
    Unmount(volume::UnmountArgs),
    /// Volumes, claims and mounts of the single machine.
    Status(volume::StatusArgs),
    /// Measure and print the figures the design promises.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Create throughput and watch delivery latency of the embedded API server.
    Apiserver(bench::ApiserverBench),
    /// Binding time of the binder's matching for N volumes and M claims.
    Binder(bench::BinderBench),
    /// Claims of a local class provisioned and bound end to end.
    Provision(bench::ProvisionBench),
    /// Static and dynamic claims bound at scale under `stowage up`, started as its own process.
    Up(bench::UpBench),
    /// Volume lifecycles through any CSI driver: per-RPC latency, throughput, node memory.
    Csi(bench::CsiBench),
    /// Node plugin lifecycle latency and memory against 0 → 10,000 published volumes,
    /// and its restart time with them published (starts its own plugin).
    NodeScale(bench::NodeScaleBench),
    /// CreateVolume and a paged ListVolumes walk against up to 100,000 volumes
    /// (starts its own plugin).
    ControllerScale(bench::ControllerScaleBench),
}

#[derive(clap::Args)]
struct ApiserverArgs {
    /// Address to listen on; loopback unless you mean to expose it.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: std::net::SocketAddr,
    /// Directory for the database, the CA, the token file and the admin's kubeconfig.
    #[arg(long, default_value = "/var/lib/stowage/api")]
    data: PathBuf,
    /// Identities and their bearer tokens, one `token,user,uid,"group1,group2"` line
    /// each (kube-apiserver's --token-auth-file format); DATA/tokens.csv by default.
    /// An `admin` in system:masters is added when no line is in that group.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Watches one identity may hold at once; one more is refused with 429 and Retry-After.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    max_watches_per_user: u32,
    /// Recent changes kept in memory for watches; older resourceVersions get 410 Gone.
    #[arg(long, default_value_t = 100_000)]
    watch_history: usize,
    /// Serve /metrics, /healthz and /readyz on this address (plain HTTP); off when unset.
    #[arg(long)]
    metrics_address: Option<std::net::SocketAddr>,
    /// The StorageObjectInUseProtection admission: new claims get the
    /// kubernetes.io/pvc-protection finalizer and new volumes kubernetes.io/pv-protection,
    /// so a deleted one stays until `stowage provisioner`'s pvc-protection and
    /// pv-protection controllers (or kube-controller-manager's) let it go. `up` sets it.
    #[arg(long)]
    storage_object_in_use_protection: bool,
}

#[derive(clap::Args)]
struct ProvisionerArgs {
    /// kubeconfig to use; by default the in-cluster service account or $KUBECONFIG.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// CSI endpoint DeleteVolume goes to: the controller's, or with --node this node's plugin.
    #[arg(long)]
    csi_endpoint: Option<String>,
    /// Act only for volumes of this node (the DaemonSet instance): scrub its
    /// hostPath/local volumes for Recycle and delete its local volumes.
    #[arg(long)]
    node: Option<String>,
    /// A prefix below which hostPath/local volumes may be scrubbed; repeat for more. None by default.
    #[arg(long = "host-path-allow")]
    host_path_allow: Vec<PathBuf>,
    /// Publish CSIStorageCapacity objects for this node (needs --node and
    /// --csi-endpoint): one per local class of the driver, from GetCapacity.
    #[arg(long, requires_all = ["node", "csi_endpoint"])]
    enable_capacity: bool,
    /// Namespace of the CSIStorageCapacity objects (the pod's own in a cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "stowage-system")]
    capacity_namespace: String,
    /// How often the driver's capacity is asked for and the objects brought up to date.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    capacity_poll_interval: Duration,
    /// How long a Node must stay deleted before the central instance fails the
    /// Released local volumes pinned to it (a node that re-registers meanwhile is not gone).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    gone_node_grace: Duration,
    /// What becomes of those volumes' PV objects: `keep` (Failed, for an
    /// administrator) or `remove-volumes` (deleted; opt-in: their data is lost with the node).
    #[arg(long, default_value = "keep")]
    gone_node_policy: provisioner::gone_nodes::GonePolicy,
    /// Act only while holding a coordination.k8s.io Lease (for several replicas).
    #[arg(long)]
    leader_election: bool,
    /// Namespace of the Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "stowage-system")]
    leader_election_namespace: String,
    /// Lease name; default `stowage-provisioner`, or `stowage-provisioner-<node>` with --node.
    #[arg(long)]
    leader_election_lease: Option<String>,
    /// How long a lease may go unrenewed before a standby takes it (`15s`, `1500ms`).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    leader_election_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    leader_election_renew_deadline: Duration,
    /// Between attempts to acquire or renew.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    leader_election_retry_period: Duration,
    /// Controllers to run, as kube-controller-manager's list: `*` all, `name` one,
    /// `-name` not that one (binder, provisioner, reclaimer, resizer, snapshotter, modifier,
    /// groupsnapshotter, pvc-protection, pv-protection).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "*",
        allow_hyphen_values = true
    )]
    controllers: Vec<String>,
    /// `NAMESPACE/NAME` of another binder's Lease (kube-system/kube-controller-manager):
    /// the binder stands down while it is held and binds when it lapses.
    #[arg(long)]
    defer_binding_to: Option<provisioner::leader::LeaseRef>,
    /// Serve /metrics, /healthz and /readyz on this address (e.g. `0.0.0.0:9810`); off when unset.
    #[arg(long)]
    metrics_address: Option<std::net::SocketAddr>,
}

#[derive(clap::Args)]
struct ControllerArgs {
    /// CSI endpoint, `unix:///path/csi.sock`.
    #[arg(long)]
    endpoint: String,
    /// This node's name; with --local-root the controller serves this node's local volumes.
    #[arg(long)]
    node_id: Option<String>,
    /// Directory holding this node's local volumes.
    #[arg(long)]
    local_root: Option<PathBuf>,
    /// Directory for the controller's own state (known NFS exports, attachments).
    #[arg(long, default_value = "/var/lib/stowage/controller")]
    state_dir: PathBuf,
    /// Serve ControllerPublish/Unpublish and refuse a second node for single-node volumes.
    #[arg(long)]
    enable_attach: bool,
    /// With --enable-attach: refuse to publish more volumes than this to one node
    /// (ResourceExhausted); set it to the node plugins' --max-volumes. 0: no limit.
    #[arg(long, default_value_t = 0)]
    max_volumes_per_node: usize,
    /// Serve /metrics, /healthz and /readyz on this address (e.g. `0.0.0.0:9810`); off when unset.
    #[arg(long)]
    metrics_address: Option<std::net::SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    stowage::init_logging(&cli.log);
    if cli.exit_with_stdin {
        up::parent::exit_with_stdin();
    }
    let runtime = match &cli.command {
        Command::Node(_) => node_plugin::runtime(),
        // The CSI benchmark's client keeps to one thread: its own wake-ups between
        // threads would otherwise be counted as the driver's latency.
        Command::Bench(
            BenchCommand::Csi(_) | BenchCommand::NodeScale(_) | BenchCommand::ControllerScale(_),
        ) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(cli.command)),
        Err(e) => Err(Failure::Runtime(e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            tracing::error!("{failure}");
            eprintln!("stowage: {failure}");
            failure.exit_code()
        }
    }
}

async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Controller(args) => run_controller(args).await,
        Command::Node(args) => Ok(node_plugin::run(args).await?),
        Command::Apiserver(args) => run_apiserver(args).await,
        Command::Provisioner(args) => run_provisioner(args).await,
        Command::Up(args) => Ok(up::run(args).await?),
        Command::Mount(args) => Ok(volume::mount(args).await?),
        Command::Unmount(args) => Ok(volume::unmount(args).await?),
        Command::Status(args) => Ok(volume::status(args).await?),
        Command::Bench(command) => Ok(run_bench(command).await?),
    }
}

/// Why a subcommand failed: the one place that turns a failure into the message and
/// the exit code of the process.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Volume(#[from] volume::Error),
    #[error(transparent)]
    Up(#[from] up::Error),
    #[error(transparent)]
    Kubeconfig(#[from] kubeconfig::KubeconfigError),
    #[error("no kubeconfig (give --kubeconfig): {0}")]
    NoKubeconfig(kube::config::InferConfigError),
    #[error("API client: {0}")]
    ApiClient(kube::Error),
    #[error(transparent)]
    Endpoint(#[from] NotAUnixEndpoint),
    #[error(transparent)]
    Metrics(#[from] MetricsEndpointError),
    #[error(transparent)]
    Controllers(#[from] provisioner::controllers::UnknownController),
    #[error("leader election: {0}")]
    LeaderTiming(#[from] provisioner::leader::TimingError),
    #[error("provisioner: {0}")]
    Provisioner(#[from] provisioner::Error),
    /// The controller could not open its state (`stowage controller`).
    #[error("controller: {0}")]
    Controller(csi_controller::Error),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    NodePlugin(#[from] NodePluginError),
    #[error("apiserver: {0}")]
    ApiServerStart(#[from] apiserver::StartError),
    #[error("apiserver: {0}")]
    ApiServerRun(std::io::Error),
    #[error(transparent)]
    Bench(#[from] bench::Error),
}

impl Failure {
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::Runtime(_)
            | Self::Volume(_)
            | Self::Up(_)
            | Self::Kubeconfig(_)
            | Self::NoKubeconfig(_)
            | Self::ApiClient(_)
            | Self::Endpoint(_)
            | Self::Metrics(_)
            | Self::Controllers(_)
            | Self::LeaderTiming(_)
            | Self::Provisioner(_)
            | Self::Controller(_)
            | Self::Serve(_)
            | Self::NodePlugin(_)
            | Self::ApiServerStart(_)
            | Self::ApiServerRun(_)
            | Self::Bench(_) => ExitCode::FAILURE,
        }
    }
}

async fn run_bench(command: BenchCommand) -> Result<(), bench::Error> {
    match command {
        BenchCommand::Apiserver(args) => bench::run_apiserver(args).await,
        BenchCommand::Binder(args) => bench::run_binder(args),
        BenchCommand::Provision(args) => bench::run_provision(args).await,
        BenchCommand::Up(args) => bench::run_up(args).await,
        BenchCommand::Csi(args) => bench::run_csi(args).await,
        BenchCommand::NodeScale(args) => bench::run_node_scale(args).await,
        BenchCommand::ControllerScale(args) => bench::run_controller_scale(args).await,
    }
}

async fn run_controller(args: ControllerArgs) -> Result<(), Failure> {
    let config = ControllerConfig {
        node_id: args.node_id,
        local_root: args.local_root,
        state_dir: args.state_dir,
        enable_attach: args.enable_attach,
        max_volumes_per_node: args.max_volumes_per_node,
    };
    let driver = Driver::open(&config).map_err(Failure::Controller)?;
    tracing::info!(local = config.local_root.is_some(), "controller state open");
    let routes = controller_routes(driver);
    Ok(serve::serve_endpoint("controller", &args.endpoint, args.metrics_address, routes).await?)
}

async fn run_apiserver(args: ApiserverArgs) -> Result<(), Failure> {
    let mut config = apiserver::Config::new(args.listen, args.data);
    config.watch_history = args.watch_history;
    config.token_file = args.token_file;
    config.max_watches_per_user = args.max_watches_per_user as usize;
    config.storage_object_in_use_protection = args.storage_object_in_use_protection;
    let (_, health) = telemetry_endpoint::serve(args.metrics_address, |registry| {
        config.metrics = apiserver::ApiMetrics::register(registry);
    })
    .await?;
    let server = apiserver::ApiServer::bind(config).await?;
    health.set_ready(true);
    println!("kubeconfig: {}", server.kubeconfig().display());
    server
        .run(socket::shutdown_signal())
        .await
        .map_err(Failure::ApiServerRun)
}

async fn run_provisioner(args: ProvisionerArgs) -> Result<(), Failure> {
    let controllers = provisioner::Controllers::parse(&args.controllers)?;
    let client = match &args.kubeconfig {
        Some(path) => kubeconfig::client(path).await?,
        None => {
            let config = kube::Config::infer().await.map_err(Failure::NoKubeconfig)?;
            kube::Client::try_from(config).map_err(Failure::ApiClient)?
        }
    };
    let csi = match &args.csi_endpoint {
        Some(endpoint) => Some(csi_proto::channel::lazy(&socket::socket_path(endpoint)?)),
        None => None,
    };
    let publisher = match (&csi, &args.node) {
        (Some(csi), Some(node)) if args.enable_capacity => {
            Some(provisioner::capacity::Publisher::new(
                client.clone(),
                csi.clone(),
                node.clone(),
                args.capacity_namespace.clone(),
                args.capacity_poll_interval,
            ))
        }
        _ => None,
    };
    let gone_nodes = args.node.is_none().then(|| {
        let interval =
            (args.gone_node_grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
        provisioner::gone_nodes::GoneNodes::new(
            client.clone(),
            args.gone_node_grace,
            args.gone_node_policy,
            interval,
        )
    });
    let scope = match args.node {
        Some(node) => provisioner::Scope::Node(node),
        None => provisioner::Scope::Central,
    };
    let mut metrics = None;
    let (_, health) = telemetry_endpoint::serve(args.metrics_address, |registry| {
        metrics = Some(provisioner::Metrics::register(registry));
    })
    .await?;
    let leader = args.leader_election.then(|| {
        let lease = args
            .leader_election_lease
            .clone()
            .unwrap_or_else(|| match &scope {
                provisioner::Scope::Central => "stowage-provisioner".to_string(),
                provisioner::Scope::Node(node) => format!("stowage-provisioner-{node}"),
            });
        provisioner::leader::LeaderConfig {
            lease_duration: args.leader_election_lease_duration,
            renew_deadline: args.leader_election_renew_deadline,
            retry_period: args.leader_election_retry_period,
            ..provisioner::leader::LeaderConfig::new(
                &args.leader_election_namespace,
                &lease,
                &identity(),
            )
        }
    });
    if let Some(leader) = &leader {
        leader.check()?;
    }
    tracing::info!(
        ?scope,
        leader_election = leader.is_some(),
        controllers = %args.controllers.join(","),
        defer_binding_to = ?args.defer_binding_to.as_ref().map(ToString::to_string),
        "provisioner running"
    );
    let config = provisioner::Config {
        scope,
        csi,
        host_path_allow: args.host_path_allow,
        metrics: metrics.unwrap_or_default(),
        health,
        leader,
        controllers,
        defer_binding_to: args.defer_binding_to,
    };
    let publishing = async {
        if let Some(publisher) = publisher {
            publisher.run(socket::shutdown_signal()).await;
        }
    };
    let watching_nodes = async {
        if let Some(gone_nodes) = gone_nodes {
            gone_nodes.run(socket::shutdown_signal()).await;
        }
    };
    let (result, (), ()) = tokio::join!(
        provisioner::run(client, config, socket::shutdown_signal()),
        publishing,
        watching_nodes
    );
    Ok(result?)
}

/// Who this process is in a Lease: the pod (or host) name and the process id.
/// A Go-style duration as the upstream sidecars take it: `15s`, `1500ms`, `1.5s`, `2m`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, BadDuration> {
    let bad = |why| BadDuration {
        text: text.to_string(),
        why,
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad(Why::NotANumber))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        _ => return Err(bad(Why::Unit)),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| bad(Why::OutOfRange(e)))
}

/// A flag's duration that is not one.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("{text:?}{why}")]
pub(crate) struct BadDuration {
    text: String,
    why: Why,
}

#[derive(Debug, PartialEq, thiserror::Error)]
enum Why {
    #[error(" is not a duration like 15s or 1500ms")]
    NotANumber,
    #[error(": the unit must be ms, s or m")]
    Unit,
    #[error(": {0}")]
    OutOfRange(std::time::TryFromFloatSecsError),
}

fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(up::host_name);
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_the_upstream_sidecars_write_them() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "s", "15h", "-1s", "1..5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn each_failure_is_said_once_with_what_to_look_at_and_fails_the_process() {
        let io = |what: &str| std::io::Error::other(what.to_string());
        let cases: [(Failure, &str); 8] = [
            (
                Failure::Runtime(io("no threads")),
                "cannot start the async runtime: no threads",
            ),
            (
                NotAUnixEndpoint {
                    endpoint: "tcp://x".into(),
                }
                .into(),
                r#"endpoint "tcp://x" must be unix:///absolute/path"#,
            ),
            (
                MetricsEndpointError {
                    address: ([127, 0, 0, 1], 9810).into(),
                    source: io("in use"),
                }
                .into(),
                "metrics endpoint 127.0.0.1:9810: in use",
            ),
            (
                ServeError::Bind {
                    path: "/run/csi.sock".into(),
                    source: io("not a socket"),
                }
                .into(),
                "bind /run/csi.sock: not a socket",
            ),
            (
                NodePluginError::LocalRoot {
                    path: "/var/lib/stowage/local".into(),
                    source: io("read-only"),
                }
                .into(),
                "create /var/lib/stowage/local: read-only",
            ),
            (Failure::ApiServerRun(io("accept")), "apiserver: accept"),
            (
                bench::Error::NothingToDo.into(),
                "nothing to do: give --static N and/or --dynamic N",
            ),
            (
                bench::Error::LifecyclesFailed(3).into(),
                "3 lifecycles failed",
            ),
        ];
        for (failure, said) in cases {
            assert_eq!(failure.to_string(), said);
            assert_eq!(failure.exit_code(), ExitCode::FAILURE, "{said}");
        }
    }
}
