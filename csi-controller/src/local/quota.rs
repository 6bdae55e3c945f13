//! XFS project quotas: a directory per volume with its own project id and a hard block
//! limit equal to the volume's capacity. XFS then refuses writes past the limit
//! (EDQUOT) and reports the limit as the size of the filesystem to `statfs` of any
//! path inside a directory that carries the project-inherit flag, so `df` in a pod
//! shows the claim's size.
//!
//! Neither nix nor rustix wraps the quotactl for project quotas nor the
//! FS_IOC_FSSETXATTR ioctl that sets a directory's project id, and the workspace
//! forbids `unsafe`; so the work is done by xfsprogs' `xfs_quota -x`, and its effect is
//! checked with `statvfs` (the limit the kernel reports), never by reading the tool's
//! output.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use stowage_common::mountinfo::MountTable;
use stowage_common::tool::{self, Program};

use crate::error::{Error, Result};

/// `statfs.f_type` of XFS.
const XFS_MAGIC: i64 = 0x5846_5342;
/// The super option XFS shows when project quotas are accounted and enforced
/// (`pqnoenforce` when only accounted).
const ENFORCED: &str = "prjquota";
const XFS_QUOTA: Program = Program {
    name: "xfs_quota",
    package: "xfsprogs",
};

/// Project ids Stowage hands out: above the small ids administrators number their
/// own projects with in /etc/projects, below 2^31.
pub const FIRST_PROJECT: u32 = 1 << 20;
/// The last project id Stowage hands out.
pub const LAST_PROJECT: u32 = (1 << 31) - 1;

/// Whether the local root can hold quota volumes, decided once at start.
#[derive(Debug, Clone)]
pub enum QuotaSupport {
    /// Project quotas are enforced on the root's filesystem.
    Ready(QuotaRoot),
    /// They are not, for this reason.
    Unavailable(NoQuota),
}

/// Why the local root cannot hold quota volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoQuota {
    /// The root is on another filesystem than XFS.
    NotXfs {
        /// Its statfs magic.
        fs_type: i64,
    },
    /// XFS, but mounted without enforced project quotas.
    NotEnforced {
        /// Where the root's filesystem is mounted.
        mount_point: PathBuf,
        /// Its super options (no `prjquota` among them).
        options: Vec<String>,
    },
    /// The root's filesystem could not be asked (statfs or mountinfo failed).
    Unknown(String),
}

impl fmt::Display for NoQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotXfs { fs_type } => write!(
                f,
                "the local root is not on XFS (filesystem magic {fs_type:#x})"
            ),
            Self::NotEnforced {
                mount_point,
                options,
            } => write!(
                f,
                "the local root's XFS at {} is mounted without prjquota (options {})",
                mount_point.display(),
                options.join(",")
            ),
            Self::Unknown(reason) => write!(f, "the local root's filesystem is unknown: {reason}"),
        }
    }
}

/// An XFS filesystem mounted with enforced project quotas, named by its mount point
/// (what `xfs_quota` is given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRoot {
    mount_point: PathBuf,
}

/// Asks the kernel whether `root` is on XFS mounted with enforced project quotas:
/// `statfs` for the filesystem, then the super options of the mount holding it (the
/// mount of the same device whose mount point is the longest prefix of the root).
pub fn detect(root: &Path) -> QuotaSupport {
    match detect_inner(root) {
        Ok(ready) => QuotaSupport::Ready(ready),
        Err(no) => QuotaSupport::Unavailable(no),
    }
}

fn detect_inner(root: &Path) -> std::result::Result<QuotaRoot, NoQuota> {
    let unknown = |what: &str, e: &dyn fmt::Display| NoQuota::Unknown(format!("{what}: {e}"));
    let stat = nix::sys::statfs::statfs(root).map_err(|e| unknown("statfs", &e))?;
    #[allow(clippy::useless_conversion)] // f_type's width differs between targets
    let fs_type = i64::from(stat.filesystem_type().0);
    if fs_type != XFS_MAGIC {
        return Err(NoQuota::NotXfs { fs_type });
    }
    let canonical = root
        .canonicalize()
        .map_err(|e| unknown("canonicalize", &e))?;
    let dev = std::fs::metadata(&canonical)
        .map_err(|e| unknown("stat", &e))?
        .dev();
    let number = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    let device = (
        number(nix::sys::stat::major(dev)),
        number(nix::sys::stat::minor(dev)),
    );
    let table = MountTable::read().map_err(|e| unknown("mountinfo", &e))?;
    let entry = table
        .entries()
        .iter()
        .filter(|m| m.device == device && canonical.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.components().count())
        .ok_or_else(|| NoQuota::Unknown("no mount of the root's device in mountinfo".into()))?;
    if !entry.super_options.iter().any(|o| o == ENFORCED) {
        return Err(NoQuota::NotEnforced {
            mount_point: entry.mount_point.clone(),
            options: entry.super_options.clone(),
        });
    }
    Ok(QuotaRoot {
        mount_point: entry.mount_point.clone(),
    })
}

