//! The bearer token and the kubeconfig that carries it, both readable by root only.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const TOKEN_FILE: &str = "token";
const KUBECONFIG_FILE: &str = "kubeconfig";

/// The server's token: kept across restarts so issued kubeconfigs stay valid.
pub fn token(dir: &Path) -> io::Result<String> {
    let path = dir.join(TOKEN_FILE);
    match fs::read_to_string(&path) {
        Ok(token) if token.trim().len() >= 32 => return Ok(token.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(&path, token.as_bytes())?;
    Ok(token)
}

pub fn write(dir: &Path, address: SocketAddr, token: &str, ca_pem: &str) -> io::Result<PathBuf> {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let path = dir.join(KUBECONFIG_FILE);
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
    write_private(&path, config.as_bytes())?;
    Ok(path)
}

/// Writes through a temporary file created 0600, then renames: never a moment
/// where the secret sits in a file others can read, nor a half-written file.
pub(crate) fn write_private(path: &Path, content: &[u8]) -> io::Result<()> {
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
