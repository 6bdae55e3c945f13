//! Where the single-machine mode keeps everything under its data directory.
//! `stowage up` creates it; `mount`, `unmount` and `status` find their way by it.

use std::path::{Path, PathBuf};

/// The default data directory of `up`, `mount`, `unmount` and `status`.
pub const DEFAULT_DATA: &str = "/var/lib/stowage/up";

pub struct Layout {
    data: PathBuf,
}

impl Layout {
    pub fn new(data: &Path) -> Self {
        Self {
            data: data.to_path_buf(),
        }
    }

    pub fn data(&self) -> &Path {
        &self.data
    }

    /// The admin's, written by the embedded API server, which keeps its store beside it.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data.join("kubeconfig")
    }

    /// The API server's identities and their tokens.
    pub fn tokens(&self) -> PathBuf {
        self.data.join(apiserver::TOKEN_FILE)
    }

    /// The kubeconfig of one component's identity (a service account name).
    pub fn component_kubeconfig(&self, account: &str) -> PathBuf {
        self.data.join("kubeconfigs").join(account)
    }

    pub fn controller_socket(&self) -> PathBuf {
        self.data.join("controller.sock")
    }

    pub fn node_socket(&self) -> PathBuf {
        self.data.join("node.sock")
    }

    pub fn controller_state(&self) -> PathBuf {
        self.data.join("controller")
    }

    pub fn node_state(&self) -> PathBuf {
        self.data.join("node")
    }

    pub fn local_root(&self) -> PathBuf {
        self.data.join("local")
    }

    /// The node plugin's kubelet root: staging and publish paths live below it.
    pub fn kubelet(&self) -> PathBuf {
        self.data.join("kubelet")
    }

    /// One record per `stowage mount`, so `unmount` knows what to undo.
    pub fn mounts(&self) -> PathBuf {
        self.data.join("mounts")
    }

    /// The node name `up` runs as, for the commands that act on its behalf.
    pub fn node_name_file(&self) -> PathBuf {
        self.data.join("node-name")
    }

    pub fn node_name(&self) -> Result<String, NotRunning> {
        let path = self.node_name_file();
        std::fs::read_to_string(&path)
            .map(|name| name.trim().to_string())
            .map_err(|source| NotRunning {
                path,
                data: self.data.clone(),
                source,
            })
    }
}

/// No `stowage up` has written its node name under the data directory.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source} (is `stowage up --data {}` running?)", .path.display(), .data.display())]
pub struct NotRunning {
    path: PathBuf,
    data: PathBuf,
    source: std::io::Error,
}
