//! Image and block volumes on the node: what staging, unstaging and growth decide.
//! Image volumes are ext4 on an autoclear loop device mounted at the staging path;
//! block volumes are a loop device over the file. The effects are the [`Mounts`]'.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::beneath::Handle;
use crate::error::{Error, Result};
use crate::host::Mounts;

/// Mounts the ext4 image at the `staging` directory through an autoclear loop device,
/// then grows the filesystem to the file if the controller enlarged it meanwhile.
pub fn stage_image(mounts: &dyn Mounts, image: &Path, staging: &Handle) -> Result<()> {
    let facts = mounts.facts(staging)?;
    if facts.mount_root {
        // CSI NodeStageVolume: staged already with the same volume is success; the
        // handle was opened through the mount, so its device is the mounted filesystem's.
        let ours = mounts
            .loop_device_of(image)
            .and_then(|attached| attached.number)
            .is_some_and(|number| number == facts.identity.0);
        return if ours {
            Ok(())
        } else {
            Err(Error::StagingInUse {
                path: staging.path().into(),
            })
        };
    }
    let attached = mounts.attach_loop(image, true)?;
    // The controller may have grown the file while nothing held it mounted: grow the
    // filesystem now, offline, which needs no CAP_SYS_RESOURCE (online growth does).
    grow_offline_if_needed(mounts, &attached.device)?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let source = attached.device.to_string_lossy();
    let mounted = mounts.mount(&source, staging, "ext4", flags, None);
    // Closing our handle leaves the mount as the device's only user (or, if the mount
    // failed, no user at all: autoclear then detaches it).
    let device = attached.device.clone();
    drop(attached);
    mounted.map_err(|e| {
        Error::mount(
            format!("mount {} on {}", device.display(), staging.path().display()),
            e,
        )
    })
}

fn grow_offline_if_needed(mounts: &dyn Mounts, device: &Path) -> Result<()> {
    if mounts.ext4_size(device)? >= mounts.device_size(device)? {
        return Ok(());
    }
    mounts.grow_offline(device)
}

/// Attaches a block volume's file to a loop device (once) and returns the device.
pub fn stage_block(mounts: &dyn Mounts, file: &Path) -> Result<PathBuf> {
    match mounts.loop_device_of(file) {
        Some(attached) => Ok(attached.device),
        None => mounts.attach_loop(file, false).map(|a| a.device.clone()),
    }
}

/// Detaches a block volume's loop device, found by its file (the end of unstaging a
/// block volume; an image volume's autoclear device goes with its mount).
pub fn detach_block(mounts: &dyn Mounts, block_file: Option<&Path>) -> Result<()> {
    if let Some(attached) = block_file.and_then(|file| mounts.loop_device_of(file)) {
        mounts.detach_loop(&attached.device)?;
    }
    Ok(())
}

/// Grows the loop `device` to its file and the filesystem mounted from it; returns the
/// device size in bytes. A filesystem already as large as the device is left alone, so
/// only real growth needs CAP_SYS_RESOURCE, and its lack is known before resize2fs runs.
pub fn expand_mounted(mounts: &dyn Mounts, device: &Path) -> Result<i64> {
    mounts.refresh_loop_capacity(device)?;
    let size = mounts.device_size(device)?;
    if mounts.ext4_size(device)? < size {
        if !mounts.may_grow_online() {
            return Err(Error::GrowthNeedsCapability {
                device: device.into(),
            });
        }
        mounts.grow_online(device)?;
    }
    Ok(i64::try_from(size).unwrap_or(i64::MAX))
}
