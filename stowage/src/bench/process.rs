//! The processes the benchmarks measure, as children of the benchmark: a served
//! `stowage apiserver` or `stowage up` (its memory read alone, and the benchmark's client
//! work not sharing its runtime), and a node plugin the scale benchmarks start, kill and
//! start again (they measure how its own start grows with what it holds).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use csi_proto::v1 as csi;
use csi_proto::v1::node_client::NodeClient;
use kube::Client;
use nix::sys::signal::Signal;
use tokio::process::Command;
use tonic::transport::Channel;

use super::error::Error;

/// How long a started process may take to serve.
const STARTUP: Duration = Duration::from_secs(120);

/// Where a child's log goes.
pub enum Log {
    /// Appended to this file, filtered as the benchmark's own (STOWAGE_LOG is inherited).
    File(PathBuf),
    /// To the benchmark's stderr, with this filter (`warn` unless told otherwise).
    Inherit(String),
}

/// One child process, started (again) from the same command line, waited for until
/// it serves; killed when dropped.
pub struct Child {
    /// What it is called in messages.
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    log: Log,
    child: Option<tokio::process::Child>,
}

impl Child {
    pub fn new(name: String, program: &Path, args: Vec<OsString>, log: Log) -> Self {
        Self {
            name,
            program: program.to_path_buf(),
            args,
            log,
            child: None,
        }
    }

    /// Spawns the process and polls `serving` every `poll` until it answers; returns
    /// the answer and the time from spawn to it. A process that exits first, or is not
    /// serving after [`STARTUP`], is an error.
    pub async fn start<T>(
        &mut self,
        poll: Duration,
        mut serving: impl AsyncFnMut() -> Option<T>,
    ) -> Result<(T, Duration), Error> {
        let mut command = Command::new(&self.program);
        let log_file = match &self.log {
            Log::File(path) => {
                // Appended to: a restarted child's log follows its first life's.
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| Error::Create {
                        path: path.clone(),
                        source,
                    })?;
                command.stderr(file);
                Some(path.clone())
            }
            Log::Inherit(filter) => {
                command.env("STOWAGE_LOG", filter);
                None
            }
        };
        let started = Instant::now();
        let child = command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Spawn {
                name: self.name.clone(),
                source,
            })?;
        let child = self.child.insert(child);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Exited {
                    name: self.name.clone(),
                    status,
                    log: log_file,
                });
            }
            if let Some(answer) = serving().await {
                return Ok((answer, started.elapsed()));
            }
            if started.elapsed() > STARTUP {
                return Err(Error::NotServing {
                    name: self.name.clone(),
                    within: STARTUP,
                    log: log_file,
                });
            }
            tokio::time::sleep(poll).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// Sends `signal` and waits up to `grace` for the process to end.
    async fn end(&mut self, signal: Signal, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
        let _ = tokio::time::timeout(grace, child.wait()).await;
    }

    /// Asks the process to stop (SIGINT, as Ctrl-C) and waits up to 30 s for it.
    pub async fn stop(&mut self) {
        self.end(Signal::SIGINT, Duration::from_secs(30)).await;
    }

    /// SIGKILL, as a crash or an evicted pod: nothing is cleaned up on the way out.
    pub async fn kill(&mut self) {
        self.end(Signal::SIGKILL, STARTUP).await;
    }
}

/// A child `stowage` process serving on a loopback port with its state in `data`;
/// killed when dropped.
pub struct Served {
    pub child: Child,
    pub data: PathBuf,
    pub client: Client,
}

impl Served {
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// Asks the process to stop (SIGINT, as Ctrl-C) and waits up to 30 s for it.
    pub async fn stop(mut self) {
        self.child.stop().await;
    }
}

/// A loopback port free at the moment of asking.
pub fn free_port() -> Result<u16, Error> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(Error::FreePort)?
        .port();
    Ok(port)
}

/// `stowage <subcommand> --listen 127.0.0.1:PORT --data DATA [extra...]` logging with
/// `log` to the benchmark's stderr, waited for until a kube client from
/// `DATA/kubeconfig` lists namespaces.
pub async fn serve(
    subcommand: &str,
    data: &Path,
    extra: &[&str],
    log: &str,
) -> Result<Served, Error> {
    let exe = std::env::current_exe().map_err(Error::OwnPath)?;
    let port = free_port()?;
    let mut args: Vec<OsString> = vec![subcommand.into()];
    args.extend(extra.iter().map(OsString::from));
    args.extend([
        "--listen".into(),
        format!("127.0.0.1:{port}").into(),
        "--data".into(),
        data.into(),
    ]);
    let name = format!("stowage {subcommand}");
    let mut child = Child::new(name, &exe, args, Log::Inherit(log.to_string()));
    let kubeconfig = data.join("kubeconfig");
    let (client, _) = child
        .start(Duration::from_millis(100), async || {
            answering(&kubeconfig).await
        })
        .await?;
    Ok(Served {
        child,
        data: data.to_path_buf(),
        client,
    })
}

async fn answering(kubeconfig: &Path) -> Option<Client> {
    use k8s_openapi::api::core::v1::Namespace;
    let client = crate::kubeconfig::client(kubeconfig).await.ok()?;
    kube::Api::<Namespace>::all(client.clone())
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .ok()?;
    Some(client)
}

/// `stowage-node` (or `stowage node`) serving one socket under a scratch directory.
pub struct Plugin {
    dir: PathBuf,
    child: Child,
}

