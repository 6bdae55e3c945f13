//! The system under measurement as its own process: `stowage apiserver` or `stowage up`
//! started from this binary with a temporary data directory, so that its memory is
//! read alone and the benchmark's client work does not share its runtime.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kube::Client;
use tokio::process::{Child, Command};

/// How long a started process may take to serve.
const STARTUP: Duration = Duration::from_secs(120);

/// A child `stowage` process serving on a loopback port with its state in `data`;
/// killed when dropped.
pub struct Served {
    pub child: Child,
    pub data: PathBuf,
    pub client: Client,
}

impl Served {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Asks the process to stop (SIGINT, as Ctrl-C) and waits up to 30 s for it.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

/// A loopback port free at the moment of asking.
pub fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// `stowage <subcommand> --listen 127.0.0.1:PORT --data DATA [extra...]`, waited for
/// until a kube client from `DATA/kubeconfig` lists namespaces.
pub async fn serve(subcommand: &str, data: &Path, extra: &[&str]) -> Result<Served, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let port = free_port()?;
    let child = Command::new(exe)
        .arg(subcommand)
        .args(extra)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data")
        .arg(data)
        .env("STOWAGE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("start stowage {subcommand}: {e}"))?;
    let kubeconfig = data.join("kubeconfig");
    let deadline = Instant::now() + STARTUP;
    loop {
        if let Some(client) = answering(&kubeconfig).await {
            return Ok(Served {
                child,
                data: data.to_path_buf(),
                client,
            });
        }
        if Instant::now() > deadline {
            return Err(format!(
                "stowage {subcommand} did not serve within {STARTUP:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

/// Resident and peak resident memory of a process, in bytes (`/proc/PID/status`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss: u64,
    pub hwm: u64,
}

pub fn memory(pid: u32) -> Result<Memory, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
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

    #[test]
    fn memory_fields_are_read_in_bytes() {
        let status = "Name:\tstowage\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t9\n";
        let memory = parse_memory(status);
        assert_eq!(memory.rss, 100 * 1024 * 1024);
        assert_eq!(memory.hwm, 200 * 1024 * 1024);
        assert_eq!(parse_memory("nothing here").rss, 0);
    }
}
