//! Loop devices over volume files and what the kernel says of them: attach and detach,
//! the device behind a file or a mount (from sysfs, so it survives a restart of the
//! plugin), sizes. [`HostMounts`](crate::host::HostMounts) calls these.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use loopdev::{LoopControl, LoopDevice};

use crate::beneath;
use crate::error::{Error, Result};
use crate::host::Loop;

/// The block major of loop devices.
const LOOP_MAJOR: u32 = 7;
/// `statfs.f_type` of ext2/3/4.
const EXT4_MAGIC: i64 = 0xEF53;
/// Free-device lookups lost to concurrent attaches before giving up.
const LOOP_RACE_RETRIES: usize = 32;

/// The loop device backed by `file`, if one is attached.
pub fn device_of(file: &Path) -> Option<Loop> {
    stowage_common::loop_device::backing(file).map(|device| Loop {
        number: fs::metadata(&device).ok().map(|m| m.rdev()),
        device,
    })
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

/// Detaches the loop device `device`.
pub fn detach(device: &Path) -> Result<()> {
    LoopDevice::open(device)
        .and_then(|d| d.detach())
        .map_err(|e| Error::io(format!("detach {}", device.display()), e))
}

/// Makes the loop device take its file's current size (`LOOP_SET_CAPACITY`).
pub fn refresh_capacity(device: &Path) -> Result<()> {
    LoopDevice::open(device)
        .and_then(|d| d.set_capacity())
        .map_err(|e| Error::io(format!("refresh capacity of {}", device.display()), e))
}

/// The loop device whose ext4 is mounted at `path`, if that is what is there: the
/// mount's device from one `statx`, its name from sysfs, no mount table.
pub fn mounted_at(path: &Path) -> Result<Option<PathBuf>> {
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

/// The device's size in bytes, from the sector count sysfs reports.
pub fn device_size(device: &Path) -> Result<u64> {
    let name = device
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let text = fs::read_to_string(format!("/sys/block/{name}/size"))
        .map_err(|e| Error::io(format!("size of {}", device.display()), e))?;
    sectors_to_bytes(&text).ok_or_else(|| Error::DeviceSizeUnreadable {
        device: device.into(),
        text: text.trim().into(),
    })
}

/// sysfs's size file: 512-byte sectors, whatever the device's block size.
fn sectors_to_bytes(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok()?.checked_mul(512)
}

/// The size the ext4 superblock claims: blocks count (lo and, with 64bit, hi) times block size.
pub fn ext4_size(device: &Path) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut sb = [0u8; 1024];
    fs::File::open(device)
        .and_then(|f| f.read_exact_at(&mut sb, 1024))
        .map_err(|e| Error::io(format!("read the superblock of {}", device.display()), e))?;
    Ok(superblock_size(&sb))
}

fn superblock_size(sb: &[u8; 1024]) -> u64 {
    let word = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
    let incompat_64bit = word(0x60) & 0x80 != 0;
    let blocks = u64::from(word(0x04))
        | if incompat_64bit {
            u64::from(word(0x150)) << 32
        } else {
            0
        };
    blocks << (10 + word(0x18).min(6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_sizes_are_sectors_or_refused() {
        let rows = [
            ("a sector count", "2048\n", Some(1 << 20)),
            ("zero", "0\n", Some(0)),
            ("not a number", "lots\n", None),
            ("negative", "-1\n", None),
            ("empty", "", None),
            ("overflowing bytes", "36028797018963968\n", None),
        ];
        for (name, text, want) in rows {
            assert_eq!(sectors_to_bytes(text), want, "{name}");
        }
    }

    #[test]
    fn superblock_sizes_read_the_64bit_high_word_only_when_flagged() {
        let sb = |lo: u32, hi: u32, log: u32, flag64: bool| {
            let mut sb = [0u8; 1024];
            sb[0x04..0x08].copy_from_slice(&lo.to_le_bytes());
            sb[0x150..0x154].copy_from_slice(&hi.to_le_bytes());
            sb[0x18..0x1c].copy_from_slice(&log.to_le_bytes());
            if flag64 {
                sb[0x60..0x64].copy_from_slice(&0x80u32.to_le_bytes());
            }
            sb
        };
        let rows = [
            ("1k blocks", sb(1000, 0, 0, false), 1000 << 10),
            ("4k blocks", sb(1000, 0, 2, false), 1000 << 12),
            (
                "high word ignored without 64bit",
                sb(1, 1, 2, false),
                1 << 12,
            ),
            ("high word with 64bit", sb(0, 1, 2, true), 1 << 44),
            (
                "a block size log past 64k is capped",
                sb(1, 0, 40, false),
                1 << 16,
            ),
        ];
        for (name, sb, want) in rows {
            assert_eq!(superblock_size(&sb), want, "{name}");
        }
    }
}
