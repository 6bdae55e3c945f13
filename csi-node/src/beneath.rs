//! Host paths resolved beneath a trusted directory, race-free: every walk starts at a
//! directory fd of the allowed root and goes through `openat2(RESOLVE_BENEATH)`, and
//! mounts are made from the fds it returns, so what was checked is what gets mounted
//! even if someone swaps a directory for a symlink meanwhile (the class of kubelet's
//! subPath escapes, CVE-2017-1002101 and CVE-2021-25741).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, StatxAttributes, StatxFlags};

use crate::error::{Error, Result};

/// How a walk may treat symlinks below the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Symlinks are followed while they stay beneath the root (hostPath volumes, as
    /// Kubernetes follows them); absolute ones and `..` out of the root are refused.
    Inside,
    /// No symlink anywhere below the root (paths the node plugin or kubelet made).
    Refused,
}

impl Links {
    fn resolve_flags(self) -> ResolveFlags {
        let flags = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        match self {
            Self::Inside => flags,
            Self::Refused => flags | ResolveFlags::NO_SYMLINKS,
        }
    }
}

/// A file or directory reached race-free: an `O_PATH` fd, plus the path it was reached
/// by (for messages and the mount table only: the fd is what is used).
#[derive(Debug)]
pub struct Handle {
    fd: OwnedFd,
    path: PathBuf,
}

/// `openat2` retries a walk that raced with a rename (EAGAIN); a few rounds are plenty.
const RACE_RETRIES: usize = 16;

impl Handle {
    /// Opens a trusted root: `path` was configured by the administrator, so symlinks in
    /// it are followed. A root that cannot be opened is an error, never an empty prefix.
    pub fn open_root(path: &Path) -> Result<Self> {
        rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
            .map(|fd| Self {
                fd,
                path: path.to_path_buf(),
            })
            .map_err(|e| Error::RootUnavailable {
                root: path.to_path_buf(),
                source: e.into(),
            })
    }

    /// Opens `relative` beneath this directory. NotFound if it does not exist; PermissionDenied
    /// if the walk would leave the root or meets a symlink `links` does not allow.
    pub fn resolve(&self, relative: &Path, links: Links) -> Result<Handle> {
        let shown = self.path.join(relative);
        open_beneath(self.fd.as_fd(), relative, OFlags::empty(), links)
            .map(|fd| Handle {
                fd,
                path: shown.clone(),
            })
            .map_err(|e| walk_error(&shown, e))
    }

    /// Resolves `relative`, creating the directories that are missing (mode `mode`).
    /// Directories that exist are walked as `links` allows; the ones made here are
    /// entered without following symlinks, so a swap after mkdir is refused.
    pub fn create_dirs(&self, relative: &Path, links: Links, mode: u32) -> Result<Handle> {
        let names = plain_components(relative).ok_or_else(|| Error::PathEscapes {
            path: self.path.join(relative),
        })?;
        let (mut dir, existing) = self.longest_existing(&names, links)?;
        for name in &names[existing..] {
            dir = dir.make_dir(name, mode)?;
        }
        Ok(dir)
    }

