//! Stale NFS handles. When the export's directory is replaced under a staged volume
//! (restored from backup, recreated by an administrator), the kernel's handles for it
//! go stale and every open through the pod's bind fails with ESTALE until something
//! mounts it again. NodeGetVolumeStats, which the CO calls periodically, finds that,
//! reports the volume abnormal and mounts it again in place: a new NFS mount at the
//! staging path if the share's own directory went stale, and a new bind at the
//! target, so the pod's next open works without the CO unstaging anything.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;

use crate::beneath::{Handle, Links};
use crate::error::{Error, Result};
use crate::host::Mounts;
use crate::mountinfo::{MountEntry, MountTable};
use crate::mounts::{Filesystem, MountIndex};

/// Is `path` an NFS volume whose handle the server no longer knows?
pub fn is_stale(mounts: &dyn Mounts, path: &Path) -> bool {
    matches!(mounts.usage(path), Err(Errno::ESTALE))
}

/// Mounts the NFS volume published at `target` (staged at `staging`, or wherever its
/// export is mounted when the CO did not say) again; returns what was done. Both
/// paths lie below `kubelet` (the kubelet directory's path and fd), and every mount
/// point is opened beneath it after the stale mount on it is gone.
pub fn remount_stale(
    mounts: &dyn Mounts,
    kubelet: (&Path, &Handle),
    index: &MountIndex,
    target: &Path,
    staging: Option<&Path>,
) -> Result<String> {
    let table = mounts.table()?;
    let published = table
        .at(target)
        .filter(|m| m.fs_type.starts_with("nfs"))
        .ok_or_else(|| Error::NotNfsMount {
            path: target.into(),
        })?
        .clone();
    let staged = staged_export(&table, &published, staging)?.clone();
    let mut done = Vec::new();
    let open = |path: &Path| {
        let relative = path
            .strip_prefix(kubelet.0)
            .map_err(|_| Error::PathEscapes { path: path.into() })?;
        kubelet.1.resolve(relative, Links::Refused)
    };
    if is_stale(mounts, &staged.mount_point) {
        remount_export(mounts, &staged, open)?;
        let filesystem = Filesystem {
            fs_type: staged.fs_type.clone(),
            source: staged.source.clone(),
        };
        let remounted = open(&staged.mount_point)?;
        index.record(
            remounted.path(),
            mounts.facts(&remounted)?,
            Some(filesystem),
        );
        done.push(format!("remounted {}", staged.mount_point.display()));
    }
    rebind(mounts, &published, &staged, open)?;
    let bound = open(target)?;
    index.record(bound.path(), mounts.facts(&bound)?, None);
    done.push(format!("bound {} again", target.display()));
    Ok(done.join(", "))
}

/// The export's mount at the staging path: the same server and share, its root.
fn staged_export<'a>(
    table: &'a MountTable,
    published: &MountEntry,
    staging: Option<&Path>,
) -> Result<&'a MountEntry> {
    table
        .entries()
        .iter()
        .rev()
        .filter(|m| m.fs_type == published.fs_type && same_export(&m.source, &published.source))
        .filter(|m| m.root == Path::new("/") && m.mount_point != published.mount_point)
        .find(|m| staging.is_none_or(|s| m.mount_point == s))
        .ok_or_else(|| Error::NfsExportNotStaged {
            export: published.source.clone(),
            target: published.mount_point.clone(),
        })
}

/// The kernel names an NFS mount by the path of its root on the server, so a bind of
/// a subdirectory reads `server:/share/sub` where the staged export reads
/// `server:/share`.
fn same_export(staged: &str, published: &str) -> bool {
    published == staged
        || published
            .strip_prefix(staged.trim_end_matches('/'))
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The subdirectory of the export that the pod's bind shows: what its name adds to the
/// export's (mountinfo's root field says `/` for both).
fn sub_dir(staged: &MountEntry, published: &MountEntry) -> PathBuf {
    published
        .source
        .strip_prefix(staged.source.trim_end_matches('/'))
        .map(|rest| rest.trim_start_matches('/'))
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Detaches the stale export mount and mounts the share again, with the options the
/// kernel reported for it.
fn remount_export(
    mounts: &dyn Mounts,
    staged: &MountEntry,
    open: impl Fn(&Path) -> Result<Handle>,
) -> Result<()> {
    let path = &staged.mount_point;
    mounts.detach(path)?;
    let dir = open(path)?;
    let flags = if staged.read_only() {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    let data = staged.super_options.join(",");
    mounts
        .mount(&staged.source, &dir, &staged.fs_type, flags, Some(&data))
        .map_err(|e| Error::mount(format!("mount {} on {}", staged.source, path.display()), e))
}

/// Replaces the pod's bind with a new one of the same subdirectory of the export.
fn rebind(
    mounts: &dyn Mounts,
    published: &MountEntry,
    staged: &MountEntry,
    open: impl Fn(&Path) -> Result<Handle>,
) -> Result<()> {
    let target = &published.mount_point;
    let source = open(&staged.mount_point)?.resolve(&sub_dir(staged, published), Links::Refused)?;
    mounts.detach(target)?;
    let target_dir = open(target)?;
    mounts.bind(&source, &target_dir, published.read_only())
}

#[cfg(test)]
mod tests {
    use super::same_export;

    #[test]
    fn a_bind_of_a_subdirectory_belongs_to_its_export() {
        for (staged, published, same) in [
            ("h:/share", "h:/share", true),
            ("h:/share", "h:/share/pvc-1", true),
            ("h:/share/", "h:/share/pvc-1", true),
            ("h:/share", "h:/shared/pvc-1", false),
            ("h:/share", "g:/share/pvc-1", false),
            ("h:/share/pvc-1", "h:/share", false),
        ] {
            assert_eq!(same_export(staged, published), same, "{staged} {published}");
        }
    }
}
