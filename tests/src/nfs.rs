//! Real NFSv3 servers for the tests: `nfs3_server` in-process (fast) and nfs-ganesha
//! (an independent implementation, in userspace on loopback).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nfs3_server::memfs::{MemFs, MemFsConfig};
use nfs3_server::tcp::{NFSTcp, NFSTcpListener};
use tokio::task::JoinHandle;

use crate::vm::Place;
use crate::wait_for;

/// An in-memory NFSv3 server on 127.0.0.1; its portmapper answers on the same port.
pub struct MemNfs {
    pub port: u16,
    task: JoinHandle<()>,
}

impl MemNfs {
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Starts (or restarts) on a given port, with a fresh empty filesystem.
    pub async fn start_on(port: u16) -> Self {
        let fs = MemFs::new(MemFsConfig::default()).expect("memfs");
        let listener = NFSTcpListener::bind(&format!("127.0.0.1:{port}"), fs)
            .await
            .expect("bind NFS");
        let port = listener.get_listen_port();
        let task = tokio::spawn(async move {
            if let Err(e) = listener.handle_forever().await {
                eprintln!("in-process NFS server stopped: {e}");
            }
        });
        Self { port, task }
    }

    /// The `server` parameter for a StorageClass pointing here.
    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops accepting connections (the port closes).
    pub async fn stop(self) -> u16 {
        self.task.abort();
        let _ = self.task.await;
        self.port
    }
}

/// nfs-ganesha serving one directory over NFSv3, registered with rpcbind on port 111.
/// On the host, one at a time per machine: the tests that use it run in a serial
/// nextest group. In a [`Sandbox`](crate::vm::Sandbox) it has a network and rpcbind
/// of its own.
pub struct Ganesha {
    child: Option<tokio::process::Child>,
    rpcbind: Option<tokio::process::Child>,
    dir: PathBuf,
    place: Place,
    _temp: Option<tempfile::TempDir>,
}

impl Ganesha {
    /// Starts ganesha on the host exporting a fresh directory at `/<dir>/export`.
    pub async fn start() -> Self {
        require_tools();
        ensure_rpcbind().await;
        let temp = tempfile::Builder::new()
            .prefix("stowage-ganesha")
            .tempdir()
            .expect("tempdir");
        let dir = temp.path().to_path_buf();
        Self::launch_in(Place::host(), dir, None, Some(temp)).await
    }

    /// Starts ganesha and its own rpcbind in a sandbox, exporting `<dir>/export`
    /// (made here), with its configuration and log in `dir`.
    pub async fn start_in(place: Place, dir: &std::path::Path) -> Self {
        require_tools();
        let rpcbind = place
            .command("rpcbind")
            .args(["-w", "-f"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn rpcbind in the sandbox");
        Self::launch_in(place, dir.to_path_buf(), Some(rpcbind), None).await
    }

    async fn launch_in(
        place: Place,
        dir: PathBuf,
        rpcbind: Option<tokio::process::Child>,
        temp: Option<tempfile::TempDir>,
    ) -> Self {
        std::fs::create_dir_all(dir.join("export")).expect("mkdir export");
        let mut this = Self {
            child: None,
            rpcbind,
            dir,
            place,
            _temp: temp,
        };
        this.launch().await;
        this
    }

    pub fn export_dir(&self) -> PathBuf {
        self.dir.join("export")
    }

    pub fn share(&self) -> String {
        self.export_dir().display().to_string()
    }

    async fn launch(&mut self) {
        let conf = self.dir.join("ganesha.conf");
        // In a sandbox, loopback is its only interface: getaddrinfo (with AI_ADDRCONFIG)
        // cannot resolve 127.0.0.1 there, and there is nothing else to bind to anyway.
        let bind = if self.rpcbind.is_some() {
            ""
        } else {
            "Bind_addr = 127.0.0.1;"
        };
        std::fs::write(&conf, config(&self.export_dir(), bind)).expect("write ganesha.conf");
        let child = self
            .place
            .command("ganesha.nfsd")
            .args(["-F", "-N", "NIV_EVENT", "-f"])
            .arg(&conf)
            .arg("-L")
            .arg(self.dir.join("ganesha.log"))
            .arg("-p")
            .arg(self.dir.join("ganesha.pid"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn ganesha.nfsd");
        self.child = Some(child);
        let log = self.dir.join("ganesha.log");
        let place = self.place;
        wait_for(
            "ganesha to register MOUNT with rpcbind",
            Duration::from_secs(60),
            async || {
                let out = place
                    .command("rpcinfo")
                    .args(["-p", "127.0.0.1"])
                    .output()
                    .await
                    .ok()?;
                let text = String::from_utf8_lossy(&out.stdout);
                let ready = text.lines().any(|l| {
                    l.contains("mountd") && l.contains("tcp") && l.contains(&MNT_PORT.to_string())
                });
                if !ready
                    && let Some(child) = &mut self.child
                    && let Ok(Some(status)) = child.try_wait()
                {
                    panic!(
                        "ganesha exited: {status}; log: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                ready.then_some(())
            },
        )
        .await;
    }

    /// Kills the server (the export's contents stay on disk).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        unregister(self.place).await;
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }
}

impl Drop for Ganesha {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        if let Some(rpcbind) = &mut self.rpcbind {
            // Its registrations go with it.
            let _ = rpcbind.start_kill();
            return;
        }
        let _ = std::process::Command::new("rpcinfo")
            .args(["-d", "100005", "3"])
            .output();
        let _ = std::process::Command::new("rpcinfo")
            .args(["-d", "100003", "3"])
            .output();
    }
}

const NFS_PORT: u16 = 20490;
const MNT_PORT: u16 = 20491;

fn config(export: &Path, bind: &str) -> String {
    format!(
        r#"NFS_CORE_PARAM {{
    Protocols = 3;
    NFS_Port = {NFS_PORT};
    MNT_Port = {MNT_PORT};
    NLM_Port = 20492;
    Rquota_Port = 20493;
    {bind}
    Enable_NLM = false;
    Enable_RQUOTA = false;
}}
NFSV4 {{ Graceless = true; }}
EXPORT_DEFAULTS {{ Access_Type = RW; Squash = No_Root_Squash; SecType = sys; Protocols = 3; Transports = TCP; }}
EXPORT {{
    Export_Id = 1;
    Path = {path};
    Pseudo = {path};
    FSAL {{ Name = VFS; }}
}}
"#,
        path = export.display()
    )
}

fn require_tools() {
    for tool in ["ganesha.nfsd", "rpcbind", "rpcinfo"] {
        assert!(
            which(tool),
            "{tool} is missing: install Debian's nfs-ganesha nfs-ganesha-vfs rpcbind (the test script does)"
        );
    }
}

fn which(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn ensure_rpcbind() {
    let running = tokio::process::Command::new("rpcinfo")
        .args(["-p", "127.0.0.1"])
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if !running {
        let status = tokio::process::Command::new("rpcbind")
            .arg("-w")
            .status()
            .await
            .expect("run rpcbind");
        assert!(status.success(), "rpcbind failed to start");
    }
    unregister(Place::host()).await;
}

/// Drops stale MOUNT/NFS registrations a killed ganesha left in rpcbind.
async fn unregister(place: Place) {
    for (prog, vers) in [("100005", "1"), ("100005", "3"), ("100003", "3")] {
        let _ = place
            .command("rpcinfo")
            .args(["-d", prog, vers])
            .output()
            .await;
    }
}