    /// The deepest existing directory along `names`, and how many names it consumed.
    fn longest_existing(&self, names: &[&OsStr], links: Links) -> Result<(Handle, usize)> {
        for depth in (0..=names.len()).rev() {
            let prefix: PathBuf = names[..depth].iter().collect();
            match self.resolve(&prefix, links) {
                Ok(handle) => return Ok((handle, depth)),
                Err(Error::PathMissing { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::RootUnavailable {
            root: self.path.clone(),
            source: io::ErrorKind::NotFound.into(),
        })
    }

    /// A copy of the mount this directory is on, detached (in no mount namespace, so
    /// not in any mount table) and rooted at this directory, with no mounts below it.
    /// Binding from it is cheaper on a busy node: before copying a mount for a bind
    /// the kernel walks that mount's child mounts (`has_locked_children`), and where the
    /// data shares a mount with the kubelet directory, as on most nodes, those are
    /// every pod's mounts (about a millisecond per bind at 10,000).
    pub fn detached_copy(&self) -> Result<Handle> {
        let flags = rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
            | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC
            | rustix::mount::OpenTreeFlags::AT_EMPTY_PATH;
        let failed = |e: rustix::io::Errno| {
            Error::io(
                format!("copy the mount of {}", self.path.display()),
                e.into(),
            )
        };
        let copy = rustix::mount::open_tree(self.fd.as_fd(), "", flags).map_err(failed)?;
        // Kernels before 6.15 refuse to copy a mount that is in no namespace (EINVAL),
        // so binds from this copy would all fail there: find out now, once.
        rustix::mount::open_tree(copy.as_fd(), "", flags).map_err(failed)?;
        Ok(Handle {
            fd: copy,
            path: self.path.clone(),
        })
    }

    /// The path the handle was reached by (for messages and the mount index).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `O_PATH` fd.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The `/proc/self/fd` name of the fd: for syscalls that take only a path, it
    /// resolves to exactly this file, whatever its path names now.
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// A file or directory inside this directory, reached by one name.
    pub fn child(&self, name: &OsStr, links: Links) -> Result<Handle> {
        if plain_components(Path::new(name)).is_none_or(|c| c.len() != 1) {
            return Err(Error::PathEscapes {
                path: self.path.join(name),
            });
        }
        self.resolve(Path::new(name), links)
    }

    /// Creates (if missing) the directory `name` here and opens it; an existing
    /// non-directory or symlink there is refused.
    pub fn make_dir(&self, name: &OsStr, mode: u32) -> Result<Handle> {
        match rustix::fs::mkdirat(self.fd.as_fd(), name, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => {
                return Err(Error::io(
                    format!("create {}", self.path.join(name).display()),
                    e.into(),
                ));
            }
        }
        let dir = self.child(name, Links::Refused)?;
        if dir.file_type()? != FileType::Directory {
            return Err(Error::NotADirectory { path: dir.path });
        }
        Ok(dir)
    }

    /// Creates (if missing) the regular file `name` here and opens it; anything else
    /// already there is refused.
    pub fn make_file(&self, name: &OsStr) -> Result<Handle> {
        let create = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY;
        match open_beneath(self.fd.as_fd(), Path::new(name), create, Links::Refused) {
            // The write-only fd is closed: the handle is an O_PATH fd like every other.
            Ok(_) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(walk_error(&self.path.join(name), e)),
        }
        let file = self.child(name, Links::Refused)?;
        if file.file_type()? != FileType::RegularFile {
            return Err(Error::NotARegularFile { path: file.path });
        }
        Ok(file)
    }

    /// Removes the entry `name` of this directory (an empty directory or a file).
    pub fn remove(&self, name: &OsStr) -> Result<()> {
        let result =
            rustix::fs::unlinkat(self.fd.as_fd(), name, AtFlags::REMOVEDIR).or_else(|e| match e {
                rustix::io::Errno::NOTDIR => {
                    rustix::fs::unlinkat(self.fd.as_fd(), name, AtFlags::empty())
                }
                other => Err(other),
            });
        match result {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::io(
                format!("remove {}", self.path.join(name).display()),
                e.into(),
            )),
        }
    }

    /// The file's type, from `fstat`.
    pub fn file_type(&self) -> Result<FileType> {
        self.stat().map(|s| FileType::from_raw_mode(s.st_mode))
    }

    /// Device and inode: what a file is, whatever it is called.
    pub fn identity(&self) -> Result<(u64, u64)> {
        self.stat().map(|s| (s.st_dev, s.st_ino))
    }

    fn stat(&self) -> Result<rustix::fs::Stat> {
        rustix::fs::fstat(self.fd.as_fd())
            .map_err(|e| Error::io(format!("stat {}", self.path.display()), e.into()))
    }

    /// Whether this is the root of a mount: something is mounted at the path.
    pub fn is_mount_root(&self) -> Result<bool> {
        self.mount_facts().map(|facts| facts.mount_root)
    }

    /// The mount facts of the entry `name` here, `None` if there is none, without
    /// opening it: an fd through a mount, copied into the child of a fork that another
    /// thread makes at that moment (mkfs, e2fsck), keeps the mount busy until the child
    /// execs, and an unmount meanwhile fails. A symlink is described, not followed.
    pub fn child_mount_facts(&self, name: &OsStr) -> Result<Option<MountFacts>> {
        if plain_components(Path::new(name)).is_none_or(|c| c.len() != 1) {
            return Err(Error::PathEscapes {
                path: self.path.join(name),
            });
        }
        match mount_facts(self.fd.as_fd(), Path::new(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(facts) => Ok(Some(facts)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::io(
                format!("statx {}", self.path.join(name).display()),
                e.into(),
            )),
        }
    }

    /// Where this file sits among the mounts, from one `statx` of the fd.
    pub fn mount_facts(&self) -> Result<MountFacts> {
        mount_facts(self.fd.as_fd(), Path::new(""), AtFlags::EMPTY_PATH)
            .map_err(|e| Error::io(format!("statx {}", self.path.display()), e.into()))
    }

    /// Whether the mount this is on is read-only.
    pub fn read_only_mount(&self) -> Result<bool> {
        rustix::fs::fstatvfs(self.fd.as_fd())
            .map(|s| s.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
            .map_err(|e| Error::io(format!("statvfs {}", self.path.display()), e.into()))
    }

    /// The filesystem type's magic number (`statfs.f_type`).
    pub fn fs_magic(&self) -> Result<i64> {
        rustix::fs::fstatfs(self.fd.as_fd())
            .map(|s| s.f_type)
            .map_err(|e| Error::io(format!("statfs {}", self.path.display()), e.into()))
    }
}

/// What one `statx` tells about a file's place among the mounts: enough to check a
/// mount without reading the mount table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountFacts {
    /// Something is mounted exactly here (`STATX_ATTR_MOUNT_ROOT`).
    pub mount_root: bool,
    /// The mount the file is on: the kernel's 64-bit id, never reused while the kernel
    /// runs (`STATX_MNT_ID_UNIQUE`, Linux 6.8); on older kernels the reusable one.
    pub mount_id: u64,
    /// Device and inode: what the file is, whatever it is called.
    pub identity: (u64, u64),
}

/// `STATX_MNT_ID_UNIQUE` from linux/stat.h; rustix names only the older `STATX_MNT_ID`.
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

/// The mount facts of an absolute path, its last component not followed. Cached
/// attributes are enough (`AT_STATX_DONT_SYNC`): a mount point of an unreachable NFS
/// server then answers from the client's cache instead of hanging.
pub fn mount_facts_at(path: &Path) -> std::io::Result<MountFacts> {
    let flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC;
    mount_facts(rustix::fs::CWD, path, flags).map_err(Into::into)
}

fn mount_facts(dir: BorrowedFd<'_>, path: &Path, flags: AtFlags) -> rustix::io::Result<MountFacts> {
    let unique = StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE);
    let mut stat = rustix::fs::statx(dir, path, flags, StatxFlags::BASIC_STATS | unique)?;
    if stat.stx_mask & STATX_MNT_ID_UNIQUE == 0 {
        stat = rustix::fs::statx(
            dir,
            path,
            flags,
            StatxFlags::BASIC_STATS | StatxFlags::MNT_ID,
        )?;
    }
    Ok(MountFacts {
        mount_root: stat.stx_attributes.contains(StatxAttributes::MOUNT_ROOT),
        mount_id: stat.stx_mnt_id,
        identity: (
            rustix::fs::makedev(stat.stx_dev_major, stat.stx_dev_minor),
            stat.stx_ino,
        ),
    })
}

/// A trusted absolute path (a device node the kernel named), opened as a handle.
pub fn open_trusted(path: &Path) -> Result<Handle> {
    rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map(|fd| Handle {
            fd,
            path: path.to_path_buf(),
        })
        .map_err(|e| walk_error(path, e))
}

/// The path's components if they are all plain names (no `..`, `.`, root or prefix).
fn plain_components(path: &Path) -> Option<Vec<&OsStr>> {
    path.components()
        .map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect()
}

fn open_beneath(
    dir: BorrowedFd<'_>,
    relative: &Path,
    extra: OFlags,
    links: Links,
) -> rustix::io::Result<OwnedFd> {
    let relative = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    };
    // openat2 refuses a mode without O_CREAT.
    let (flags, mode) = if extra.contains(OFlags::CREATE) {
        (
            extra | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o644),
        )
    } else {
        (OFlags::PATH | OFlags::CLOEXEC | extra, Mode::empty())
    };
    let mut attempt = 0;
    loop {
        match rustix::fs::openat2(dir, relative, flags, mode, links.resolve_flags()) {
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) if attempt < RACE_RETRIES => {
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn walk_error(path: &Path, e: rustix::io::Errno) -> Error {
    match e {
        rustix::io::Errno::NOENT => Error::PathMissing {
            path: path.to_path_buf(),
        },
        // EXDEV: the walk would leave the root; ELOOP: a symlink the walk may not follow.
        rustix::io::Errno::XDEV | rustix::io::Errno::LOOP => Error::PathEscapes {
            path: path.to_path_buf(),
        },
        rustix::io::Errno::NOTDIR => Error::NotADirectory {
            path: path.to_path_buf(),
        },
        rustix::io::Errno::AGAIN => Error::RenamedDuringWalk {
            path: path.to_path_buf(),
        },
        other => Error::io(format!("open {}", path.display()), other.into()),
    }
}
