//! The resident memory of the process serving a node endpoint, found through
//! the socket's peer credentials so that any driver can be measured.

use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use serde_json::{Value, json};

pub struct NodeMemory {
    pid: Option<i32>,
    before_kib: Option<u64>,
    pub after_kib: Option<u64>,
}

impl NodeMemory {
    /// Finds the server behind `socket` and samples its memory now.
    pub fn of(socket: &Path) -> Self {
        let pid = peer_pid(socket);
        Self {
            pid,
            before_kib: pid.and_then(rss_kib),
            after_kib: None,
        }
    }

    /// The resident memory of the server behind `socket` now, 0 when not visible.
    pub fn now_kib(socket: &Path) -> u64 {
        let pid = peer_pid(socket);
        pid.and_then(rss_kib).unwrap_or_default()
    }

    pub fn sample_after(&mut self) {
        self.after_kib = self.pid.and_then(rss_kib);
    }

    pub fn to_json(&self) -> Value {
        json!({
            "node_pid": self.pid,
            "node_rss_kib_before": self.before_kib,
            "node_rss_kib_after": self.after_kib,
        })
    }

    pub fn describe(&self) -> String {
        match (self.pid, self.before_kib, self.after_kib) {
            (Some(pid), Some(before), Some(after)) => format!(
                "node plugin (pid {pid}) resident memory: {:.1} MiB before, {:.1} MiB after\n",
                before as f64 / 1024.0,
                after as f64 / 1024.0
            ),
            _ => "node plugin resident memory: not visible from here (another pid namespace?)\n"
                .into(),
        }
    }
}

fn peer_pid(socket: &Path) -> Option<i32> {
    let stream = UnixStream::connect(socket).ok()?;
    let credentials = getsockopt(&stream, PeerCredentials).ok()?;
    Some(credentials.pid()).filter(|pid| *pid > 0)
}

fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}
