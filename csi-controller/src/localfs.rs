//! Local filesystem effects: atomic metadata files, tree and sparse-file copies, free space.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::os::unix::io::AsFd;
use std::path::Path;

use nix::fcntl::PosixFadviseAdvice;
use nix::unistd::{Whence, lseek};

use crate::error::{Error, Result};

/// Writes `data` to `path` so that a crash leaves the old or the new content:
/// a temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let ctx = |what: &str| format!("{what} {}", path.display());
    let dir = path
        .parent()
        .ok_or_else(|| Error::io(ctx("no parent for"), ErrorKind::InvalidInput.into()))?;
    let temp = path.with_extension("json.tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|e| Error::io(ctx("create temporary for"), e))?;
    file.write_all(data)
        .map_err(|e| Error::io(ctx("write"), e))?;
    file.sync_all().map_err(|e| Error::io(ctx("fsync"), e))?;
    fs::rename(&temp, path).map_err(|e| Error::io(ctx("rename into"), e))?;
    sync_dir(dir)
}

/// Opens `path` as `options` say: the file and its length.
pub fn open_with_len(options: &OpenOptions, path: &Path) -> Result<(File, u64)> {
    let file = options
        .open(path)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
        .len();
    Ok((file, len))
}

/// Makes `dir`'s entries (renames, creations) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync directory {}", dir.display()), e))
}

/// Reads a file; `Ok(None)` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

/// Removes a file or a directory tree; a missing path is fine.
pub fn remove_any(path: &Path) -> Result<()> {
    let result = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    match result {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(Error::io(format!("remove {}", path.display()), e))
        }
        _ => Ok(()),
    }
}

/// The nice value copies run at: a clone or snapshot of a large volume must not take
/// the CPU from the small calls served beside it.
pub const COPY_NICE: i32 = 10;

/// Dirty pages a copy may leave behind before it waits for them to reach the disk.
/// Unbounded, a 1 GiB copy leaves ~1 GiB for writeback, and every fsync on the same
/// filesystem (the record log's, each CreateVolume's) waits behind the journal commit
/// that carries it.
const COPY_DIRTY_BYTES: u64 = 8 << 20;

/// Copies a directory tree, keeping modes and symlinks (never following them), as a
/// background copy ([`in_background`]).
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    in_background(|| copy_tree_here(from, to))
}

/// Copies a file, skipping holes, so a sparse disk image stays sparse; a background
/// copy ([`in_background`]).
pub fn copy_sparse(from: &Path, to: &Path) -> Result<()> {
    in_background(|| copy_sparse_here(from, to))
}

/// Runs a copy on its own thread at [`COPY_NICE`]: the priority is the thread's alone
/// (Linux applies setpriority to a thread id), so the pool's threads keep theirs.
fn in_background<T: Send>(copy: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let me = rustix::thread::gettid();
                if let Err(e) = rustix::process::setpriority_process(Some(me), COPY_NICE) {
                    tracing::debug!(error = %e, "copy keeps its priority");
                }
                copy()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(Error::io(
                    "copy",
                    std::io::Error::other("copy thread panicked"),
                ))
            })
    })
}

