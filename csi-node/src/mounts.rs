//! The mounts of Stowage volumes below the kubelet directory, kept in memory so that no
//! call reads the mount table: a node carries thousands of unrelated mounts (every
//! pod's secrets and tokens), and reading `/proc/self/mountinfo` costs time and memory
//! in proportion to them.
//!
//! The index is learnt once at start from mountinfo (so a restarted plugin knows what
//! an earlier run mounted) and then kept current by this plugin's own mounts and
//! unmounts. Each entry carries the mount's unique id, so an entry that someone else
//! unmounted meanwhile is recognised (one `statx` of its path) and dropped, never
//! trusted. Mounts made by others after start are not in it; the only questions asked
//! of it (a single-writer volume's other publications, the NFS export at a staging
//! path) are about mounts only this plugin makes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::NodeConfig;
use crate::beneath::{MountFacts, mount_facts_at};
use crate::error::{Error, Result};
use crate::mountinfo::{MountEntry, MountTable};

/// The block major of loop devices: image volumes are ext4 on a loop device.
const LOOP_MAJOR: u32 = 7;

/// What a mounted filesystem is, for mounts whose source matters (NFS staging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filesystem {
    /// The filesystem type, as mountinfo names it (`nfs`, `nfs4`).
    pub fs_type: String,
    /// The mount source, `host:/share`.
    pub source: String,
}

/// One indexed mount. Every published volume has two (its staging and target mounts)
/// and only NFS stagings have a filesystem: boxed, it costs the others 8 bytes, not 48.
#[derive(Debug, Clone)]
struct Mounted {
    mount_id: u64,
    identity: (u64, u64),
    filesystem: Option<Box<Filesystem>>,
}

/// Both maps share one allocation of each path: at 10,000 publications the paths are
/// most of the index's memory.
#[derive(Debug, Default)]
struct Known {
    by_point: HashMap<Arc<Path>, Mounted>,
    /// Mount points by the identity of what is mounted there (device, inode of the root).
    by_identity: HashMap<(u64, u64), Vec<Arc<Path>>>,
}

impl Known {
    fn insert(&mut self, point: PathBuf, mounted: Mounted) {
        self.remove(&point);
        let point: Arc<Path> = point.into();
        // Nearly every identity has one or two mount points (a volume's staging and
        // target): room for exactly those, not the four a growing Vec reserves.
        let points = self.by_identity.entry(mounted.identity).or_default();
        points.reserve_exact(1);
        points.push(point.clone());
        self.by_point.insert(point, mounted);
    }

    fn remove(&mut self, point: &Path) {
        let Some(old) = self.by_point.remove(point) else {
            return;
        };
        if let Some(points) = self.by_identity.get_mut(&old.identity) {
            points.retain(|p| **p != *point);
            if points.is_empty() {
                self.by_identity.remove(&old.identity);
            }
        }
    }
}

/// The mounts of Stowage volumes below the kubelet directory (see the module's doc).
#[derive(Debug, Default)]
pub struct MountIndex {
    known: Mutex<Known>,
}

impl MountIndex {
    /// Reads the mount table (twice, a line at a time: where volume data lives, then
    /// the mounts below the kubelet directory) and keeps the mounts that can hold a
    /// Stowage volume (see [`Sources`]).
    pub fn load(config: &NodeConfig) -> Result<Self> {
        Self::load_from(config, |visit| MountTable::scan(visit), mount_facts_at)
    }

    /// [`load`](Self::load) from any table and `statx`. Each kept mount is examined
    /// and indexed as its line is read: a restart with thousands of published volumes
    /// holds one line at a time, not every kept line at once (a heap of megabytes the
    /// allocator keeps for the rest of the plugin's life).
    fn load_from(
        config: &NodeConfig,
        scan: impl Fn(&mut dyn FnMut(MountEntry)) -> std::io::Result<()>,
        facts_at: impl Fn(&Path) -> std::io::Result<MountFacts>,
    ) -> Result<Self> {
        let read_error = |e| Error::io("read mountinfo", e);
        let mut sources = Sources::of(config);
        scan(&mut |entry| sources.see(&entry)).map_err(read_error)?;
        // mountinfo names real paths; requests name paths under the configured directory.
        let kubelet = std::fs::canonicalize(&config.kubelet_dir)
            .unwrap_or_else(|_| config.kubelet_dir.clone());
        let mut known = Known::default();
        scan(&mut |entry| {
            let Ok(below) = entry.mount_point.strip_prefix(&kubelet) else {
                return;
            };
            if !sources.may_hold(&entry) {
                return;
            }
            let point = config.kubelet_dir.join(below);
            match facts_at(&point) {
                // The topmost mount at the path is the one statx sees; it is the one kept.
                Ok(facts) if facts.mount_root => {
                    let filesystem = entry.fs_type.starts_with("nfs").then_some(Filesystem {
                        fs_type: entry.fs_type,
                        source: entry.source,
                    });
                    known.insert(point, mounted(facts, filesystem));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    mount_point = %point.display(),
                    error = %e,
                    "a mount found at start cannot be examined; it is not indexed"
                ),
            }
        })
        .map_err(read_error)?;
        Ok(Self {
            known: Mutex::new(known),
        })
    }