impl QuotaRoot {
    /// Gives the tree at `dir` project `project` (with the inherit flag on every
    /// directory, so what is created below stays in the project) and a hard limit of
    /// `bytes`; checks that the kernel now reports the limit.
    pub fn assign(&self, dir: &Path, project: u32, bytes: u64) -> Result<()> {
        let path = command_path(dir)?;
        self.run(&format!("project -s -p {path} {project}"))?;
        self.set_limit(dir, project, bytes)
    }

    /// Raises (or sets) the hard block limit of `project`, whose tree is at `dir`.
    pub fn set_limit(&self, dir: &Path, project: u32, bytes: u64) -> Result<()> {
        self.run(&format!("limit -p bhard={bytes} {project}"))?;
        let reported = reported_limit(dir)?;
        // XFS reports the smaller of the limit and the filesystem.
        let whole = reported_limit(&self.mount_point)?;
        if reported != bytes.min(whole) {
            return Err(Error::QuotaLimitNotApplied {
                project,
                bytes,
                dir: dir.to_path_buf(),
                reported,
            });
        }
        Ok(())
    }

    /// Drops the limit of `project` (a limit of 0 is none).
    pub fn clear_limit(&self, project: u32) -> Result<()> {
        self.run(&format!("limit -p bhard=0 {project}"))
    }

    /// Takes the tree at `dir` out of `project` (retained data outlives its volume).
    pub fn clear_project(&self, dir: &Path, project: u32) -> Result<()> {
        let path = command_path(dir)?;
        self.run(&format!("project -C -p {path} {project}"))
    }

    fn run(&self, command: &str) -> Result<()> {
        let args = [
            OsStr::new("-x"),
            OsStr::new("-c"),
            OsStr::new(command),
            self.mount_point.as_os_str(),
        ];
        tool::run(XFS_QUOTA, args).map_err(|source| Error::Tool {
            path: self.mount_point.clone(),
            source,
        })
    }
}

/// The size XFS reports for a directory in a project: the project's limit.
pub fn reported_limit(dir: &Path) -> Result<u64> {
    let stat = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| Error::io(format!("statvfs {}", dir.display()), e.into()))?;
    Ok(stat.blocks().saturating_mul(stat.fragment_size()))
}

/// Bytes a project's tree at `dir` holds, as XFS reports them for the project.
pub fn used_bytes(dir: &Path) -> Result<u64> {
    let stat = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| Error::io(format!("statvfs {}", dir.display()), e.into()))?;
    let used = stat.blocks().saturating_sub(stat.blocks_free());
    Ok(used.saturating_mul(stat.fragment_size()))
}

/// A path as one word of an `xfs_quota -c` command, which splits on whitespace.
fn command_path(dir: &Path) -> Result<String> {
    let text = dir.to_str().filter(|t| !t.contains(char::is_whitespace));
    text.map(str::to_string)
        .ok_or_else(|| Error::QuotaPathUnnameable {
            path: dir.display().to_string(),
        })
}

/// Where the search for a free project id starts for a volume key: a hash of the key
/// spread over Stowage's range, so concurrent creations rarely probe the same ids.
pub fn first_candidate(key: &str) -> u32 {
    // FNV-1a: stable across builds and runs, unlike std's hasher.
    let hash = key.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    FIRST_PROJECT + hash % (LAST_PROJECT - FIRST_PROJECT + 1)
}

/// The first id from `start` on (wrapping within Stowage's range) that `taken` does
/// not hold, or None when every id is taken.
pub fn free_project(start: u32, taken: impl Fn(u32) -> bool) -> Option<u32> {
    let span = LAST_PROJECT - FIRST_PROJECT + 1;
    let offset = start.saturating_sub(FIRST_PROJECT) % span;
    (0..span)
        .map(|i| FIRST_PROJECT + (offset + i) % span)
        .find(|id| !taken(*id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids_start_in_range_and_skip_taken_ones() {
        let start = first_candidate("6c1e0c52-9b1f-5d2a-8f0e-0a1b2c3d4e5f");
        assert!((FIRST_PROJECT..=LAST_PROJECT).contains(&start));
        assert_eq!(
            start,
            first_candidate("6c1e0c52-9b1f-5d2a-8f0e-0a1b2c3d4e5f")
        );
        let cases: &[(u32, &[u32], Option<u32>)] = &[
            (FIRST_PROJECT, &[], Some(FIRST_PROJECT)),
            (FIRST_PROJECT, &[FIRST_PROJECT], Some(FIRST_PROJECT + 1)),
            (
                LAST_PROJECT,
                &[LAST_PROJECT],
                Some(FIRST_PROJECT), // wraps within the range
            ),
            (42, &[], Some(FIRST_PROJECT)), // below the range: its start
        ];
        for (start, taken, want) in cases {
            assert_eq!(
                free_project(*start, |id| taken.contains(&id)),
                *want,
                "start {start}, taken {taken:?}"
            );
        }
    }

    #[test]
    fn paths_with_whitespace_cannot_be_named_to_xfs_quota() {
        assert!(command_path(Path::new("/var/lib/stowage/volumes/a")).is_ok());
        assert!(command_path(Path::new("/var/lib/my volumes/a")).is_err());
    }
}
