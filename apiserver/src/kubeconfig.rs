//! Kubeconfigs for the server's identities, and the private-file writer they share
//! with the token file and the CA key.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const KUBECONFIG_FILE: &str = "kubeconfig";

/// `DIR/kubeconfig`, for the admin identity.
pub(crate) fn write_admin(
    dir: &Path,
    address: SocketAddr,
    token: &str,
    ca_pem: &str,
) -> io::Result<PathBuf> {
    let path = dir.join(KUBECONFIG_FILE);
    write(&path, address, token, ca_pem)?;
    Ok(path)
}

/// A kubeconfig at `path` that reaches the server at `address` (trusting `ca_pem`)
/// with `token`; 0600, written through a temporary file.
pub fn write(path: &Path, address: SocketAddr, token: &str, ca_pem: &str) -> io::Result<()> {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let config = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: stowage
  cluster:
    server: https://{address}
    certificate-authority-data: {ca}
contexts:
- name: stowage
  context:
    cluster: stowage
    user: stowage
    namespace: default
current-context: stowage
users:
- name: stowage
  user:
    token: {token}
"
    );
    write_private(path, config.as_bytes())
}

/// The CA certificate (PEM) a server with data directory `dir` serves under.
pub fn ca_certificate(dir: &Path) -> io::Result<String> {
    fs::read_to_string(dir.join(crate::tls::CA_CERT))
}

/// Writes through a temporary file created 0600, then renames: never a moment
/// where the secret sits in a file others can read, nor a half-written file.
pub fn write_private(path: &Path, content: &[u8]) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    let _ = fs::remove_file(&temporary);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(content)?;
    file.sync_all()?;
    fs::rename(&temporary, path)
}
