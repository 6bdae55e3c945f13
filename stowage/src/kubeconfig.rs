//! A kube client from a kubeconfig file, as every subcommand that talks to an API server needs.

use std::path::Path;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub async fn client(path: &Path) -> Result<Client, String> {
    let context = |e: &dyn std::fmt::Display| format!("kubeconfig {}: {e}", path.display());
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| context(&e))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| context(&e))?;
    Client::try_from(config).map_err(|e| context(&e))
}
