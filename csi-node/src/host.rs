//! The seam between the node handlers and the host: every mount, unmount, loop device,
//! filesystem tool and mount-aware `statx`/`statvfs` the handlers make goes through
//! [`Mounts`]. [`HostMounts`] does them on this machine; the handlers' unit tests use a
//! recording fake, so their argument, idempotency and conflict rules are checked without
//! mounting anything. Path walks (`openat2` beneath a root), directory creation and
//! ownership stay real: the tests point them at temporary directories.
//!
//! The checks go through the seam with the effects because they must see the effects:
//! after a fake bind, the target has to look mounted, and look like its source.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

use loopdev::LoopDevice;
use nix::errno::Errno;
use nix::mount::MsFlags;

use crate::beneath::{Handle, MountFacts};
use crate::error::{Error, Result};
use crate::mountinfo::MountTable;
use crate::{loopback, mounter};

/// What `statvfs` tells of a volume, in the kernel's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// The unit of the block counts (`f_frsize`).
    pub fragment_size: u64,
    /// Blocks in all.
    pub blocks: u64,
    /// Blocks free.
    pub blocks_free: u64,
    /// Blocks free to an unprivileged user.
    pub blocks_available: u64,
    /// Inodes in all.
    pub files: u64,
    /// Inodes free.
    pub files_free: u64,
    /// Inodes free to an unprivileged user.
    pub files_available: u64,
}

/// A loop device attached to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loop {
    /// The device node, `/dev/loopN`.
    pub device: PathBuf,
    /// Its device number (`st_rdev`), if the node could be examined.
    pub number: Option<u64>,
}

/// A loop device just attached. An autoclear device goes away when its last user
/// does: this value is such a user until it is dropped, so a mount can take over.
#[derive(Debug)]
pub struct Attached {
    /// The device node.
    pub device: PathBuf,
    hold: Option<LoopDevice>,
}

impl Attached {
    /// A device that nothing holds open (the fake's, or one that needs no holding).
    pub fn unheld(device: PathBuf) -> Self {
        Self { device, hold: None }
    }

    /// Whether this value keeps the device open.
    pub fn is_held(&self) -> bool {
        self.hold.is_some()
    }
}

/// The mount and filesystem effects of the node handlers, and the checks that must see
/// them. One implementation per world: [`HostMounts`] for this machine.
pub trait Mounts: Send + Sync + fmt::Debug {
    /// Where the file open at `handle` sits among the mounts (one `statx` of its fd).
    fn facts(&self, handle: &Handle) -> Result<MountFacts>;
    /// The mount facts of the entry `name` in `dir` without opening it; `None` if there
    /// is none. A symlink is described, not followed.
    fn child_facts(&self, dir: &Handle, name: &OsStr) -> Result<Option<MountFacts>>;
    /// The mount facts of an absolute path, its last component not followed.
    fn facts_at(&self, path: &Path) -> std::io::Result<MountFacts>;
    /// Whether the mount holding `handle` is read-only.
    fn read_only(&self, handle: &Handle) -> Result<bool>;
    /// `statfs.f_type` of the filesystem holding `handle`.
    fn fs_magic(&self, handle: &Handle) -> Result<i64>;
    /// `statvfs` of `path`; ESTALE when it is an NFS volume whose handle went stale.
    fn usage(&self, path: &Path) -> std::result::Result<Usage, Errno>;
    /// The mount table, read whole (only where an unmount finds mounts below its path,
    /// and to recover a stale NFS volume).
    fn table(&self) -> Result<MountTable>;

    /// A detached copy of the mount `root` is on, rooted at `root` (see
    /// [`Handle::detached_copy`]).
    fn detached_copy(&self, root: &Handle) -> Result<Handle>;
    /// Bind-mounts `source` on `target`, read-only when asked.
    fn bind(&self, source: &Handle, target: &Handle, read_only: bool) -> Result<()>;
    /// Mounts a new tmpfs at `target` (size 0: the kernel's default), its root given to
    /// `group` with setgid when one is asked.
    fn tmpfs(
        &self,
        target: &Handle,
        size_bytes: u64,
        read_only: bool,
        group: Option<u32>,
    ) -> Result<()>;
    /// Mounts a filesystem from a device or an NFS export at `target`.
    fn mount(
        &self,
        source: &str,
        target: &Handle,
        fs_type: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> std::result::Result<(), Errno>;
    /// Unmounts the topmost mount at `target`; none there is fine.
    fn unmount(&self, target: &Path) -> Result<()>;
    /// Detaches the topmost mount at `target` lazily (a stale NFS mount, which a plain
    /// unmount would wait on).
    fn detach(&self, target: &Path) -> Result<()>;

    /// The loop device backed by `file`, if one is attached.
    fn loop_device_of(&self, file: &Path) -> Option<Loop>;
    /// Attaches `file` to a free loop device; an `autoclear` one is detached by the
    /// kernel when its last user goes.
    fn attach_loop(&self, file: &Path, autoclear: bool) -> Result<Attached>;
    /// Detaches a loop device.
    fn detach_loop(&self, device: &Path) -> Result<()>;
    /// Makes a loop device take its file's current size.
    fn refresh_loop_capacity(&self, device: &Path) -> Result<()>;
    /// The loop device whose ext4 is mounted at `path`, if that is what is there.
    fn mounted_loop_device(&self, path: &Path) -> Result<Option<PathBuf>>;
    /// A block device's size in bytes.
    fn device_size(&self, device: &Path) -> Result<u64>;
    /// The size the ext4 superblock on `device` claims.
    fn ext4_size(&self, device: &Path) -> Result<u64>;
    /// Grows the unmounted ext4 on `device` to the device (e2fsck, then resize2fs).
    fn grow_offline(&self, device: &Path) -> Result<()>;
    /// Grows the mounted ext4 on `device` to the device (resize2fs, online).
    fn grow_online(&self, device: &Path) -> Result<()>;
    /// Whether this process may grow a mounted ext4 (CAP_SYS_RESOURCE is effective).
    fn may_grow_online(&self) -> bool;
}

/// The host's mounts, loop devices and tools.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostMounts;

impl Mounts for HostMounts {
    fn facts(&self, handle: &Handle) -> Result<MountFacts> {
        handle.mount_facts()
    }

