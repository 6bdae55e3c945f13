//! What one `stowage up` holds for itself before it starts anything: its data
//! directory (an exclusive lock, so a second `up` on it ends at once instead of
//! sharing the store) and its API address (free, so the API server is not
//! restarted forever against a port another program holds).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Why `up` cannot have what it needs; each message names the flag to change.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "--data {} is in use by a running `stowage up`{holder}: stop it, or choose another --data",
        .dir.display()
    )]
    DataInUse { dir: PathBuf, holder: String },
    #[error("--data {}: cannot lock {}: {source}", .dir.display(), .file.display())]
    DataLock {
        dir: PathBuf,
        file: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "--listen {addr} is already in use (another `stowage up`, API server or program): \
         stop it, or choose another address with --listen"
    )]
    ListenInUse { addr: SocketAddr },
    #[error("--listen {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The data directory's lock, held as long as this value lives (the kernel drops
/// it when the process ends, however it ends).
pub struct DataLock {
    _lock: Flock<File>,
}

const LOCK_FILE: &str = "up.lock";

/// Locks `data` for this process and records its pid for the message a second `up` prints.
pub fn lock_data(data: &Path) -> Result<DataLock, ClaimError> {
    let path = data.join(LOCK_FILE);
    let failed = |source: std::io::Error| ClaimError::DataLock {
        dir: data.to_path_buf(),
        file: path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(failed)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            return Err(ClaimError::DataInUse {
                dir: data.to_path_buf(),
                holder: holder(&mut file),
            });
        }
        Err((_, errno)) => return Err(failed(errno.into())),
    };
    record_pid(&mut lock).map_err(failed)?;
    Ok(DataLock { _lock: lock })
}

fn record_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    file.sync_data()
}

/// ` (pid N)` when the lock file names the holder, else nothing.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    match file.read_to_string(&mut text) {
        Ok(_) => match text.trim().parse::<u32>() {
            Ok(pid) => format!(" (pid {pid})"),
            Err(_) => String::new(),
        },
        Err(_) => String::new(),
    }
}

/// Fails when `addr` cannot be bound now. The probe is released before the API
/// server binds it; a program that takes the port in between is still caught,
/// as the API server's exit during start-up.
pub fn check_listen(addr: SocketAddr) -> Result<(), ClaimError> {
    match TcpListener::bind(addr) {
        Ok(listener) => {
            drop(listener);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(ClaimError::ListenInUse { addr })
        }
        Err(source) => Err(ClaimError::Listen { addr, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_names_the_holder_and_the_flag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = lock_data(dir.path()).expect("first lock");
        let second = lock_data(dir.path()).err().expect("second lock refused");
        let holder = format!(" (pid {})", std::process::id());
        assert!(
            matches!(&second, ClaimError::DataInUse { dir: d, holder: h } if d == dir.path() && *h == holder),
            "{second:?}"
        );
        assert!(second.to_string().contains("--data"));
        drop(first);
        lock_data(dir.path()).expect("free again once the holder is gone");
    }

    #[test]
    fn a_bound_port_is_refused_naming_listen() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = check_listen(addr).expect_err("refused");
        assert!(
            matches!(err, ClaimError::ListenInUse { addr: a } if a == addr),
            "{err:?}"
        );
        assert!(err.to_string().contains("--listen"));
        drop(taken);
        check_listen(addr).expect("free once released");
    }
}
