//! Helpers for the end-to-end tests: start the real `stowage` binary, talk CSI to it
//! over its unix socket, and run real NFSv3 servers (in-process and nfs-ganesha).

pub mod api;
pub mod csi;
pub mod driver;
pub mod http;
pub mod mounts;
pub mod nfs;
pub mod process;
pub mod refusal;
pub mod relay;
pub mod up;
pub mod vm;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks `check` every 20 ms for the whole `window`, failing the first time it does not
/// hold. For a negative ("nothing writes this again", "the standby binds nothing"), which
/// no event ends early: the window is how long the test watches for the wrong write.
pub async fn holds_for(what: &str, window: Duration, mut check: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + window;
    loop {
        assert!(check().await, "{what} stopped holding within {window:?}");
        if Instant::now() >= end {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every file at or below `dir`, depth first (none when it cannot be read).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// Runs `sh -c script` as uid 1000 with only the group `gid` (a pod's non-root user and
/// its fsGroup), started in `volume`: a container sees its volume at its own mount
/// point, not through the kubelet's 0750 directories.
pub fn as_pod_user(volume: &Path, gid: &str, script: &str) -> std::process::Output {
    std::process::Command::new("setpriv")
        .current_dir(volume)
        .args(["--reuid", "1000", "--regid", gid, "--clear-groups"])
        .args(["sh", "-c", script])
        .output()
        .expect("setpriv")
}
