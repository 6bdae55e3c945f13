//! A network and mount namespace of the test's own, where nfs-ganesha, its rpcbind,
//! the host-side components and qemu run together: qemu's user networking makes the
//! namespace's loopback the guests' gateway (10.0.2.2), nothing a guest sends can leave
//! the namespace, and parallel tests (and the host's own rpcbind) never collide.

use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::process::{Child, Stdio};

/// The namespace, held open by a sleeping process.
pub struct Sandbox {
    holder: Child,
}

impl Sandbox {
    pub fn new() -> Self {
        // A private /run, so rpcbind's socket and lock do not meet the host's.
        let setup = "mount -t tmpfs tmpfs /run && mkdir -p /run/rpcbind /run/ganesha \
                     && ip link set lo up && echo ready && exec sleep infinity";
        let mut holder = std::process::Command::new("unshare")
            .args([
                "--net",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
            ])
            .arg(setup)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare a network and mount namespace (util-linux, root)");
        let mut line = String::new();
        let stdout = holder.stdout.take().expect("holder stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the namespace's readiness");
        assert_eq!(line.trim(), "ready", "the namespace could not be set up");
        Self { holder }
    }

    /// A command that runs inside the namespace, killed when dropped.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        let mut command = self.place().command(program);
        command.kill_on_drop(true);
        command
    }

    /// Where processes of this namespace run, for helpers that start their own.
    pub fn place(&self) -> Place {
        Place {
            holder: Some(self.holder.id()),
        }
    }

    /// Gives the namespace's loopback one more address, e.g. [`HOST_FROM_GUEST`]
    /// (crate::vm::HOST_FROM_GUEST), so that servers here and guests name a server
    /// the same way.
    pub fn add_address(&self, address: &str) {
        let status = std::process::Command::new("nsenter")
            .arg("--target")
            .arg(self.holder.id().to_string())
            .args(["--net", "--", "ip", "addr", "add"])
            .arg(format!("{address}/32"))
            .args(["dev", "lo"])
            .status()
            .expect("run ip addr add");
        assert!(status.success(), "ip addr add {address} failed");
    }

    /// Moves the calling thread into the namespace's network, so that its own
    /// connections (a kube client, gRPC over TCP) reach what listens there.
    pub fn enter_network(&self) {
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", self.holder.id()))
            .expect("open the namespace's net ns");
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("setns into the test's network namespace");
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Where a helper process runs: on the host as it is, or inside a sandbox.
#[derive(Debug, Clone, Copy, Default)]
pub struct Place {
    holder: Option<u32>,
}

impl Place {
    pub fn host() -> Self {
        Self::default()
    }

    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        match self.holder {
            None => tokio::process::Command::new(program),
            Some(pid) => {
                let mut command = tokio::process::Command::new("nsenter");
                command
                    .arg("--target")
                    .arg(pid.to_string())
                    .args(["--net", "--mount", "--"])
                    .arg(program);
                command
            }
        }
    }
}

/// Forwards the sandbox's `127.0.0.1:port` to `address:port`, for a server that
/// listens on [`HOST_FROM_GUEST`](crate::vm::HOST_FROM_GUEST) only: qemu's user
/// network delivers a guest's connections to that address at the host's loopback.
/// Call it on a thread that [entered](Sandbox::enter_network) the sandbox's network;
/// it forwards until the runtime stops.
pub async fn forward_loopback(address: &str, port: u16) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the loopback forward");
    let upstream = format!("{address}:{port}");
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
}
