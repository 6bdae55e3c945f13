//! Local filesystem effects: atomic metadata files, tree and sparse-file copies, free space.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::os::unix::io::AsFd;
use std::path::Path;

use nix::fcntl::PosixFadviseAdvice;
use nix::unistd::{Whence, lseek};
use stowage_sys::io_priority::{self, IoClass};

use crate::error::{Error, Result};
use crate::pacer::{self, Turn};

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
    pacer::durable(|| file.sync_all()).map_err(|e| Error::io(ctx("fsync"), e))?;
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
        .and_then(|d| pacer::durable(|| d.sync_all()))
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

/// Removes a file or a directory tree; a missing path is fine. An empty directory (a
/// deleted volume nobody wrote to) goes with one `rmdir`, before the walk a tree needs.
pub fn remove_any(path: &Path) -> Result<()> {
    let result = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => fs::remove_dir(path).or_else(|e| match e.kind() {
            ErrorKind::DirectoryNotEmpty => fs::remove_dir_all(path),
            _ => Err(e),
        }),
        Ok(_) => fs::remove_file(path),
    };
    match result {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(Error::io(format!("remove {}", path.display()), e))
        }
        _ => Ok(()),
    }
}

/// The nice value bulk work runs at (copies, and the e2fs tools, which inherit it):
/// a clone or a large image's mkfs must not take the CPU from the small calls served
/// beside it.
pub const COPY_NICE: i32 = 10;

/// Dirty pages a copy through the page cache may leave behind before it waits for
/// them to reach the disk. Unbounded, a 1 GiB copy leaves ~1 GiB for writeback, and
/// every fsync on the same filesystem (the record log's, each CreateVolume's) waits
/// behind the journal commit that carries it.
const COPY_DIRTY_BYTES: u64 = 8 << 20;

/// What a copy reads and writes at once.
const COPY_CHUNK: usize = 1 << 20;

/// What a copy writes at once after it waited for the calls' durable writes (the
/// pacer): a quarter of a chunk, so a call's fsync that comes meanwhile waits behind
/// less.
const PACED_CHUNK: u64 = COPY_CHUNK as u64 / 4;

/// The offset, length and buffer alignment direct I/O needs (the largest logical block
/// size of the disks a local root sits on).
const DIRECT_ALIGN: u64 = 4096;

/// Copies a directory tree, keeping modes and symlinks (never following them), as a
/// background copy ([`in_background`]).
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    in_background(|| copy_tree_here(from, to, &mut CopyBuffer::new()))
}

/// Copies a file, skipping holes, so a sparse disk image stays sparse; a background
/// copy ([`in_background`]).
pub fn copy_sparse(from: &Path, to: &Path) -> Result<()> {
    in_background(|| copy_sparse_here(from, to, &mut CopyBuffer::new()))
}

/// Runs bulk work on its own thread at [`COPY_NICE`] and in the idle I/O class: both
/// are the thread's alone (Linux applies them to a thread id), so the pool's threads
/// keep theirs, and a program it starts (mkfs, resize2fs) inherits them. In the idle
/// class, its writes wait in the disk queue behind the small calls' record fsyncs
/// rather than in front of them.
pub(crate) fn in_background<T: Send>(copy: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_background();
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

/// Puts the calling thread in the bulk class: [`COPY_NICE`] and the idle I/O class,
/// for it alone (Linux applies both to a thread id) and for the programs it starts.
pub(crate) fn enter_background() {
    let me = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(me), COPY_NICE) {
        tracing::debug!(error = %e, "bulk work keeps its CPU priority");
    }
    if let Err(e) = io_priority::set_thread_class(IoClass::Idle) {
        tracing::debug!(error = %e, "bulk work keeps its I/O class");
    }
}

fn copy_tree_here(from: &Path, to: &Path, buf: &mut CopyBuffer) -> Result<()> {
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
            copy_tree_here(&src, &dst, buf)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&src).map_err(|e| Error::io(ctx("readlink", &src), e))?;
            symlink(target, &dst).map_err(|e| Error::io(ctx("symlink", &dst), e))?;
        } else if kind.is_file() {
            copy_sparse_here(&src, &dst, buf)?;
        }
        // Sockets, FIFOs and devices are not data: a copy leaves them out.
    }
    Ok(())
}

fn copy_sparse_here(from: &Path, to: &Path, buf: &mut CopyBuffer) -> Result<()> {
    let ctx = |what: &str, p: &Path| format!("{what} {}", p.display());
    let src = File::open(from).map_err(|e| Error::io(ctx("open", from), e))?;
    let meta = src
        .metadata()
        .map_err(|e| Error::io(ctx("stat", from), e))?;
    let dst = Destination::create(to, meta.permissions().mode() & 0o7777)
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
        dst.copy_range(&src, start, end - start, buf)
            .map_err(|e| Error::io(ctx("copy into", to), e))?;
        offset = end;
    }
    dst.file
        .set_len(len)
        .map_err(|e| Error::io(ctx("size", to), e))?;
    dst.file
        .sync_all()
        .map_err(|e| Error::io(ctx("fsync", to), e))
}

