//! A kube client from a kubeconfig file, as every subcommand that talks to an API server needs.

use std::path::{Path, PathBuf};

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A kubeconfig file that gives no client.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("kubeconfig {}: {source}", .path.display())]
    Unusable {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("kubeconfig {}: {source}", .path.display())]
    Client { path: PathBuf, source: kube::Error },
}

pub async fn client(path: &Path) -> Result<Client, KubeconfigError> {
    let unusable = |source| KubeconfigError::Unusable {
        path: path.to_path_buf(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(unusable)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(unusable)?;
    Client::try_from(config).map_err(|source| KubeconfigError::Client {
        path: path.to_path_buf(),
        source,
    })
}