fn copy_tree_here(from: &Path, to: &Path) -> Result<()> {
    let ctx = |what: &str, p: &Path| format!("{what} {}", p.display());
    let meta = fs::symlink_metadata(from).map_err(|e| Error::io(ctx("stat", from), e))?;
    fs::create_dir_all(to).map_err(|e| Error::io(ctx("create", to), e))?;
    fs::set_permissions(to, meta.permissions()).map_err(|e| Error::io(ctx("chmod", to), e))?;
    for entry in fs::read_dir(from).map_err(|e| Error::io(ctx("list", from), e))? {
        let entry = entry.map_err(|e| Error::io(ctx("list", from), e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry
            .file_type()
            .map_err(|e| Error::io(ctx("stat", &src), e))?;
        if kind.is_dir() {
            copy_tree_here(&src, &dst)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&src).map_err(|e| Error::io(ctx("readlink", &src), e))?;
            symlink(target, &dst).map_err(|e| Error::io(ctx("symlink", &dst), e))?;
        } else if kind.is_file() {
            copy_sparse_here(&src, &dst)?;
        }
        // Sockets, FIFOs and devices are not data: a copy leaves them out.
    }
    Ok(())
}

fn copy_sparse_here(from: &Path, to: &Path) -> Result<()> {
    let ctx = |what: &str, p: &Path| format!("{what} {}", p.display());
    let src = File::open(from).map_err(|e| Error::io(ctx("open", from), e))?;
    let meta = src
        .metadata()
        .map_err(|e| Error::io(ctx("stat", from), e))?;
    let dst = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(meta.permissions().mode() & 0o7777)
        .open(to)
        .map_err(|e| Error::io(ctx("create", to), e))?;
    let len = meta.len();
    let mut offset = 0u64;
    while offset < len {
        let Some(start) =
            seek(&src, offset, Whence::SeekData).map_err(|e| Error::io(ctx("seek", from), e))?
        else {
            break;
        };
        let end = seek(&src, start, Whence::SeekHole)
            .map_err(|e| Error::io(ctx("seek", from), e))?
            .unwrap_or(len);
        copy_range(&src, &dst, start, end - start)
            .map_err(|e| Error::io(ctx("copy into", to), e))?;
        offset = end;
    }
    dst.set_len(len)
        .map_err(|e| Error::io(ctx("size", to), e))?;
    dst.sync_all().map_err(|e| Error::io(ctx("fsync", to), e))
}

fn seek(file: &File, offset: u64, whence: Whence) -> std::io::Result<Option<u64>> {
    let offset =
        i64::try_from(offset).map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
    match lseek(file.as_fd(), offset, whence) {
        Ok(pos) => Ok(Some(pos.unsigned_abs())),
        Err(nix::errno::Errno::ENXIO) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Copies `len` bytes at `start`, writing back every [`COPY_DIRTY_BYTES`] and dropping
/// the written pages from the cache (the copy will not read them; the cache is the
/// node's).
fn copy_range(src: &File, dst: &File, start: u64, len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let (mut done, mut unsynced_from) = (0u64, start);
    while done < len {
        let want = usize::try_from((len - done).min(buf.len() as u64)).unwrap_or(buf.len());
        let n = src.read_at(&mut buf[..want], start + done)?;
        if n == 0 {
            break;
        }
        dst.write_all_at(&buf[..n], start + done)?;
        done += n as u64;
        if start + done - unsynced_from >= COPY_DIRTY_BYTES {
            write_back(dst, unsynced_from, start + done - unsynced_from)?;
            unsynced_from = start + done;
        }
    }
    Ok(())
}

fn write_back(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    file.sync_data()?;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Ok(());
    };
    nix::fcntl::posix_fadvise(
        file.as_fd(),
        offset,
        len,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .map_err(std::io::Error::from)
}

/// Bytes available to unprivileged writers on the filesystem holding `path`.
pub fn available_bytes(path: &Path) -> Result<i64> {
    let stat = nix::sys::statvfs::statvfs(path)
        .map_err(|e| Error::io(format!("statvfs {}", path.display()), e.into()))?;
    let bytes = u128::from(stat.blocks_available()) * u128::from(stat.fragment_size());
    Ok(i64::try_from(bytes).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v.json");
        write_atomic(&path, b"one").expect("write");
        write_atomic(&path, b"two").expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 1);
    }

    #[test]
    fn sparse_copy_keeps_holes_and_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        let file = File::create(&src).expect("create");
        file.set_len(64 << 20).expect("size");
        use std::os::unix::fs::FileExt;
        file.write_all_at(b"tail", (64 << 20) - 4).expect("write");
        copy_sparse(&src, &dst).expect("copy");
        let meta = fs::metadata(&dst).expect("stat");
        assert_eq!(meta.len(), 64 << 20);
        assert!(
            meta.blocks() * 512 < 8 << 20,
            "copy allocated {} bytes",
            meta.blocks() * 512
        );
        let mut tail = [0u8; 4];
        File::open(&dst)
            .expect("open")
            .read_exact_at(&mut tail, (64 << 20) - 4)
            .expect("read");
        assert_eq!(&tail, b"tail");
    }

    #[test]
    fn copies_run_at_background_priority_on_their_own_thread() {
        let here = rustix::process::getpriority_process(None).expect("nice");
        let copying = in_background(|| {
            Ok(rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("nice"))
        })
        .expect("copy");
        assert_eq!(copying, COPY_NICE);
        assert_eq!(
            rustix::process::getpriority_process(None).expect("nice"),
            here,
            "the caller's thread keeps its priority"
        );
    }

    #[test]
    fn a_copy_larger_than_the_dirty_bound_is_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        let data: Vec<u8> = (0..(COPY_DIRTY_BYTES * 2 + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        fs::write(&src, &data).expect("write");
        copy_sparse(&src, &dst).expect("copy");
        assert!(fs::read(&dst).expect("read") == data);
    }

    #[test]
    fn tree_copy_keeps_symlinks_as_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("a");
        fs::create_dir_all(src.join("sub")).expect("mkdir");
        fs::write(src.join("sub/f"), b"data").expect("write");
        symlink("/etc/passwd", src.join("link")).expect("symlink");
        copy_tree(&src, &dir.path().join("b")).expect("copy");
        assert_eq!(fs::read(dir.path().join("b/sub/f")).expect("read"), b"data");
        assert!(
            fs::symlink_metadata(dir.path().join("b/link"))
                .expect("stat")
                .file_type()
                .is_symlink()
        );
    }
}