impl Plugin {
    /// `program` is the binary, with `stowage`'s `node` subcommand when it is the
    /// full binary; the flags point every directory into `dir`.
    pub fn new(program: &Path, dir: &Path) -> Self {
        let mut args: Vec<OsString> = Vec::new();
        if program.file_name().is_some_and(|n| n == "stowage") {
            args.push("node".into());
        }
        let mut endpoint = OsString::from("unix://");
        endpoint.push(dir.join("plugin.sock"));
        args.extend([
            "--endpoint".into(),
            endpoint,
            "--node-id".into(),
            "bench-node".into(),
            "--local-root".into(),
            dir.join("local").into(),
            "--state-dir".into(),
            dir.join("state").into(),
            "--kubelet-dir".into(),
            dir.join("kubelet").into(),
        ]);
        Self {
            dir: dir.to_path_buf(),
            child: Child::new(
                program.display().to_string(),
                program,
                args,
                Log::File(dir.join("plugin.log")),
            ),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("plugin.sock")
    }

    /// Where held and measured volumes' staging and target paths go.
    pub fn kubelet_dir(&self) -> PathBuf {
        self.dir.join("kubelet")
    }

    /// Starts the process and waits until it answers NodeGetCapabilities; returns the
    /// time from spawn to that first answer.
    pub async fn start(&mut self) -> Result<Duration, Error> {
        create_dir(&self.kubelet_dir())?;
        let socket = self.socket();
        let (_, serving) = self
            .child
            .start(Duration::from_millis(2), async || {
                answers(&socket).await.then_some(())
            })
            .await?;
        Ok(serving)
    }

    /// SIGKILL, as a crash or an evicted pod: nothing is cleaned up on the way out.
    pub async fn kill(&mut self) {
        self.child.kill().await;
    }
}

async fn answers(socket: &Path) -> bool {
    let Ok(channel) = csi_proto::channel::connect(socket).await else {
        return false;
    };
    NodeClient::new(channel)
        .node_get_capabilities(csi::NodeGetCapabilitiesRequest {})
        .await
        .is_ok()
}

/// A channel to the plugin's socket.
pub async fn connect(socket: &Path) -> Result<Channel, Error> {
    csi_proto::channel::connect(socket)
        .await
        .map_err(|source| Error::Connect {
            socket: socket.to_path_buf(),
            source,
        })
}

/// `mkdir -p`, the path named if it fails.
pub fn create_dir(path: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(|source| Error::Create {
        path: path.to_path_buf(),
        source,
    })
}

/// A file's text, the path named if it cannot be read.
fn read(path: PathBuf) -> Result<String, Error> {
    std::fs::read_to_string(&path).map_err(|source| Error::Read { path, source })
}

/// Refuses to run in the mount namespace it was started from: the benchmark makes
/// thousands of mounts, and a killed plugin leaves them; run under
/// `unshare -m --propagation private`, the namespace takes them away when it ends.
pub fn require_private_mount_namespace() -> Result<(), Error> {
    let parent = nix::unistd::getppid();
    let namespace = |pid: &str| {
        let path = PathBuf::from(format!("/proc/{pid}/ns/mnt"));
        std::fs::read_link(&path).map_err(|source| Error::Read { path, source })
    };
    if namespace("self")? == namespace(&parent.to_string())? {
        return Err(Error::SharedMountNamespace);
    }
    Ok(())
}

/// Resident and peak resident memory of a process, in bytes (`/proc/PID/status`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss: u64,
    pub hwm: u64,
}

pub fn memory(pid: u32) -> Result<Memory, Error> {
    let status = read(PathBuf::from(format!("/proc/{pid}/status")))?;
    Ok(parse_memory(&status))
}

fn parse_memory(status: &str) -> Memory {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    Memory {
        rss: field("VmRSS:"),
        hwm: field("VmHWM:"),
    }
}

pub const MIB: f64 = 1024.0 * 1024.0;

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that writes its STOWAGE_LOG to `dir/filter` and stays up.
    fn reporting_child(dir: &Path, log: Log) -> Child {
        let script = format!(
            "printf %s \"$STOWAGE_LOG\" > {0}/filter.tmp && mv {0}/filter.tmp {0}/filter && exec sleep 30",
            dir.display()
        );
        Child::new(
            "reporter".into(),
            Path::new("/bin/sh"),
            vec!["-c".into(), script.into()],
            log,
        )
    }

    async fn filter_seen(dir: &Path, log: Log) -> String {
        let mut child = reporting_child(dir, log);
        let path = dir.join("filter");
        let (filter, _) = child
            .start(Duration::from_millis(10), async || {
                std::fs::read_to_string(&path).ok()
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        child.kill().await;
        filter
    }

    #[tokio::test]
    async fn a_child_logging_to_the_benchmarks_stderr_gets_the_filter_it_was_given() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let filter = filter_seen(dir.path(), Log::Inherit("info,provisioner=debug".into())).await;
        assert_eq!(filter, "info,provisioner=debug");
    }

    #[tokio::test]
    async fn a_child_that_exits_before_serving_names_its_log() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = dir.path().join("child.log");
        let mut child = Child::new(
            "quitter".into(),
            Path::new("/bin/sh"),
            vec!["-c".into(), "exit 3".into()],
            Log::File(log.clone()),
        );
        let refused = child
            .start(Duration::from_millis(10), async || None::<()>)
            .await
            .expect_err("it exits");
        assert_eq!(
            refused.to_string(),
            format!("quitter exited (exit status: 3); see {}", log.display())
        );
    }

    #[test]
    fn memory_fields_are_read_in_bytes() {
        let status = "Name:\tstowage\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t9\n";
        let memory = parse_memory(status);
        assert_eq!(memory.rss, 100 * 1024 * 1024);
        assert_eq!(memory.hwm, 200 * 1024 * 1024);
        assert_eq!(parse_memory("nothing here").rss, 0);
    }
}
