//! The real `stowage` binary as a child process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::csi::Csi;
use crate::wait_for;

/// The binary under test: `$STOWAGE_BIN`, or `target/<profile>/stowage` beside this test.
pub fn stowage_bin() -> PathBuf {
    built_binary("STOWAGE_BIN", "stowage")
}

/// The lean node plugin binary: `$STOWAGE_NODE_BIN`, or `target/<profile>/stowage-node`.
pub fn stowage_node_bin() -> PathBuf {
    built_binary("STOWAGE_NODE_BIN", "stowage-node")
}

fn built_binary(variable: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(variable) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p stowage` first (the test script does)",
        bin.display()
    );
    bin
}

/// A running `stowage` subcommand, killed when dropped.
pub struct Stowage {
    child: Child,
    pub socket: PathBuf,
}

impl Stowage {
    /// Starts `stowage <args>` with `--endpoint unix://<socket>` and waits until Probe answers.
    pub async fn start(subcommand: &str, socket: &Path, args: &[&str]) -> (Self, Csi) {
        let mut command = Command::new(stowage_bin());
        command.arg(subcommand);
        Self::launch(command, &format!("stowage {subcommand}"), socket, args).await
    }

    /// Starts `stowage <subcommand>` under a wrapper command (`wrapper[0] wrapper[1..]
    /// stowage ...`), e.g. `setpriv` to run it with fewer capabilities.
    pub async fn start_wrapped(
        wrapper: &[&str],
        subcommand: &str,
        socket: &Path,
        args: &[&str],
    ) -> (Self, Csi) {
        let (program, wrapper_args) = wrapper.split_first().expect("a wrapper command");
        let mut command = Command::new(program);
        command
            .args(wrapper_args)
            .arg(stowage_bin())
            .arg(subcommand);
        Self::launch(
            command,
            &format!("{program} stowage {subcommand}"),
            socket,
            args,
        )
        .await
    }

    /// Starts the lean `stowage-node` binary, as [`start`](Self::start) does `stowage node`.
    pub async fn start_lean_node(socket: &Path, args: &[&str]) -> (Self, Csi) {
        let command = Command::new(stowage_node_bin());
        Self::launch(command, "stowage-node", socket, args).await
    }

    async fn launch(mut command: Command, what: &str, socket: &Path, args: &[&str]) -> (Self, Csi) {
        let child = command
            .arg("--endpoint")
            .arg(format!("unix://{}", socket.display()))
            .args(args)
            .env(
                "STOWAGE_LOG",
                std::env::var("STOWAGE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn stowage");
        let mut this = Self {
            child,
            socket: socket.to_path_buf(),
        };
        let csi = wait_for("the CSI socket", Duration::from_secs(20), async || {
            if let Ok(Some(status)) = this.child.try_wait() {
                panic!("{what} exited early: {status}");
            }
            let csi = Csi::connect(socket).await.ok()?;
            csi.probe().await.ok()?;
            Some(csi)
        })
        .await;
        (this, csi)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// kill -9: the process gets no chance to clean up.
    pub async fn kill_hard(mut self) {
        kill_hard(&mut self.child).await;
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        terminate(&mut self.child).await
    }
}

/// kill -9 and reap.
pub async fn kill_hard(child: &mut Child) {
    child.start_kill().expect("kill");
    child.wait().await.expect("wait");
}

/// SIGTERM, then wait (at most 10 s) for the exit.
pub async fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().expect("running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("wait")
}

/// `stowage provisioner` as a child process with its metrics endpoint, killed when dropped.
pub struct ProvisionerProcess {
    child: Child,
    pub metrics: std::net::SocketAddr,
}

impl ProvisionerProcess {
    /// Starts it against the API server of `kubeconfig`, with CreateVolume going to
    /// `csi_socket`, and waits until its caches are ready.
    pub async fn start(kubeconfig: &Path, csi_socket: &Path, extra: &[&str]) -> Self {
        Self::spawn(kubeconfig, csi_socket, extra, None).await
    }

    /// [`start`](Self::start) logging at debug level into `log`.
    pub async fn start_logging(
        kubeconfig: &Path,
        csi_socket: &Path,
        extra: &[&str],
        log: &Path,
    ) -> Self {
        Self::spawn(kubeconfig, csi_socket, extra, Some(log)).await
    }

    async fn spawn(
        kubeconfig: &Path,
        csi_socket: &Path,
        extra: &[&str],
        log: Option<&Path>,
    ) -> Self {
        let metrics = crate::http::free_port();
        let mut command = Command::new(stowage_bin());
        if let Some(log) = log {
            let file = std::fs::File::create(log).expect("log file");
            command
                .env("STOWAGE_LOG", "debug")
                .stdout(file.try_clone().expect("log file"))
                .stderr(file);
        } else {
            command.env(
                "STOWAGE_LOG",
                std::env::var("STOWAGE_LOG").unwrap_or_else(|_| "warn".into()),
            );
        }
        let child = command
            .arg("provisioner")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--csi-endpoint")
            .arg(format!("unix://{}", csi_socket.display()))
            .arg("--metrics-address")
            .arg(metrics.to_string())
            .args(extra)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn stowage provisioner");
        let mut this = Self { child, metrics };
        wait_for(
            "the provisioner ready",
            Duration::from_secs(20),
            async || {
                if let Ok(Some(status)) = this.child.try_wait() {
                    panic!("stowage provisioner exited early: {status}");
                }
                let ready = tokio::net::TcpStream::connect(metrics).await.is_ok()
                    && crate::http::get(metrics, "/readyz").await.0 == 200;
                ready.then_some(())
            },
        )
        .await;
        this
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// One sample of its /metrics, e.g. `stowage_provisioner_leader`.
    pub async fn sample(&self, series: &str) -> f64 {
        let (_, body) = crate::http::get(self.metrics, "/metrics").await;
        crate::http::sample(&body, series)
    }

    pub async fn kill_hard(mut self) {
        kill_hard(&mut self.child).await;
    }
}

/// A glibc arena reserves 64 MiB of address space (`HEAP_MAX_SIZE`), mapped without
/// access beyond what it uses; nothing else in the plugin maps that much that way.
const ARENA_RESERVATION: u64 = 32 << 20;

/// glibc malloc arenas of `pid` beyond the main one: anonymous mappings without access
/// and at least [`ARENA_RESERVATION`] long.
pub fn arena_reservations(pid: u32) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    maps.lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let anonymous = fields.len() == 5;
            let no_access = fields.get(1) == Some(&"---p");
            let length = fields
                .first()
                .and_then(|range| range.split_once('-'))
                .and_then(|(start, end)| {
                    Some(u64::from_str_radix(end, 16).ok()? - u64::from_str_radix(start, 16).ok()?)
                })
                .unwrap_or(0);
            anonymous && no_access && length >= ARENA_RESERVATION
        })
        .count()
}