/// A copy's target file. Where the filesystem takes direct I/O the aligned bulk of the
/// data is written with it: no dirty pages, so the journal commit that another file's
/// fsync waits for (a record's, a CreateVolume's) carries none of the copy's data, and
/// the node's page cache keeps what the pods use. Unaligned heads and tails, and every
/// write on a filesystem without direct I/O, go through the cache, written back every
/// [`COPY_DIRTY_BYTES`].
struct Destination {
    file: File,
    direct: Option<File>,
}

impl Destination {
    fn create(path: &Path, mode: u32) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)?;
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
            .open(path)
            .ok();
        Ok(Self { file, direct })
    }

    /// Copies `len` bytes at `start` of `src` to the same place here.
    fn copy_range(
        &self,
        src: &File,
        start: u64,
        len: u64,
        buf: &mut CopyBuffer,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let buf = buf.aligned()?;
        let end = start + len;
        let (mut pos, mut unsynced_from) = (start, start);
        while pos < end {
            let step = match pacer::global().bulk_turn() {
                Turn::Quiet => COPY_CHUNK as u64,
                Turn::Waited => PACED_CHUNK,
            };
            let want = chunk_len(pos, end, step);
            let n = src.read_at(&mut buf[..want], pos)?;
            if n == 0 {
                break;
            }
            match &self.direct {
                Some(direct) if is_aligned(pos, n) => direct.write_all_at(&buf[..n], pos)?,
                _ => self.file.write_all_at(&buf[..n], pos)?,
            }
            pos += n as u64;
            if self.direct.is_none() && pos - unsynced_from >= COPY_DIRTY_BYTES {
                write_back(&self.file, unsynced_from, pos - unsynced_from)?;
                unsynced_from = pos;
            }
        }
        Ok(())
    }
}

/// A copy's buffer, aligned for direct I/O: one for a whole copy, whatever the number
/// of its files and data ranges.
struct CopyBuffer {
    raw: Vec<u8>,
}

impl CopyBuffer {
    fn new() -> Self {
        Self {
            raw: vec![0u8; COPY_CHUNK + DIRECT_ALIGN as usize],
        }
    }

    /// [`COPY_CHUNK`] bytes starting at an address aligned to [`DIRECT_ALIGN`].
    fn aligned(&mut self) -> std::io::Result<&mut [u8]> {
        let skip = self.raw.as_ptr().align_offset(DIRECT_ALIGN as usize);
        self.raw
            .get_mut(skip..skip + COPY_CHUNK)
            .ok_or_else(|| std::io::Error::other("no aligned copy buffer"))
    }
}

/// How much to copy from `pos`: up to the next aligned offset when `pos` is not
/// aligned (so what follows can go direct), else `step` (at most a chunk, aligned);
/// never past `end`.
fn chunk_len(pos: u64, end: u64, step: u64) -> usize {
    let misaligned = pos % DIRECT_ALIGN;
    let step = if misaligned == 0 {
        step.min(COPY_CHUNK as u64)
    } else {
        DIRECT_ALIGN - misaligned
    };
    usize::try_from(step.min(end - pos)).unwrap_or(COPY_CHUNK)
}

fn is_aligned(pos: u64, len: usize) -> bool {
    pos.is_multiple_of(DIRECT_ALIGN) && (len as u64).is_multiple_of(DIRECT_ALIGN)
}

