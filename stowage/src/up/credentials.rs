//! Each component its own identity: the service accounts of deploy/rbac.yaml, a
//! token for each in the API server's token file, and a kubeconfig for each that
//! carries only that token. The user's kubeconfig stays the admin's.

use std::net::SocketAddr;

use apiserver::auth::authn::{ADMIN_USER, Identity, MASTERS, TokenFile};

use super::Error;

use crate::layout::Layout;

/// The namespace of Stowage's service accounts in a cluster (deploy/namespace.yaml).
pub const NAMESPACE: &str = "stowage-system";
/// The StatefulSet's account: the central provisioner (and controller).
pub const CONTROLLER: &str = "stowage-controller";
/// The DaemonSet's account: the node plugin and the node-mode provisioner.
pub const NODE: &str = "stowage-node";

/// Makes sure the token file has the admin and each component's account, adding
/// fresh tokens for those it lacks; written (0600, atomically) only when it changed.
pub fn issue(layout: &Layout) -> Result<(), Error> {
    let path = layout.tokens();
    let mut file = TokenFile::read(&path)?.unwrap_or_default();
    let before = file.render();
    if file.admin().is_none() {
        file.ensure(Identity::new(ADMIN_USER, &[MASTERS]));
    }
    for account in [CONTROLLER, NODE] {
        file.ensure(Identity::service_account(NAMESPACE, account));
    }
    if file.render() != before {
        file.write(&path)?;
    }
    Ok(())
}

/// Writes each account's kubeconfig, for the server at `address` whose CA is under
/// the data directory (it exists once the API server has started).
pub fn write_kubeconfigs(layout: &Layout, address: SocketAddr) -> Result<(), Error> {
    let file = TokenFile::read(&layout.tokens())?.unwrap_or_default();
    let ca = apiserver::kubeconfig::ca_certificate(layout.data()).map_err(Error::Ca)?;
    for account in [CONTROLLER, NODE] {
        let user = Identity::service_account(NAMESPACE, account).user;
        let token = file
            .entries()
            .iter()
            .find(|e| e.identity.user == user)
            .map(|e| e.token.clone())
            .ok_or_else(|| Error::NoToken {
                tokens: layout.tokens(),
                user: user.clone(),
            })?;
        let path = layout.component_kubeconfig(account);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::Create {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        apiserver::kubeconfig::write(&path, address, &token, &ca).map_err(|source| {
            Error::Write {
                path: path.clone(),
                source,
            }
        })?;
    }
    Ok(())
}