    fn known(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many mount points are indexed.
    pub fn len(&self) -> usize {
        self.known().by_point.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records the mount at `point`, as one `statx` of it found it after mounting.
    pub fn record(&self, point: &Path, facts: MountFacts, filesystem: Option<Filesystem>) {
        self.known()
            .insert(point.to_path_buf(), mounted(facts, filesystem));
    }

    /// Forgets the mount at `point`.
    pub fn forget(&self, point: &Path) {
        self.known().remove(point);
    }

    /// Forgets every mount below `point` (not the one at it).
    pub fn forget_below(&self, point: &Path) {
        let mut known = self.known();
        let below: Vec<Arc<Path>> = known
            .by_point
            .keys()
            .filter(|p| p.starts_with(point) && ***p != *point)
            .cloned()
            .collect();
        for path in below {
            known.remove(&path);
        }
    }

    /// Another mount point where the file with `identity` is mounted, none of `except`.
    /// Entries that `facts_at` shows no longer mounted as recorded are dropped on the way.
    pub fn mounted_elsewhere(
        &self,
        identity: (u64, u64),
        except: &[&Path],
        facts_at: impl Fn(&Path) -> std::io::Result<MountFacts>,
    ) -> Option<PathBuf> {
        let candidates: Vec<(Arc<Path>, u64)> = {
            let known = self.known();
            known
                .by_identity
                .get(&identity)
                .into_iter()
                .flatten()
                .filter(|p| !except.contains(&&***p))
                .filter_map(|p| known.by_point.get(p).map(|m| (p.clone(), m.mount_id)))
                .collect()
        };
        for (point, mount_id) in candidates {
            if facts_at(&point).is_ok_and(|f| f.mount_root && f.mount_id == mount_id) {
                return Some(point.to_path_buf());
            }
            self.known().remove(&point);
        }
        None
    }

    /// The filesystem recorded for the mount at `point`, if the mount `facts` describe
    /// there is the one recorded.
    pub fn filesystem_at(&self, point: &Path, facts: MountFacts) -> Option<Filesystem> {
        let known = self.known();
        known
            .by_point
            .get(point)
            .filter(|m| facts.mount_root && m.mount_id == facts.mount_id)
            .and_then(|m| m.filesystem.as_deref().cloned())
    }
}

fn mounted(facts: MountFacts, filesystem: Option<Filesystem>) -> Mounted {
    Mounted {
        mount_id: facts.mount_id,
        identity: facts.identity,
        filesystem: filesystem.map(Box::new),
    }
}

/// Where the data of Stowage volumes lives, as mountinfo names places: a device and a
/// path inside that device's filesystem. A mount below the kubelet directory can hold a
/// volume only if it shows one of these (or is an NFS export or a loop device's
/// filesystem), so the unrelated mounts of a busy node cost nothing after start.
#[derive(Debug, Default)]
struct Sources {
    roots: Vec<Root>,
    /// Filesystems mounted below a root (a hostPath prefix spans them).
    below: Vec<Place>,
}

/// A device and a path inside its filesystem.
type Place = ((u32, u32), PathBuf);

#[derive(Debug)]
struct Root {
    path: PathBuf,
    /// The deepest mount seen so far that contains the root (its depth, and the
    /// root's place on it).
    holder: Option<(usize, Place)>,
}

impl Sources {
    fn of(config: &NodeConfig) -> Self {
        let roots = [
            config.local_root.clone(),
            config.state_dir.join("ephemeral"),
            // Block volumes are published as their loop device's node.
            PathBuf::from("/dev"),
        ];
        let roots = roots
            .iter()
            .chain(&config.host_path_allow)
            // A root that does not resolve holds no volume yet: nothing was published from it.
            .filter_map(|root| std::fs::canonicalize(root).ok())
            .map(|path| Root { path, holder: None })
            .collect();
        Self {
            roots,
            below: Vec::new(),
        }
    }

    /// Takes in one mount, in the kernel's order (a mount comes after the one it is on).
    fn see(&mut self, entry: &MountEntry) {
        for root in &mut self.roots {
            if let Ok(inside) = root.path.strip_prefix(&entry.mount_point) {
                // Deeper, or the same path mounted over: this mount is what the root is on.
                let depth = entry.mount_point.components().count();
                if root.holder.as_ref().is_none_or(|(held, _)| depth >= *held) {
                    root.holder = Some((depth, (entry.device, entry.root.join(inside))));
                }
            } else if entry.mount_point.starts_with(&root.path) {
                self.below.push((entry.device, entry.root.clone()));
            }
        }
    }

    fn places(&self) -> impl Iterator<Item = &Place> {
        self.roots
            .iter()
            .filter_map(|root| root.holder.as_ref().map(|(_, place)| place))
            .chain(&self.below)
    }

    fn may_hold(&self, entry: &MountEntry) -> bool {
        entry.fs_type.starts_with("nfs")
            || entry.device.0 == LOOP_MAJOR
            || self
                .places()
                .any(|(device, path)| entry.device == *device && entry.root.starts_with(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 1 8:1 / / rw - ext4 /dev/vda1 rw
23 22 0:5 / /dev rw - devtmpfs devtmpfs rw
24 22 0:30 / /srv rw - xfs /dev/vdb rw
25 22 8:1 /var/lib/kubelet /var/lib/kubelet rw - ext4 /dev/vda1 rw
26 24 0:31 / /srv/scratch rw - tmpfs tmpfs rw
27 22 0:40 / /data rw - tmpfs tmpfs rw
28 27 0:41 / /data rw - tmpfs tmpfs rw
";

    fn entry(device: (u32, u32), root: &str, fs_type: &str) -> MountEntry {
        MountEntry {
            device,
            root: PathBuf::from(root),
            mount_point: PathBuf::from("/var/lib/kubelet/pods/p/volumes/v/mount"),
            options: vec![],
            fs_type: fs_type.into(),
            source: "src".into(),
            super_options: vec![],
        }
    }

    fn sources(roots: &[&str]) -> Sources {
        let mut sources = Sources {
            roots: roots
                .iter()
                .map(|r| Root {
                    path: PathBuf::from(r),
                    holder: None,
                })
                .collect(),
            below: Vec::new(),
        };
        for entry in MountTable::parse(TABLE).entries() {
            sources.see(entry);
        }
        sources
    }

    #[test]
    fn a_root_is_placed_on_the_deepest_mount_holding_it() {
        let rows = [
            ("/srv/local", ((0, 30), "/local")),
            ("/var/lib/stowage/local", ((8, 1), "/var/lib/stowage/local")),
            ("/dev", ((0, 5), "/")),
            ("/var/lib/kubelet/x", ((8, 1), "/var/lib/kubelet/x")),
            ("/data", ((0, 41), "/")),
        ];
        for (root, (device, path)) in rows {
            let found: Vec<Place> = sources(&[root]).places().cloned().collect();
            assert_eq!(found, vec![(device, PathBuf::from(path))], "{root}");
        }
    }

    #[test]
    fn filesystems_below_a_root_are_places_too() {
        let found: Vec<Place> = sources(&["/srv"]).places().cloned().collect();
        assert_eq!(
            found,
            vec![((0, 30), PathBuf::from("/")), ((0, 31), PathBuf::from("/"))]
        );
    }

    #[test]
    fn only_mounts_that_can_hold_a_volume_are_kept() {
        let sources = Sources {
            roots: vec![],
            below: vec![
                ((0, 30), PathBuf::from("/local")),
                ((0, 5), PathBuf::from("/")),
            ],
        };
        let rows = [
            (entry((0, 30), "/local/volumes/k", "xfs"), true),
            (entry((0, 30), "/elsewhere", "xfs"), false),
            (entry((8, 1), "/local/volumes/k", "ext4"), false),
            (entry((0, 88), "/", "tmpfs"), false),
            (entry((7, 3), "/", "ext4"), true),
            (entry((0, 91), "/exports/a", "nfs"), true),
            (entry((0, 92), "/", "nfs4"), true),
            (entry((0, 5), "/loop3", "devtmpfs"), true),
        ];
        for (i, (entry, want)) in rows.iter().enumerate() {
            assert_eq!(sources.may_hold(entry), *want, "row {i}: {entry:?}");
        }
    }

    #[test]
    fn an_indexed_mount_is_two_ids_and_a_pointer() {
        // Two per published volume: the filesystem only NFS stagings have stays boxed.
        assert_eq!(std::mem::size_of::<Mounted>(), 32);
    }

    #[test]
    fn each_kept_mount_is_examined_as_its_line_is_read() {
        let table = "\
22 1 8:1 / / rw - ext4 /dev/vda1 rw
30 22 0:91 /a /k/pods/a/mount rw - nfs4 srv:/a rw
31 22 0:88 / /k/pods/tmp rw - tmpfs tmpfs rw
32 22 7:3 / /k/plugins/b/globalmount rw - ext4 /dev/loop3 rw
33 22 7:4 / /k/plugins/c/globalmount rw - ext4 /dev/loop4 rw
34 22 7:5 / /k/plugins/d/globalmount rw - ext4 /dev/loop5 rw
";
        let config = NodeConfig {
            node_id: "n".into(),
            kubelet_dir: PathBuf::from("/k"),
            state_dir: PathBuf::from("/nonexistent/state"),
            local_root: PathBuf::from("/nonexistent/local"),
            host_path_allow: vec![],
            max_volumes: 0,
        };
        let log = std::cell::RefCell::new(Vec::new());
        let scan = |visit: &mut dyn FnMut(MountEntry)| {
            for entry in MountTable::parse(table).entries() {
                log.borrow_mut()
                    .push(format!("read {}", entry.mount_point.display()));
                visit(entry.clone());
            }
            Ok(())
        };
        let facts_at = |point: &Path| {
            log.borrow_mut()
                .push(format!("examine {}", point.display()));
            match point.to_str() {
                Some("/k/plugins/c/globalmount") => Err(std::io::Error::other("gone")),
                Some("/k/plugins/d/globalmount") => Ok(facts(false, 4)),
                _ => Ok(facts(true, 1)),
            }
        };
        let index = MountIndex::load_from(&config, scan, facts_at).expect("load");
        let log = log.into_inner();
        let second_pass: Vec<&str> = log[6..].iter().map(String::as_str).collect();
        assert_eq!(
            second_pass,
            [
                "read /",
                "read /k/pods/a/mount",
                "examine /k/pods/a/mount",
                "read /k/pods/tmp",
                "read /k/plugins/b/globalmount",
                "examine /k/plugins/b/globalmount",
                "read /k/plugins/c/globalmount",
                "examine /k/plugins/c/globalmount",
                "read /k/plugins/d/globalmount",
                "examine /k/plugins/d/globalmount",
            ]
        );
        assert_eq!(
            index.len(),
            2,
            "the unexaminable and the covered are not indexed"
        );
        assert_eq!(
            index.filesystem_at(Path::new("/k/pods/a/mount"), facts(true, 1)),
            Some(Filesystem {
                fs_type: "nfs4".into(),
                source: "srv:/a".into()
            })
        );
    }

    #[test]
    fn a_volume_s_two_mounts_take_room_for_two_points() {
        let mut known = Known::default();
        known.insert(PathBuf::from("/k/staging"), mounted(facts(true, 1), None));
        known.insert(PathBuf::from("/k/target"), mounted(facts(true, 1), None));
        let points = &known.by_identity[&(1, 2)];
        assert_eq!((points.len(), points.capacity()), (2, 2));
        known.remove(Path::new("/k/staging"));
        assert_eq!(known.by_identity[&(1, 2)].len(), 1);
        known.remove(Path::new("/k/target"));
        assert!(known.by_identity.is_empty());
    }

    fn facts(mount_root: bool, mount_id: u64) -> MountFacts {
        MountFacts {
            mount_root,
            mount_id,
            identity: (mount_id, 2),
        }
    }
}
