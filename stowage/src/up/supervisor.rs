//! Runs each component as a child process of this binary, restarts one that dies
//! (with backoff), and stops them in the reverse order of their start.
//!
//! Each child's stdin is a pipe whose only writer is this process, and each child
//! runs with `--exit-with-stdin`: when this process ends however it ends (SIGKILL
//! included) the kernel closes the pipe, the child reads end of file and stops.
//! Unlike PR_SET_PDEATHSIG, which fires when the spawning *thread* exits, this
//! follows the process, and it has no window between fork and the child's setup.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A component: a name for the logs and the `stowage` arguments that run it.
pub struct Component {
    pub name: &'static str,
    pub args: Vec<OsString>,
}

struct Running {
    name: &'static str,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

#[derive(Default)]
pub struct Supervisor {
    running: Vec<Running>,
}

const GRACE: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A child that ran this long before dying starts again without delay.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

impl Supervisor {
    pub fn start(&mut self, component: Component) -> Result<(), super::Error> {
        let exe = std::env::current_exe().map_err(super::Error::OwnPath)?;
        let (stop, stopped) = watch::channel(false);
        let name = component.name;
        let task = tokio::spawn(keep_running(exe, component, stopped));
        self.running.push(Running { name, stop, task });
        Ok(())
    }

    /// Stops every component, the last started first, each with a grace period.
    pub async fn shutdown(self) {
        for running in self.running.into_iter().rev() {
            tracing::info!(component = running.name, "stopping");
            let _ = running.stop.send(true);
            let _ = running.task.await;
        }
    }
}

async fn keep_running(
    exe: std::path::PathBuf,
    component: Component,
    mut stopped: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = Instant::now();
        let mut child = match Command::new(&exe)
            .arg(crate::EXIT_WITH_STDIN)
            .args(&component.args)
            .stdin(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(component = component.name, "cannot start: {e}");
                return;
            }
        };
        // Held apart from the child: `Child::wait` closes the stdin it holds, and
        // closing this end is what tells the child its parent is gone.
        let _parent_alive = child.stdin.take();
        tokio::select! {
            status = child.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                if started.elapsed() > HEALTHY_RUN {
                    backoff = Duration::from_millis(500);
                }
                tracing::warn!(component = component.name, %status, "exited; restarting in {backoff:?}");
            }
            () = stop_requested(&mut stopped) => {
                stop_child(component.name, &mut child).await;
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            () = stop_requested(&mut stopped) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    // A closed channel means the supervisor is gone: stop as well.
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// SIGTERM, then SIGKILL if the child is still there after the grace period.
async fn stop_child(name: &str, child: &mut Child) {
    if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    match tokio::time::timeout(GRACE, child.wait()).await {
        Ok(Ok(status)) if !status.success() => {
            tracing::warn!(component = name, %status, "stopped");
        }
        Ok(_) => {}
        Err(_) => {
            tracing::warn!(component = name, "did not stop in {GRACE:?}; killing it");
            let _ = child.kill().await;
        }
    }
}
