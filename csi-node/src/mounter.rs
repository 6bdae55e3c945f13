//! Mount effects through mount(2)/umount2(2): no `mount` binary, no table rescans.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::error::{Error, Result};

/// Bind-mounts `source` on `target`; read-only needs a second, remounting call.
pub fn bind(source: &Path, target: &Path, read_only: bool) -> Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        Error::mount(
            format!("bind {} on {}", source.display(), target.display()),
            e,
        )
    })?;
    if read_only {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            let _ = unmount(target);
            return Err(Error::mount(
                format!("remount {} read-only", target.display()),
                e,
            ));
        }
    }
    Ok(())
}

/// Mounts a tmpfs limited to `size_bytes` (0: the kernel default of half the RAM).
pub fn tmpfs(target: &Path, size_bytes: u64, read_only: bool) -> Result<()> {
    let data = if size_bytes > 0 {
        format!("size={size_bytes},mode=0777")
    } else {
        "mode=0777".to_string()
    };
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|e| Error::mount(format!("tmpfs on {}", target.display()), e))
}

/// Unmounts `target`; not being mounted is fine.
pub fn unmount(target: &Path) -> Result<()> {
    match umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::mount(format!("unmount {}", target.display()), e)),
    }
}
