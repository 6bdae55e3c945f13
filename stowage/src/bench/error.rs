//! Why a benchmark could not run or finish: one variant per thing that went wrong;
//! main.rs prints it.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use driver_contract::socket::NotAUnixEndpoint;

use super::plot::PlotError;
use crate::capabilities::Refused;
use crate::kubeconfig::KubeconfigError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The benchmark's arguments.
    #[error("nothing to do: give --static N and/or --dynamic N")]
    NothingToDo,
    #[error("{flag} {text:?} is not a size")]
    NotASize { flag: &'static str, text: String },
    #[error(transparent)]
    Endpoint(#[from] NotAUnixEndpoint),

    // Files and the processes it starts.
    #[error("a temporary directory: {0}")]
    TempDir(std::io::Error),
    #[error("create {}: {source}", .path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("this binary's path: {0}")]
    OwnPath(std::io::Error),
    #[error("a free loopback port: {0}")]
    FreePort(std::io::Error),
    #[error("start {name}: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },
    #[error("{name} exited ({status}){}", see(.log))]
    Exited {
        name: String,
        status: ExitStatus,
        /// Where its stderr went, when not to the benchmark's.
        log: Option<PathBuf>,
    },
    #[error("{name} did not serve within {within:?}{}", see(.log))]
    NotServing {
        name: String,
        within: Duration,
        log: Option<PathBuf>,
    },
    #[error("run this under `unshare -m --propagation private`: it makes thousands of mounts")]
    SharedMountNamespace,

    // Components it runs in its own process.
    #[error("the API server's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("apiserver: {0}")]
    ApiServer(#[from] apiserver::StartError),
    #[error("the API server's thread ended before it served")]
    ApiServerGone,
    #[error("controller: {0}")]
    Controller(#[from] csi_controller::Error),
    #[error("bind {}: {source}", .path.display())]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a worker: {0}")]
    Worker(#[from] tokio::task::JoinError),

    // The Kubernetes API.
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    /// A request about `what` (a create, a list, a patch) failed.
    #[error("{what}: {source}")]
    Api { what: String, source: kube::Error },
    /// An object built from a JSON literal did not deserialize: a bug in the benchmark.
    #[error("the {what} manifest: {source}")]
    Manifest {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("LIST {path}: {source}")]
    ListRequest {
        path: &'static str,
        source: kube::core::request::Error,
    },
    #[error("LIST {path}: {source}")]
    ListAnswer {
        path: &'static str,
        source: serde_json::Error,
    },
    #[error("LIST {path} answered {got} items, not {expected}")]
    ListCount {
        path: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("watch: {0}")]
    Watch(kube::Error),
    #[error("the watch ended early")]
    WatchEnded,
    #[error("no watch event within {0:?}")]
    WatchSilent(Duration),
    #[error("only {bound} of {total} claims Bound after {after:?}")]
    NotBound {
        bound: usize,
        total: usize,
        after: Duration,
    },
    #[error("stowage status did not pass within {0:?}")]
    StatusFailing(Duration),

    // The CSI driver under test.
    #[error("connect {}: {}", .socket.display(), with_causes(.source))]
    Connect {
        socket: PathBuf,
        source: tonic::transport::Error,
    },
    #[error(transparent)]
    Capabilities(#[from] Refused),
    #[error("{call}: {}", .status.message())]
    Rpc {
        call: &'static str,
        status: tonic::Status,
    },
    #[error("{call} of {volume}: {}", .status.message())]
    VolumeRpc {
        call: &'static str,
        volume: String,
        status: tonic::Status,
    },
    #[error("CreateVolume of {0} answered no volume")]
    NoVolume(String),
    #[error("the controller endpoint does not offer CREATE_DELETE_VOLUME; try --type ephemeral")]
    NoCreateDelete,
    #[error("write the clone source: {0}")]
    CloneSource(std::io::Error),
    #[error("ListVolumes walked {listed} volumes {when}, {exist} exist")]
    ListVolumes {
        listed: usize,
        exist: usize,
        when: &'static str,
    },

    // What the run found.
    #[error("{0} lifecycles failed")]
    LifecyclesFailed(usize),
    #[error("{0} held volumes could not be released")]
    NotReleased(usize),
    #[error("{0} volumes could not be deleted")]
    NotDeleted(usize),
    #[error(transparent)]
    Plot(#[from] PlotError),
}

/// Where to look for more, when a process's stderr went to a file.
fn see(log: &Option<PathBuf>) -> String {
    log.as_ref()
        .map(|log| format!("; see {}", log.display()))
        .unwrap_or_default()
}

/// An error and what caused it, for errors that say little alone (tonic's transport
/// error is "transport error"; its source says which file or connection failed).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut said = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        // Wrappers often repeat their source's words; say them once.
        let text = next.to_string();
        if !said.ends_with(&text) {
            said.push_str(": ");
            said.push_str(&text);
        }
        cause = next.source();
    }
    said
}

/// A request about `what` to the API failed.
pub fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Api { what, source }
}

/// An object from a JSON literal, `what` naming it if it does not deserialize.
pub fn manifest<T: serde::de::DeserializeOwned>(
    what: &'static str,
    value: serde_json::Value,
) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|source| Error::Manifest { what, source })
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn a_process_that_failed_points_at_its_log_when_it_has_one() {
        let cases = [
            (
                Error::Exited {
                    name: "stowage-node".into(),
                    status: ExitStatus::from_raw(1 << 8),
                    log: Some("/tmp/b/plugin.log".into()),
                },
                "stowage-node exited (exit status: 1); see /tmp/b/plugin.log",
            ),
            (
                Error::Exited {
                    name: "stowage up".into(),
                    status: ExitStatus::from_raw(9),
                    log: None,
                },
                "stowage up exited (signal: 9 (SIGKILL))",
            ),
            (
                Error::NotServing {
                    name: "stowage-node".into(),
                    within: Duration::from_secs(120),
                    log: Some("/tmp/b/plugin.log".into()),
                },
                "stowage-node did not serve within 120s; see /tmp/b/plugin.log",
            ),
            (
                Error::NotServing {
                    name: "stowage apiserver".into(),
                    within: Duration::from_secs(120),
                    log: None,
                },
                "stowage apiserver did not serve within 120s",
            ),
        ];
        for (error, said) in cases {
            assert_eq!(error.to_string(), said);
        }
    }

    #[tokio::test]
    async fn a_socket_that_cannot_be_reached_says_why_not_only_transport_error() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let socket = dir.path().join("absent.sock");
        let refused = crate::bench::process::connect(&socket)
            .await
            .expect_err("nothing listens there");
        assert_eq!(
            refused.to_string(),
            format!(
                "connect {}: transport error: No such file or directory (os error 2)",
                socket.display()
            )
        );
    }

    #[test]
    fn a_driver_call_says_which_call_and_the_drivers_words() {
        let cases = [
            (
                Error::Rpc {
                    call: "ListVolumes",
                    status: tonic::Status::internal("store closed"),
                },
                "ListVolumes: store closed",
            ),
            (
                Error::VolumeRpc {
                    call: "NodeStageVolume",
                    volume: "held-1-7".into(),
                    status: tonic::Status::resource_exhausted("no room"),
                },
                "NodeStageVolume of held-1-7: no room",
            ),
            (
                Error::NotASize {
                    flag: "--capacity",
                    text: "1Q".into(),
                },
                "--capacity \"1Q\" is not a size",
            ),
        ];
        for (error, said) in cases {
            assert_eq!(error.to_string(), said);
        }
    }
}
