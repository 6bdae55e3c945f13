//! Image and block volumes on the node: loop devices over the volume's file, the ext4
//! mount at the staging path, and online growth.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use loopdev::{LoopControl, LoopDevice};
use nix::mount::MsFlags;

use crate::beneath::{self, Handle};
use crate::error::{Error, Result};
use crate::mounter;

/// The loop device backed by `file`, if one is attached.
pub fn loop_device_of(file: &Path) -> Option<PathBuf> {
    stowage_common::loop_device::backing(file)
}

/// Attaches `file` to a free loop device. With `autoclear`, the kernel detaches it when
/// its last user goes away, so the returned handle must stay open until a mount holds it.
pub fn attach(file: &Path, autoclear: bool) -> Result<(LoopDevice, PathBuf)> {
    let io = |what: &str, e: std::io::Error| Error::io(format!("{what} for {}", file.display()), e);
    let control = LoopControl::open().map_err(|e| io("open loop-control", e))?;
    let mut attempt = 0;
    let device = loop {
        let device = control
            .next_free()
            .map_err(|e| io("find a free loop device", e))?;
        match device.with().autoclear(autoclear).attach(file) {
            Ok(()) => break device,
            // Another attach (concurrent stages run in parallel) took the free device
            // between the lookup and ours: look again.
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) && attempt < LOOP_RACE_RETRIES => {
                attempt += 1;
            }
            Err(e) => return Err(io("attach loop device", e)),
        }
    };
    let path = device
        .path()
        .ok_or_else(|| io("name the loop device", std::io::ErrorKind::NotFound.into()))?;
    Ok((device, path))
}

pub fn detach(device: &Path) -> Result<()> {
    LoopDevice::open(device)
        .and_then(|d| d.detach())
        .map_err(|e| Error::io(format!("detach {}", device.display()), e))
}

/// Mounts the ext4 image at the `staging` directory through an autoclear loop device,
/// then grows the filesystem to the file if the controller enlarged it meanwhile.
pub fn stage_image(image: &Path, staging: &Handle) -> Result<()> {
    if staging.is_mount_root()? {
        // The handle was opened through the mount: its device is the mounted filesystem's.
        let ours = loop_device_of(image)
            .and_then(|dev| fs::metadata(dev).ok())
            .is_some_and(|dev| {
                staging
                    .identity()
                    .is_ok_and(|(mounted, _)| mounted == dev.rdev())
            });
        return if ours {
            Ok(())
        } else {
            Err(Error::AlreadyExists(format!(
                "{} already holds another mount",
                staging.path().display()
            )))
        };
    }
    let (handle, device) = attach(image, true)?;
    // The controller may have grown the file while nothing held it mounted: grow the
    // filesystem now, offline, which needs no CAP_SYS_RESOURCE (online growth does).
    if let Err(e) = grow_offline_if_needed(&device) {
        drop(handle);
        return Err(e);
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let source = device.to_string_lossy();
    let mounted = mounter::filesystem(&source, staging, "ext4", flags, None);
    // Closing our handle leaves the mount as the device's only user (or, if the mount
    // failed, no user at all: autoclear then detaches it).
    drop(handle);
    mounted.map_err(|e| {
        Error::mount(
            format!("mount {} on {}", device.display(), staging.path().display()),
            e,
        )
    })
}

fn grow_offline_if_needed(device: &Path) -> Result<()> {
    let fs_bytes = ext4_size(device)?;
    if fs_bytes >= u64::try_from(device_size(device)?).unwrap_or(0) {
        return Ok(());
    }
    run("e2fsck", &["-f", "-p"], device)?;
    run("resize2fs", &[], device)
}

/// The size the ext4 superblock claims: blocks count (lo and, with 64bit, hi) times block size.
fn ext4_size(device: &Path) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut sb = [0u8; 1024];
    fs::File::open(device)
        .and_then(|f| f.read_exact_at(&mut sb, 1024))
        .map_err(|e| Error::io(format!("read the superblock of {}", device.display()), e))?;
    let word = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
    let incompat_64bit = word(0x60) & 0x80 != 0;
    let blocks = u64::from(word(0x04))
        | if incompat_64bit {
            u64::from(word(0x150)) << 32
        } else {
            0
        };
    Ok(blocks << (10 + word(0x18).min(6)))
}

