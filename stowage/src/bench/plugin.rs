//! A plugin process the scale benchmarks start, kill and start again: they measure
//! how the plugin's own start grows with what it holds, so they own its process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use csi_proto::v1 as csi;
use csi_proto::v1::node_client::NodeClient;
use tonic::transport::Channel;

/// `stowage-node` (or `stowage node`) serving one socket under a scratch directory.
pub struct Plugin {
    command: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
}

impl Plugin {
    /// `program` is the binary, with `stowage`'s `node` subcommand when it is the
    /// full binary; the flags point every directory into `dir`.
    pub fn new(program: &Path, dir: &Path) -> Self {
        let mut command = vec![program.to_string_lossy().into_owned()];
        if program.file_name().is_some_and(|n| n == "stowage") {
            command.push("node".into());
        }
        let at = |sub: &str| dir.join(sub).to_string_lossy().into_owned();
        command.extend([
            "--endpoint".into(),
            format!("unix://{}", at("plugin.sock")),
            "--node-id".into(),
            "bench-node".into(),
            "--local-root".into(),
            at("local"),
            "--state-dir".into(),
            at("state"),
            "--kubelet-dir".into(),
            at("kubelet"),
        ]);
        Self {
            command,
            dir: dir.to_path_buf(),
            child: None,
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
    pub async fn start(&mut self) -> Result<Duration, String> {
        std::fs::create_dir_all(self.kubelet_dir())
            .map_err(|e| format!("create {}: {e}", self.kubelet_dir().display()))?;
        let log = std::fs::File::create(self.dir.join("plugin.log"))
            .map_err(|e| format!("create the plugin's log: {e}"))?;
        let (program, args) = self
            .command
            .split_first()
            .ok_or_else(|| "no plugin program".to_string())?;
        let started = Instant::now();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start {program}: {e}"))?;
        self.child = Some(child);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "the plugin exited ({status}); see {}",
                    self.dir.join("plugin.log").display()
                ));
            }
            if answers(&self.socket()).await {
                return Ok(started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(120) {
                return Err("the plugin did not answer within 120 s".into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// SIGKILL, as a crash or an evicted pod: nothing is cleaned up on the way out.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.kill();
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
pub async fn connect(socket: &Path) -> Result<Channel, String> {
    csi_proto::channel::connect(socket)
        .await
        .map_err(|e| format!("connect {}: {e}", socket.display()))
}

/// Refuses to run in the mount namespace it was started from: the benchmark makes
/// thousands of mounts, and a killed plugin leaves them; run under
/// `unshare -m --propagation private`, the namespace takes them away when it ends.
pub fn require_private_mount_namespace() -> Result<(), String> {
    let parent = nix::unistd::getppid();
    let namespace = |pid: &str| {
        std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
            .map_err(|e| format!("read /proc/{pid}/ns/mnt: {e}"))
    };
    if namespace("self")? == namespace(&parent.to_string())? {
        return Err(
            "run this under `unshare -m --propagation private`: it makes thousands of mounts"
                .into(),
        );
    }
    Ok(())
}