/// `lseek` to the next data (or hole) at or after `offset`; `None` past the last.
pub(crate) fn seek(file: &File, offset: u64, whence: Whence) -> std::io::Result<Option<u64>> {
    let offset =
        i64::try_from(offset).map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
    match lseek(file.as_fd(), offset, whence) {
        Ok(pos) => Ok(Some(pos.unsigned_abs())),
        Err(nix::errno::Errno::ENXIO) => Ok(None),
        Err(e) => Err(e.into()),
    }
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
    use std::time::Duration;

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
    fn remove_any_takes_whatever_is_there_and_only_that() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kept = dir.path().join("kept");
        fs::create_dir_all(kept.join("inside")).expect("mkdir");
        type Make<'a> = &'a dyn Fn(&Path);
        let make: [(&str, Make); 5] = [
            ("an empty directory", &|p| fs::create_dir(p).expect("mkdir")),
            ("a tree", &|p| {
                fs::create_dir_all(p.join("a/b")).expect("mkdir");
                fs::write(p.join("a/b/f"), b"data").expect("write");
            }),
            ("a file", &|p| fs::write(p, b"data").expect("write")),
            ("a link to a kept directory", &|p| {
                symlink(&kept, p).expect("symlink")
            }),
            ("nothing", &|_| {}),
        ];
        for (what, make) in make {
            let path = dir.path().join("doomed");
            make(&path);
            remove_any(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(fs::symlink_metadata(&path).is_err(), "{what} is gone");
            assert!(
                kept.join("inside").is_dir(),
                "{what}: the link's target is kept"
            );
        }
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
        let io_class_here = io_priority::thread_class().expect("I/O class");
        let (copying, io_class) = in_background(|| {
            Ok((
                rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("nice"),
                io_priority::thread_class().expect("I/O class"),
            ))
        })
        .expect("copy");
        assert_eq!((copying, io_class), (COPY_NICE, IoClass::Idle));
        assert_eq!(
            rustix::process::getpriority_process(None).expect("nice"),
            here,
            "the caller's thread keeps its priority"
        );
        assert_eq!(
            io_priority::thread_class().expect("I/O class"),
            io_class_here
        );
        assert_ne!(io_class_here, IoClass::Idle);
    }

    #[test]
    fn programs_started_in_the_background_inherit_its_priority() {
        let run = |program: &'static str| {
            let out = in_background(|| {
                std::process::Command::new(program)
                    .output()
                    .map_err(|e| Error::io(program, e))
            })
            .expect("runs");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(run("nice"), COPY_NICE.to_string());
        assert_eq!(run("ionice"), "idle");
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
    fn a_copy_waits_while_a_calls_durable_write_is_in_flight() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::write(&src, vec![7u8; 2 * COPY_CHUNK]).expect("write");
        let hold = Duration::from_millis(150);
        let started = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                pacer::durable(|| {
                    started.wait();
                    std::thread::sleep(hold);
                })
            });
            started.wait();
            let start = std::time::Instant::now();
            copy_sparse(&src, &dst).expect("copy");
            let took = start.elapsed();
            // Paced, 2 MiB is eight small steps, one per LONGEST_WAIT while the write
            // lasts: the copy cannot end before the write does.
            assert!(
                took >= hold - Duration::from_millis(10),
                "copied in {took:?}"
            );
        });
        assert_eq!(fs::read(&dst).expect("read"), vec![7u8; 2 * COPY_CHUNK]);
    }

    #[test]
    fn copies_go_direct_where_the_filesystem_allows_it() {
        // The tests' temporary directory is on the machine's ext4 root.
        let dir = tempfile::tempdir().expect("tempdir");
        let dst = Destination::create(&dir.path().join("dst"), 0o600).expect("create");
        assert!(dst.direct.is_some(), "ext4 takes O_DIRECT");
    }

    #[test]
    fn direct_and_cached_copies_of_unaligned_ranges_are_whole() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        let data: Vec<u8> = (0..(3 * COPY_CHUNK + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        fs::write(&src, &data).expect("write");
        let source = File::open(&src).expect("open");
        for direct in [true, false] {
            let path = dir.path().join(format!("dst-{direct}"));
            let mut buf = CopyBuffer::new();
            let mut dst = Destination::create(&path, 0o600).expect("create");
            if !direct {
                dst.direct = None;
            }
            // An unaligned head, aligned chunks, an unaligned tail.
            for (start, len) in [
                (0, 100),
                (100, 2 * COPY_CHUNK as u64),
                (
                    2 * COPY_CHUNK as u64 + 100,
                    (data.len() - 2 * COPY_CHUNK - 100) as u64,
                ),
            ] {
                dst.copy_range(&source, start, len, &mut buf).expect("copy");
            }
            let mut copied = vec![0u8; data.len()];
            File::open(&path)
                .expect("open")
                .read_exact_at(&mut copied, 0)
                .expect("read");
            assert!(copied == data, "direct={direct}: the copy differs");
        }
    }

    #[test]
    fn chunks_end_on_the_next_aligned_offset() {
        let chunk = COPY_CHUNK as u64;
        for (pos, end, step, want) in [
            (0, 10 * chunk, chunk, chunk),
            (0, 10 * chunk, PACED_CHUNK, PACED_CHUNK),
            (0, 10 * chunk, 2 * chunk, chunk),
            (0, 100, chunk, 100),
            (100, 10 * chunk, chunk, DIRECT_ALIGN - 100),
            (100, 10 * chunk, PACED_CHUNK, DIRECT_ALIGN - 100),
            (100, 200, chunk, 100),
            (DIRECT_ALIGN, DIRECT_ALIGN + chunk + 1, chunk, chunk),
            (chunk, chunk + 7, PACED_CHUNK, 7),
        ] {
            assert_eq!(
                chunk_len(pos, end, step) as u64,
                want,
                "from {pos} to {end} in steps of {step}"
            );
        }
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