/// Attaches a block volume's file to a loop device (once) and returns the device.
pub fn stage_block(file: &Path) -> Result<PathBuf> {
    match loop_device_of(file) {
        Some(device) => Ok(device),
        None => attach(file, false).map(|(_, device)| device),
    }
}

/// Free-device lookups lost to concurrent attaches before giving up.
const LOOP_RACE_RETRIES: usize = 32;

/// Detaches a block volume's loop device, found by its file (the end of unstaging a
/// block volume; an image volume's autoclear device goes with its mount).
pub fn detach_block(block_file: Option<&Path>) -> Result<()> {
    if let Some(device) = block_file.and_then(loop_device_of) {
        detach(&device)?;
    }
    Ok(())
}

/// The loop device whose ext4 is mounted at `path`, if that is what is there: the
/// mount's device from one `statx`, its name from sysfs, no mount table.
pub fn mounted_loop_device(path: &Path) -> Result<Option<PathBuf>> {
    let facts = beneath::mount_facts_at(path)
        .map_err(|e| Error::io(format!("statx {}", path.display()), e))?;
    let (major, minor) = (
        rustix::fs::major(facts.identity.0),
        rustix::fs::minor(facts.identity.0),
    );
    if !facts.mount_root || major != LOOP_MAJOR {
        return Ok(None);
    }
    let magic = rustix::fs::statfs(path)
        .map_err(|e| Error::io(format!("statfs {}", path.display()), e.into()))?
        .f_type;
    if magic != EXT4_MAGIC {
        return Ok(None);
    }
    let link = format!("/sys/dev/block/{major}:{minor}");
    let target = fs::read_link(&link).map_err(|e| Error::io(format!("read {link}"), e))?;
    Ok(target.file_name().map(|name| Path::new("/dev").join(name)))
}

const LOOP_MAJOR: u32 = 7;
/// `statfs.f_type` of ext2/3/4.
const EXT4_MAGIC: i64 = 0xEF53;

/// Grows the loop `device` to its file and the filesystem mounted from it; returns the
/// device size in bytes.
pub fn expand_mounted(device: &Path) -> Result<i64> {
    LoopDevice::open(device)
        .and_then(|d| d.set_capacity())
        .map_err(|e| Error::io(format!("refresh capacity of {}", device.display()), e))?;
    resize2fs(device)?;
    device_size(device)
}

fn device_size(device: &Path) -> Result<i64> {
    let name = device
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let sectors = fs::read_to_string(format!("/sys/block/{name}/size"))
        .map_err(|e| Error::io(format!("size of {}", device.display()), e))?;
    Ok(sectors.trim().parse::<i64>().unwrap_or(0) * 512)
}

/// resize2fs grows a mounted ext4 online; at the same size it is a no-op. The kernel
/// allows it only with CAP_SYS_RESOURCE.
fn resize2fs(device: &Path) -> Result<()> {
    run("resize2fs", &[], device).map_err(|e| match e {
        Error::Io { source, .. } if source.to_string().contains("Permission denied") => Error::PermissionDenied(format!(
            "growing the mounted filesystem on {} needs CAP_SYS_RESOURCE, which this node plugin lacks; \
             it will grow when the volume is next staged",
            device.display()
        )),
        other => other,
    })
}

fn run(tool: &str, args: &[&str], device: &Path) -> Result<()> {
    let out = Command::new(tool)
        .args(args)
        .arg(device)
        .output()
        .map_err(|e| Error::io(format!("run {tool}"), e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::io(
        format!("{tool} {}", device.display()),
        std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    ))
}
