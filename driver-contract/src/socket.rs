//! The plugin's CSI socket: the endpoint forms CSI uses, stale-socket hygiene, 0600
//! mode, and the signals that end serving.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// An endpoint that does not name a unix socket by absolute path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("endpoint {endpoint:?} must be unix:///absolute/path")]
pub struct NotAUnixEndpoint {
    /// The endpoint as given.
    pub endpoint: String,
}

/// An endpoint as CSI writes it: `unix:///path` or `unix:/path` or a bare path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, NotAUnixEndpoint> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    if !path.starts_with('/') {
        return Err(NotAUnixEndpoint {
            endpoint: endpoint.to_string(),
        });
    }
    Ok(PathBuf::from(path))
}

/// Binds the socket, removing a stale one only if it is a socket, and restricts it to its owner.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to remove it",
                    path.display()
                ),
            ));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called,
/// not when the future is first polled: a signal that arrives in between (a Ctrl-C
/// during start-up) is then held for the future rather than ending the process.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let streams = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        match streams {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending::<()>().await,
        }
        tracing::info!("shutting down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_parsed() {
        assert_eq!(
            socket_path("unix:///run/csi.sock"),
            Ok(PathBuf::from("/run/csi.sock"))
        );
        assert_eq!(
            socket_path("unix:/run/csi.sock"),
            Ok(PathBuf::from("/run/csi.sock"))
        );
        assert!(socket_path("tcp://1.2.3.4:5").is_err());
    }

    #[tokio::test]
    async fn a_regular_file_at_the_socket_path_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("csi.sock");
        fs::write(&path, b"precious").expect("write");
        assert!(bind(&path).is_err());
        assert_eq!(fs::read(&path).expect("read"), b"precious");
        fs::remove_file(&path).expect("rm");
        let _listener = bind(&path).expect("bind");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
