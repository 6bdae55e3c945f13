//! `volume_mount_group`: the pod's fsGroup, which kubelet hands to a driver that
//! advertises VOLUME_MOUNT_GROUP instead of changing the volume's ownership itself
//! (kubelet's recursive chown walks every file at every mount).
//!
//! The CSI spec asks that "new file and/or directory entries written to the
//! underlying filesystem SHOULD be permission-labeled ... that they are both readable
//! and writable by said mount group identifier". For the volumes this plugin binds
//! (local directories, quota and image volumes, NFS subdirectories, ephemeral scratch)
//! that is the volume's root directory owned by the group with `g+rwxs`: the group may
//! write there, and the setgid bit gives whatever is created below the same group.
//! Existing data keeps its owners: nothing is walked.

use csi_proto::v1::VolumeCapability;
use csi_proto::v1::volume_capability::AccessType;
use rustix::fs::{Gid, Mode, OFlags};

use crate::beneath::Handle;
use crate::error::{Error, Result};

/// Group read, write and search, and setgid (new entries inherit the group).
const GROUP_BITS: u32 = 0o2070;

/// The group the capability asks for, if any: a decimal gid, as kubelet sends fsGroup.
pub(crate) fn requested(capability: &VolumeCapability) -> Result<Option<u32>> {
    let Some(AccessType::Mount(mount)) = &capability.access_type else {
        return Ok(None);
    };
    match mount.volume_mount_group.as_str() {
        "" => Ok(None),
        raw => raw.parse::<u32>().map(Some).map_err(|_| {
            Error::invalid(
                "volume_capability.mount.volume_mount_group",
                format!("{raw:?} is not a numeric group id"),
            )
        }),
    }
}

/// Gives the volume root `root` to `gid` with `g+rwxs`; does nothing when it already
/// is, so a repeated publish writes nothing.
pub(crate) fn apply(root: &Handle, gid: u32) -> Result<()> {
    let failed = |what: &str, e: rustix::io::Errno| {
        Error::io(
            format!("{what} {}", root.path().display()),
            std::io::Error::from(e),
        )
    };
    // The handle is an O_PATH fd, which fchown and fchmod refuse: the directory is
    // opened again through it ("." of that very directory, so no path is walked).
    let dir = rustix::fs::openat(
        root.as_fd(),
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| failed("open", e))?;
    let stat = rustix::fs::fstat(&dir).map_err(|e| failed("stat", e))?;
    if stat.st_gid != gid {
        rustix::fs::fchown(&dir, None, Some(Gid::from_raw(gid))).map_err(|e| failed("chgrp", e))?;
    }
    let mode = stat.st_mode & 0o7777;
    if mode & GROUP_BITS != GROUP_BITS {
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode | GROUP_BITS))
            .map_err(|e| failed("chmod", e))?;
    }
    Ok(())
}

/// Whether the volume root is already given to `gid` as [`apply`] leaves it.
pub(crate) fn holds(root: &Handle, gid: u32) -> Result<bool> {
    let stat = rustix::fs::fstat(root.as_fd()).map_err(|e| {
        Error::io(
            format!("stat {}", root.path().display()),
            std::io::Error::from(e),
        )
    })?;
    Ok(stat.st_gid == gid && stat.st_mode & GROUP_BITS == GROUP_BITS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_proto::v1::volume_capability::{BlockVolume, MountVolume};

    fn mount(group: &str) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume {
                volume_mount_group: group.into(),
                ..Default::default()
            })),
            access_mode: None,
        }
    }

    #[test]
    fn requested_groups() {
        let block = VolumeCapability {
            access_type: Some(AccessType::Block(BlockVolume {})),
            access_mode: None,
        };
        let cases: &[(&VolumeCapability, Option<Option<u32>>)] = &[
            (&mount(""), Some(None)),
            (&mount("2000"), Some(Some(2000))),
            (&mount("0"), Some(Some(0))),
            (&mount("-1"), None),
            (&mount("wheel"), None),
            (&mount("99999999999"), None),
            (&block, Some(None)),
        ];
        for (capability, want) in cases {
            assert_eq!(
                requested(capability).ok(),
                *want,
                "{:?}",
                capability.access_type
            );
        }
    }

    #[test]
    fn apply_sets_group_and_setgid_once_and_keeps_other_bits() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let root = Handle::open_root(dir.path()).expect("open");
        assert!(!holds(&root, 4321).expect("holds"));
        apply(&root, 4321).expect("apply");
        let meta = std::fs::metadata(dir.path()).expect("stat");
        assert_eq!(meta.gid(), 4321);
        assert_eq!(meta.mode() & 0o7777, 0o2775);
        assert!(holds(&root, 4321).expect("holds"));
        let before = std::fs::metadata(dir.path()).expect("stat").ctime_nsec();
        apply(&root, 4321).expect("apply again");
        assert_eq!(
            std::fs::metadata(dir.path()).expect("stat").ctime_nsec(),
            before,
            "a second apply changes nothing"
        );
    }
}