    fn child_facts(&self, dir: &Handle, name: &OsStr) -> Result<Option<MountFacts>> {
        dir.child_mount_facts(name)
    }

    fn facts_at(&self, path: &Path) -> std::io::Result<MountFacts> {
        crate::beneath::mount_facts_at(path)
    }

    fn read_only(&self, handle: &Handle) -> Result<bool> {
        handle.read_only_mount()
    }

    fn fs_magic(&self, handle: &Handle) -> Result<i64> {
        handle.fs_magic()
    }

    fn usage(&self, path: &Path) -> std::result::Result<Usage, Errno> {
        let stat = nix::sys::statvfs::statvfs(path)?;
        Ok(Usage {
            fragment_size: stat.fragment_size(),
            blocks: stat.blocks(),
            blocks_free: stat.blocks_free(),
            blocks_available: stat.blocks_available(),
            files: stat.files(),
            files_free: stat.files_free(),
            files_available: stat.files_available(),
        })
    }

    fn table(&self) -> Result<MountTable> {
        MountTable::read().map_err(|e| Error::io("read mountinfo", e))
    }

    fn detached_copy(&self, root: &Handle) -> Result<Handle> {
        root.detached_copy()
    }

    fn bind(&self, source: &Handle, target: &Handle, read_only: bool) -> Result<()> {
        mounter::bind(source, target, read_only)
    }

    fn tmpfs(
        &self,
        target: &Handle,
        size_bytes: u64,
        read_only: bool,
        group: Option<u32>,
    ) -> Result<()> {
        mounter::tmpfs(target, size_bytes, read_only, group)
    }

    fn mount(
        &self,
        source: &str,
        target: &Handle,
        fs_type: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> std::result::Result<(), Errno> {
        mounter::filesystem(source, target, fs_type, flags, data)
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        mounter::unmount(target)
    }

    fn detach(&self, target: &Path) -> Result<()> {
        mounter::detach(target)
    }

    fn loop_device_of(&self, file: &Path) -> Option<Loop> {
        loopback::device_of(file)
    }

    fn attach_loop(&self, file: &Path, autoclear: bool) -> Result<Attached> {
        loopback::attach(file, autoclear).map(|(hold, device)| Attached {
            device,
            hold: Some(hold),
        })
    }

    fn detach_loop(&self, device: &Path) -> Result<()> {
        loopback::detach(device)
    }

    fn refresh_loop_capacity(&self, device: &Path) -> Result<()> {
        loopback::refresh_capacity(device)
    }

    fn mounted_loop_device(&self, path: &Path) -> Result<Option<PathBuf>> {
        loopback::mounted_at(path)
    }

    fn device_size(&self, device: &Path) -> Result<u64> {
        loopback::device_size(device)
    }

    fn ext4_size(&self, device: &Path) -> Result<u64> {
        loopback::ext4_size(device)
    }

    fn grow_offline(&self, device: &Path) -> Result<()> {
        stowage_common::tool::e2fs::grow_offline(device).map_err(|source| Error::Tool {
            device: device.into(),
            source,
        })
    }

    fn grow_online(&self, device: &Path) -> Result<()> {
        stowage_common::tool::e2fs::resize(device).map_err(|source| Error::Tool {
            device: device.into(),
            source,
        })
    }

    fn may_grow_online(&self) -> bool {
        // The kernel checks CAP_SYS_RESOURCE for EXT4_IOC_RESIZE_FS; asked of this
        // process before resize2fs runs rather than read from resize2fs's message.
        rustix::thread::capabilities(None).is_ok_and(|sets| {
            sets.effective
                .contains(rustix::thread::CapabilitySet::SYS_RESOURCE)
        })
    }
}
