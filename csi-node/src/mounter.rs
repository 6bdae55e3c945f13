//! Mount effects through the kernel's mount API: no `mount` binary, no table rescans.
//! Sources and targets are fds from [`beneath`](crate::beneath), never paths, so a
//! path swapped after it was checked cannot redirect a mount.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags, umount2};
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, OpenTreeFlags,
};

use crate::beneath::Handle;
use crate::error::{Error, Result};

/// Bind-mounts `source` on `target`: a detached copy of the source's mount is taken
/// from its fd and attached at the target's fd.
pub fn bind(source: &Handle, target: &Handle, read_only: bool) -> Result<()> {
    let failed = |what: &str, e: rustix::io::Errno| {
        Error::mount(
            format!(
                "{what} {} on {}",
                source.path().display(),
                target.path().display()
            ),
            nix::errno::Errno::from_raw(e.raw_os_error()),
        )
    };
    let tree = rustix::mount::open_tree(
        source.as_fd(),
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| failed("bind", e))?;
    attach(&tree, target).map_err(|e| failed("bind", e))?;
    if read_only {
        // A detached mount cannot be remounted; once attached, its fd still names
        // exactly the new mount, whatever the target's path now leads to.
        let attached = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&tree));
        let flags = MountFlags::BIND | MountFlags::RDONLY;
        if let Err(e) = rustix::mount::mount_remount(attached.as_str(), flags, "") {
            let _ = umount2(attached.as_str(), MntFlags::MNT_DETACH);
            return Err(failed("remount read-only", e));
        }
    }
    Ok(())
}

/// Mounts a new tmpfs limited to `size_bytes` (0: the kernel default of half the RAM),
/// read-only from its first moment when asked.
pub fn tmpfs(target: &Handle, size_bytes: u64, read_only: bool, group: Option<u32>) -> Result<()> {
    let failed = |e: rustix::io::Errno| {
        Error::mount(
            format!("tmpfs on {}", target.path().display()),
            nix::errno::Errno::from_raw(e.raw_os_error()),
        )
    };
    let fs = rustix::mount::fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).map_err(failed)?;
    if size_bytes > 0 {
        rustix::mount::fsconfig_set_string(&fs, "size", size_bytes.to_string().as_str())
            .map_err(failed)?;
    }
    // A pod's fsGroup (volume_mount_group) owns the root, setgid so new entries keep it.
    let mode = if let Some(gid) = group {
        rustix::mount::fsconfig_set_string(&fs, "gid", gid.to_string().as_str()).map_err(failed)?;
        "2777"
    } else {
        "0777"
    };
    rustix::mount::fsconfig_set_string(&fs, "mode", mode).map_err(failed)?;
    rustix::mount::fsconfig_create(&fs).map_err(failed)?;
    let mut attributes = MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV;
    if read_only {
        attributes |= MountAttrFlags::MOUNT_ATTR_RDONLY;
    }
    let mount =
        rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attributes).map_err(failed)?;
    attach(&mount, target).map_err(failed)
}

/// Mounts a filesystem from a device (or an NFS export) at `target`'s directory; the
/// target is named by its fd's `/proc` path, so it is the directory that was checked.
pub fn filesystem(
    source: &str,
    target: &Handle,
    fs_type: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> std::result::Result<(), nix::errno::Errno> {
    nix::mount::mount(
        Some(source),
        &target.proc_path(),
        Some(fs_type),
        flags,
        data,
    )
}

fn attach(mount: &std::os::fd::OwnedFd, target: &Handle) -> rustix::io::Result<()> {
    rustix::mount::move_mount(
        mount,
        "",
        target.as_fd(),
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
}

/// Detaches the topmost mount at `target` lazily (`MNT_DETACH`): the kernel drops it
/// from the tree now and frees it when its last user goes, without waiting on it.
pub fn detach(target: &Path) -> Result<()> {
    umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
        .map_err(|e| Error::mount(format!("detach stale {}", target.display()), e))
}

/// Unmounts `target`; not being mounted is fine.
pub fn unmount(target: &Path) -> Result<()> {
    match umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::mount(format!("unmount {}", target.display()), e)),
    }
}
