//! Local volumes: a directory or a sparse image per volume under this node's root.
//!
//! Layout under the root (shared with the node plugin through [`data_path`]):
//! `volumes/<key>` (directory) or `volumes/<key>.img` (image, block); `snapshots/`
//! likewise; the records of both in `records.log` ([`store`]). A volume exists once
//! its record is committed; data is built under a `.<key>.tmp` name and renamed
//! into place first, so a crash never leaves a half-filled volume behind a record.
//! Deleted data is renamed to `.<key>.deleting` before its record goes, and put
//! back at open if the record outlived a crash; once the record is gone it moves to
//! `reaping/`, where a background thread frees it ([`reaper`]).

//!
//! Quota volumes (`quota.rs`) are directories in their own XFS project; whether the
//! root can hold them is decided once, when the backend opens.

mod backend;
/// XFS project quotas: detection, project ids, xfs_quota.
pub mod quota;
/// Frees deleted data in the background.
pub mod reaper;
/// The record log with group commit.
pub mod store;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::ErrorKind;
use std::ops::Bound;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::backend::Fill;
use crate::error::{Error, Result};
use crate::listing::WireVolumes;
use crate::localfs;
use crate::params::{Enforcement, OnDelete};
use crate::record::{self, Layout, ListedVolume, SnapshotRecord, VolumeRecord};
use driver_contract::ids::{Key, Location, VolumeId, key_of};
use driver_contract::request::{AccessType, Capacity};
use quota::{QuotaRoot, QuotaSupport};
use reaper::{Pacing, Reaper};
use store::{Change, Store};

use driver_contract::local_layout::{self, VOLUMES_DIR as VOLUMES};

const SNAPSHOTS: &str = "snapshots";
const RETAINED: &str = "retained";
const REAPING: &str = "reaping";
const LOG: &str = "records.log";

/// The smallest ext4 image worth making (mkfs needs room for its journal).
pub const MIN_IMAGE_BYTES: i64 = 16 << 20;

/// Where a local volume's (or snapshot's) data lives, given its layout (the naming
/// the node plugin shares, [`local_layout`]).
pub fn data_path(dir: &Path, key: &str, layout: &Layout) -> PathBuf {
    local_layout::data_path(dir, key, matches!(layout, Layout::Image | Layout::Block))
}

/// Where local volume data lives on a node with this root.
pub fn volume_data_path(root: &Path, key: &str, layout: &Layout) -> PathBuf {
    data_path(&root.join(VOLUMES), key, layout)
}

/// This node's local volumes and snapshots under its root.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
    node: String,
    quota: QuotaSupport,
    /// Project ids handed to volumes whose records are not written yet.
    leased: Arc<Mutex<BTreeSet<u32>>>,
    store: Arc<Store>,
    reaper: Arc<Reaper>,
}

/// A project id held for a volume being created, released when dropped (by then the
/// volume's record holds it, or the volume was not made).
#[derive(Debug)]
pub struct ProjectLease {
    leased: Arc<Mutex<BTreeSet<u32>>>,
    id: u32,
}

impl Drop for ProjectLease {
    fn drop(&mut self) {
        self.leased
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl LocalBackend {
    /// Opens (creating) the root, puts back what a delete cut short set aside, and
    /// hands to the reaper what crashed calls left half-made.
    pub fn open(root: &Path, node: &str) -> Result<Self> {
        Self::open_with(root, node, Pacing::GENTLE)
    }

    /// [`open`](Self::open), deleted data freed at `pacing`.
    pub fn open_with(root: &Path, node: &str, pacing: Pacing) -> Result<Self> {
        for dir in [VOLUMES, SNAPSHOTS] {
            let path = root.join(dir);
            fs::create_dir_all(&path)
                .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        }
        let quota = quota::detect(root);
        match &quota {
            QuotaSupport::Ready(_) => {
                tracing::info!(root = %root.display(), "project quotas available: capacityEnforcement quota and auto make quota volumes")
            }
            QuotaSupport::Unavailable(why) => {
                tracing::info!(root = %root.display(), reason = %why, "no project quotas: capacityEnforcement auto makes image volumes, quota is refused")
            }
        }
        let backend = Self {
            root: root.to_path_buf(),
            node: node.to_string(),
            quota,
            leased: Arc::default(),
            store: Arc::new(Store::open(&root.join(LOG))?),
            reaper: Arc::new(Reaper::start(&root.join(REAPING), pacing)?),
        };
        backend.import_record_files()?;
        let volumes: HashSet<String> = backend.store.volume_keys().into_iter().collect();
        let snapshots: HashSet<String> = backend.store.snapshot_keys().into_iter().collect();
        backend.restore_deleting(&backend.volumes(), &volumes, |k| {
            backend.store.volume(k).ok().flatten().map(|r| r.layout)
        })?;
        backend.restore_deleting(&backend.snapshots(), &snapshots, |k| {
            backend.store.snapshot(k).ok().flatten().map(|r| r.layout)
        })?;
        backend.sweep(&backend.volumes(), &volumes)?;
        backend.sweep(&backend.snapshots(), &snapshots)?;
        backend.rebuild_lost_empty_volumes()?;
        Ok(backend)
    }

    /// The layout a new volume of `key` gets for the class's enforcement: `auto` is
    /// `quota` where the root supports it, else `image`. A quota layout comes with its
    /// project id, leased until the caller has written the record. Memory only: quota
    /// support was found at open, the projects in use are the records' and the reaper's.
    pub fn layout_for(
        &self,
        key: &Key,
        enforcement: Enforcement,
        access: AccessType,
        fs_type: &str,
    ) -> Result<(Layout, Option<ProjectLease>)> {
        let unavailable = match &self.quota {
            QuotaSupport::Ready(_) => None,
            QuotaSupport::Unavailable(why) => Some(why),
        };
        Ok(
            match choose_kind(enforcement, access, fs_type, unavailable, &self.node)? {
                Made::Directory => (Layout::Directory, None),
                Made::Image => (Layout::Image, None),
                Made::Block => (Layout::Block, None),
                Made::Quota => {
                    let lease = self.lease_project(key)?;
                    (Layout::Quota { project: lease.id }, Some(lease))
                }
            },
        )
    }

    /// A project id no volume record and no creation in progress holds.
    fn lease_project(&self, key: &Key) -> Result<ProjectLease> {
        let mut leased = self.leased.lock().unwrap_or_else(PoisonError::into_inner);
        let id = quota::free_project(quota::first_candidate(key.as_str()), |id| {
            self.store.project_used(id) || leased.contains(&id) || self.reaper.holds_project(id)
        })
        .ok_or(Error::ProjectIdsExhausted)?;
        leased.insert(id);
        Ok(ProjectLease {
            leased: self.leased.clone(),
            id,
        })
    }

    fn quota_root(&self) -> Result<&QuotaRoot> {
        match &self.quota {
            QuotaSupport::Ready(root) => Ok(root),
            QuotaSupport::Unavailable(why) => Err(Error::QuotaUnavailable {
                node: self.node.clone(),
                why: why.to_string(),
            }),
        }
    }

    /// Bytes that enforced volumes (image, block and quota) may still write: each
    /// one's capacity less what it has allocated. Free space on the root that is
    /// promised to them.
    pub fn reserved_bytes(&self) -> Result<i64> {
        let dir = self.volumes();
        let mut reserved: i64 = 0;
        // What a volume has allocated changes as pods write, unseen by the controller:
        // one stat each is what keeps the answer exact. The list itself is kept with
        // the records, so no record is read or decoded.
        for (key, reservation) in self.store.reservations() {
            let data = data_path(&dir, &key, &reservation.layout);
            let allocated = match reservation.layout {
                Layout::Image | Layout::Block => match fs::metadata(&data) {
                    Ok(meta) => meta.blocks().saturating_mul(512),
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(format!("stat {}", data.display()), e)),
                },
                Layout::Quota { .. } => quota::used_bytes(&data)?,
                Layout::Directory | Layout::Nfs { .. } => continue,
            };
            let allocated = i64::try_from(allocated).unwrap_or(i64::MAX);
            reserved = reserved.saturating_add((reservation.capacity - allocated).max(0));
        }
        Ok(reserved)
    }

    /// The record store (its sync count is what the group-commit test reads).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Moves records kept as `<key>.json` files (before the log) into the log.
    fn import_record_files(&self) -> Result<()> {
        let mut changes = Vec::new();
        let mut files = Vec::new();
        for (dir, snapshot) in [(self.volumes(), false), (self.snapshots(), true)] {
            for name in list_names(&dir)? {
                let Some(key) = name.strip_suffix(".json").filter(|k| !k.starts_with('.')) else {
                    continue;
                };
                let path = dir.join(&name);
                let bytes = fs::read(&path)
                    .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
                let at = path.display().to_string();
                changes.push(if snapshot {
                    Change::PutSnapshot {
                        key: key.to_string(),
                        record: record::decode(&at, &bytes)?,
                    }
                } else {
                    Change::PutVolume {
                        key: key.to_string(),
                        record: record::decode(&at, &bytes)?,
                    }
                });
                files.push(path);
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        tracing::info!(
            records = changes.len(),
            "moving record files into the record log"
        );
        self.store.commit(changes)?;
        for file in &files {
            localfs::remove_any(file)?;
        }
        Ok(())
    }

    /// Puts back data whose deletion was cut short before its record went.
    fn restore_deleting(
        &self,
        dir: &Path,
        recorded: &HashSet<String>,
        layout_of: impl Fn(&str) -> Option<Layout>,
    ) -> Result<()> {
        for name in list_names(dir)? {
            let Some(key) = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(".deleting"))
                .filter(|k| recorded.contains(*k))
            else {
                continue;
            };
            let Some(layout) = layout_of(key) else {
                continue;
            };
            let to = data_path(dir, key, &layout);
            if fs::symlink_metadata(&to).is_ok() {
                // A same-named volume's data, made after a delete whose last rename
                // failed: the set-aside data is the deleted volume's, not its.
                self.reaper.take(&dir.join(&name))?;
                continue;
            }
            tracing::info!(path = %to.display(), "restoring data of a deletion cut short");
            fs::rename(dir.join(&name), &to)
                .map_err(|e| Error::io(format!("restore {}", to.display()), e))?;
        }
        Ok(())
    }

    /// Hands temporaries and data that has no record (leftovers of crashed calls,
    /// and data set aside by deletes that were acknowledged) to the reaper: a rename
    /// each, so a start with large leftovers is not held up freeing them.
    fn sweep(&self, dir: &Path, recorded: &HashSet<String>) -> Result<()> {
        for name in list_names(dir)? {
            let key = name.strip_suffix(".img").unwrap_or(&name);
            if name.starts_with('.') || name.ends_with(".tmp") || !recorded.contains(key) {
                tracing::info!(path = %dir.join(&name).display(), "freeing leftover of an interrupted call");
                self.reaper.take(&dir.join(&name))?;
            }
        }
        Ok(())
    }

    /// An empty volume's data is made without a directory fsync (its record's fsync
    /// is the one that counts): after a power loss the record may be there and the
    /// new directory or image not. Nothing was written into it that survived, so
    /// making it again empty restores the volume as it was acknowledged.
    fn rebuild_lost_empty_volumes(&self) -> Result<()> {
        let dir = self.volumes();
        // Where a volume's data is, is known without its record: enforced volumes
        // (images, block files, quota directories) hold a reservation with their
        // layout, every other local volume is a directory. So a record is decoded only
        // when its data is missing.
        let reserved: HashMap<String, Layout> = self
            .store
            .reservations()
            .into_iter()
            .map(|(key, r)| (key, r.layout))
            .collect();
        for key in self.store.volume_keys() {
            let layout = reserved.get(&key).unwrap_or(&Layout::Directory);
            if data_path(&dir, &key, layout).exists() {
                continue;
            }
            let Some(record) = self.store.volume(&key)? else {
                continue;
            };
            let key = key_of(&record.volume_id);
            if record.content_source.is_some() || data_path(&dir, key, &record.layout).exists() {
                continue;
            }
            tracing::warn!(volume = %record.volume_id, "making the lost data of an empty volume again");
            let final_path = data_path(&dir, key, &record.layout);
            self.make_data(&dir, key, &final_path, &record, &Fill::Empty)?;
        }
        Ok(())
    }

    /// The node whose volumes these are.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The local root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn volumes(&self) -> PathBuf {
        self.root.join(VOLUMES)
    }

    fn snapshots(&self) -> PathBuf {
        self.root.join(SNAPSHOTS)
    }

    /// Free bytes on the root's filesystem, with what deleted image and block files
    /// being freed will give back (ARCHITECTURE.md, "Deleted data").
    pub fn available_bytes(&self) -> Result<i64> {
        let to_come = i64::try_from(self.reaper.pending_bytes()).unwrap_or(i64::MAX);
        Ok(localfs::available_bytes(&self.root)?.saturating_add(to_come))
    }

    /// The volume's record, if it exists.
    pub fn get(&self, key: &Key) -> Result<Option<VolumeRecord>> {
        self.store.volume(key.as_str())
    }

    /// Every volume's record.
    pub fn list(&self) -> Result<Vec<VolumeRecord>> {
        self.store.volumes()
    }

    /// Adds to `page` up to `limit` volumes, in ID order, whose IDs sort after `after`
    /// (a volume ID or ""), in wire form: a page of ListVolumes, reading only the
    /// records it returns and only what the message holds.
    pub fn list_after(&self, after: &str, limit: usize, page: &mut WireVolumes) -> Result<()> {
        let mut start = match self.page_start(after) {
            Some(start) => start,
            None => return Ok(()),
        };
        let mut added = 0;
        while added < limit {
            let last = self.store.volume_page(
                start.as_ref().map(String::as_str),
                limit - added,
                |json| {
                    let listed: ListedVolume = record::decode("a volume record in memory", json)?;
                    if listed.volume_id() > after {
                        page.push_with(listed.volume_id(), |out| listed.encode_csi(out));
                        added += 1;
                    }
                    Ok(())
                },
            )?;
            let Some(last) = last else { break };
            start = Bound::Excluded(last);
        }
        Ok(())
    }

    /// Where in key order the volumes after the ID `after` begin; `None` when every
    /// local ID sorts before it. This node's IDs are `local:<key>:<node>` with keys of
    /// 32 hex digits, so key order is ID order, and after one of them the page starts
    /// past its key without reading that record. After anything else (another node's
    /// ID, a token not made from an ID) it starts at the longest key that can sort
    /// before `after`, and the records not after it are dropped by their IDs.
    fn page_start(&self, after: &str) -> Option<Bound<String>> {
        if let Some(VolumeId {
            key,
            location: Location::Local { node },
        }) = VolumeId::parse(after)
            && node == self.node
        {
            return Some(Bound::Excluded(key.to_string()));
        }
        match after.strip_prefix("local:") {
            Some(rest) => {
                let key = rest.split(':').next().unwrap_or_default();
                // No key is longer than 32 bytes: a longer one's first 32 may be a key
                // whose ID sorts after `after`.
                let mut end = key.len().min(32);
                while !key.is_char_boundary(end) {
                    end -= 1;
                }
                Some(Bound::Included(
                    key.get(..end).unwrap_or_default().to_string(),
                ))
            }
            None if after.as_bytes() < b"local:".as_slice() => Some(Bound::Unbounded),
            None => None,
        }
    }

    /// Builds the volume's data and commits its record.
    pub fn create(&self, key: &Key, record: &VolumeRecord, fill: &Fill) -> Result<()> {
        let dir = self.volumes();
        let final_path = data_path(&dir, key.as_str(), &record.layout);
        // What a failed create left (no record holds it) may be a large clone.
        self.reaper.take(&final_path)?;
        self.make_data(&dir, key.as_str(), &final_path, record, fill)?;
        self.store.commit(vec![Change::PutVolume {
            key: key.to_string(),
            record: record.clone(),
        }])
    }

    /// Makes a volume's data at `final_path`. An empty directory is whole once made:
    /// made in place. Data that takes more than one step (a copy, an image, a quota
    /// directory) is built under a staging name and renamed into place. A crash before
    /// the record leaves either name with no record holding it, which open hands to
    /// the reaper.
    fn make_data(
        &self,
        dir: &Path,
        key: &str,
        final_path: &Path,
        record: &VolumeRecord,
        fill: &Fill,
    ) -> Result<()> {
        if matches!((fill, &record.layout), (Fill::Empty, Layout::Directory)) {
            return make_dir(final_path);
        }
        let staging = dir.join(format!(".{key}.tmp"));
        self.reaper.take(&staging)?;
        self.build(&staging, record, fill)?;
        fs::rename(&staging, final_path)
            .map_err(|e| Error::io(format!("rename into {}", final_path.display()), e))?;
        if !matches!(fill, Fill::Empty) {
            // Copied data cannot be made again at open: it is durable before its record.
            localfs::sync_dir(dir)?;
        }
        Ok(())
    }

    fn build(&self, path: &Path, record: &VolumeRecord, fill: &Fill) -> Result<()> {
        let size = u64::try_from(record.capacity_bytes).unwrap_or(0);
        let source = match fill {
            Fill::Empty => None,
            Fill::Volume(v) => Some((
                data_path(&self.volumes(), key_of(&v.volume_id), &v.layout),
                &v.layout,
            )),
            Fill::Snapshot(s) => Some((
                data_path(&self.snapshots(), key_of(&s.snapshot_id), &s.layout),
                &s.layout,
            )),
        };
        match (&record.layout, source) {
            (Layout::Directory, None) => make_dir(path),
            (Layout::Directory, Some((src, from))) if from.is_tree() => {
                localfs::copy_tree(&src, path)
            }
            (Layout::Quota { project }, None) => {
                make_dir(path)?;
                self.quota_root()?.assign(path, *project, size)
            }
            (Layout::Quota { project }, Some((src, from))) if from.is_tree() => {
                localfs::copy_tree(&src, path)?;
                self.quota_root()?.assign(path, *project, size)
            }
            (Layout::Image | Layout::Block, Some((src, Layout::Image | Layout::Block))) => {
                localfs::copy_sparse(&src, path)?;
                grow_file(path, size)
            }
            (Layout::Image, None) => {
                grow_file(path, size)?;
                mkfs_ext4(path, size)
            }
            (Layout::Block, None) => grow_file(path, size),
            (layout, Some((_, from))) => Err(Error::invalid(
                "volume_content_source",
                format!(
                    "cannot fill a {} volume from a {} source",
                    layout.name(),
                    from.name()
                ),
            )),
            (Layout::Nfs { .. }, None) => Err(Error::invalid("parameters", "not a local layout")),
        }
    }

    /// Removes a volume; its data too unless its mutable `onDelete` says retain, in
    /// which case the data moves to `<root>/retained/` under the volume's name. The
    /// data is set aside before the record goes (a failure keeps the volume whole and
    /// visible) and freed by the reaper after: the call does not wait for it.
    pub fn delete(&self, key: &Key) -> Result<()> {
        let dir = self.volumes();
        let Some(record) = self.get(key)? else {
            return Ok(());
        };
        let data = data_path(&dir, key.as_str(), &record.layout);
        let project = match record.layout {
            Layout::Quota { project } => Some(project),
            _ => None,
        };
        let doomed = match crate::params::mutable_on_delete(&record.mutable_parameters) {
            Some(OnDelete::Retain | OnDelete::Archive) => {
                if let Some(project) = project
                    && data.exists()
                {
                    self.quota_root()?.clear_project(&data, project)?;
                }
                self.retain(&data, key)?;
                None
            }
            Some(OnDelete::Delete) | None => self.set_aside(&dir, key, &data)?,
        };
        // The limit outlives the project's files; it goes before the record, so a
        // retried delete clears it again.
        if let Some(project) = project {
            self.quota_root()?.clear_limit(project)?;
        }
        self.store.commit(vec![Change::DeleteVolume {
            key: key.to_string(),
        }])?;
        self.reap_set_aside(doomed, project);
        Ok(())
    }

    /// Where retained data of deleted volumes goes.
    pub fn retained_dir(&self) -> PathBuf {
        self.root.join(RETAINED)
    }

    fn retain(&self, data: &Path, key: &Key) -> Result<()> {
        let retained = self.retained_dir();
        std::fs::create_dir_all(&retained)
            .map_err(|e| Error::io(format!("create {}", retained.display()), e))?;
        let name = data
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| key.as_str().into());
        match std::fs::rename(data, retained.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("retain {}", data.display()), e))
            }
            _ => localfs::sync_dir(&retained),
        }
    }

    /// Rewrites a volume's record (after ControllerModifyVolume).
    pub fn save(&self, key: &Key, record: &VolumeRecord) -> Result<()> {
        self.store.commit(vec![Change::PutVolume {
            key: key.to_string(),
            record: record.clone(),
        }])
    }

    /// Grows a volume to the size `capacity` asks (rounded to the layout's granule),
    /// if the root has the room.
    pub fn expand_to(
        &self,
        key: &Key,
        record: &VolumeRecord,
        capacity: Capacity,
    ) -> Result<(VolumeRecord, bool)> {
        let granule = if matches!(record.layout, Layout::Directory) {
            1
        } else {
            4096
        };
        let size = capacity.choose(capacity.required, 0, granule)?;
        if size - record.capacity_bytes > self.available_bytes()? {
            return Err(Error::NoSpace {
                node: self.node.clone(),
                bytes: size - record.capacity_bytes,
            });
        }
        self.expand(key, record, size)
    }

    /// Grows a volume to `size`. An image's filesystem grows here too when no loop
    /// device holds it; otherwise the node grows it online. Returns the new record and
    /// whether the node still has filesystem work to do.
    pub fn expand(
        &self,
        key: &Key,
        record: &VolumeRecord,
        size: i64,
    ) -> Result<(VolumeRecord, bool)> {
        let dir = self.volumes();
        let data = data_path(&dir, key.as_str(), &record.layout);
        if matches!(record.layout, Layout::Image | Layout::Block) {
            grow_file(&data, u64::try_from(size).unwrap_or(0))?;
        }
        // A project's limit rises online: the pod sees the new size at its next statfs.
        if let Layout::Quota { project } = record.layout {
            self.quota_root()?
                .set_limit(&data, project, u64::try_from(size).unwrap_or(0))?;
        }
        let node_work = record.layout == Layout::Image
            && (attached_to_loop(&data) || grow_ext4_offline(&data).is_err());
        let grown = VolumeRecord {
            capacity_bytes: size,
            ..record.clone()
        };
        self.save(key, &grown)?;
        Ok((grown, node_work))
    }

    /// Is the volume's data where its record says?
    pub fn data_present(&self, key: &Key, record: &VolumeRecord) -> bool {
        data_path(&self.volumes(), key.as_str(), &record.layout).exists()
    }

    /// The snapshot's record, if it exists.
    pub fn get_snapshot(&self, key: &Key) -> Result<Option<SnapshotRecord>> {
        self.store.snapshot(key.as_str())
    }

    /// Every snapshot's record.
    pub fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        self.store.snapshots()
    }

    /// Copies the source volume's data into a snapshot and commits its record.
    pub fn create_snapshot(
        &self,
        key: &Key,
        source: &VolumeRecord,
        snapshot: &SnapshotRecord,
    ) -> Result<()> {
        let dir = self.snapshots();
        let staging = dir.join(format!(".{key}.tmp"));
        let final_path = data_path(&dir, key.as_str(), &snapshot.layout);
        self.reaper.take(&staging)?;
        let src = data_path(&self.volumes(), key_of(&source.volume_id), &source.layout);
        match source.layout {
            Layout::Directory | Layout::Quota { .. } => localfs::copy_tree(&src, &staging)?,
            _ => localfs::copy_sparse(&src, &staging)?,
        }
        fs::rename(&staging, &final_path)
            .map_err(|e| Error::io(format!("rename into {}", final_path.display()), e))?;
        localfs::sync_dir(&dir)?;
        self.store.commit(vec![Change::PutSnapshot {
            key: key.to_string(),
            record: snapshot.clone(),
        }])
    }

    /// Removes the snapshot's record, its data freed after by the reaper; done if
    /// absent.
    pub fn delete_snapshot(&self, key: &Key) -> Result<()> {
        let dir = self.snapshots();
        let Some(record) = self.get_snapshot(key)? else {
            return Ok(());
        };
        let doomed = self.set_aside(&dir, key, &data_path(&dir, key.as_str(), &record.layout))?;
        self.store.commit(vec![Change::DeleteSnapshot {
            key: key.to_string(),
        }])?;
        self.reap_set_aside(doomed, None);
        Ok(())
    }

    /// Renames data about to lose its record to `.<key>.deleting`: no fsync is needed,
    /// as whichever name survives a crash, open puts it back (record kept) or hands it
    /// to the reaper (record gone). A failure here keeps the volume whole and visible.
    fn set_aside(&self, dir: &Path, key: &Key, data: &Path) -> Result<Option<PathBuf>> {
        let aside = dir.join(format!(".{key}.deleting"));
        match (
            fs::symlink_metadata(data),
            fs::symlink_metadata(&aside).is_ok(),
        ) {
            // An earlier try set the data aside and failed to commit: it is this
            // volume's data, aside already.
            (Err(e), true) if e.kind() == ErrorKind::NotFound => return Ok(Some(aside)),
            // Not this volume's data (it is in place): the deleted one's before it.
            (Ok(_), true) => self.reaper.take(&aside)?,
            _ => {}
        }
        match fs::rename(data, &aside) {
            Ok(()) => Ok(Some(aside)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("set aside {}", data.display()), e)),
        }
    }

    /// Hands set-aside data to the reaper once its record is gone (a quota volume's
    /// with its project, which is not leased again until the files are freed). The
    /// delete is acknowledged whatever happens here: data the rename leaves behind is
    /// handed over at the next start (no record holds it).
    fn reap_set_aside(&self, aside: Option<PathBuf>, project: Option<u32>) {
        if let Some(aside) = aside
            && let Err(e) = self.reaper.take_in_project(&aside, project)
        {
            tracing::warn!(path = %aside.display(), error = %e, "deleted data left for the next start");
        }
    }

    /// The reaper freeing this root's deleted data.
    pub fn reaper(&self) -> &Reaper {
        &self.reaper
    }
}

/// What a new local volume is made as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Made {
    Directory,
    Image,
    Block,
    Quota,
}

/// The kind a class's enforcement asks for, given the capability and whether the root
/// has project quotas (`unavailable` says why not).
fn choose_kind(
    enforcement: Enforcement,
    access: AccessType,
    fs_type: &str,
    unavailable: Option<&quota::NoQuota>,
    node: &str,
) -> Result<Made> {
    // An ext4 asked for explicitly is an image's; a quota volume is the root's XFS.
    let wants_ext4 = fs_type == "ext4";
    match (access, enforcement) {
        (AccessType::Block, _) => Ok(Made::Block),
        (AccessType::Mount, Enforcement::None) => Ok(Made::Directory),
        (AccessType::Mount, Enforcement::Image) => Ok(Made::Image),
        (AccessType::Mount, Enforcement::Auto) if unavailable.is_some() || wants_ext4 => {
            Ok(Made::Image)
        }
        (AccessType::Mount, Enforcement::Quota | Enforcement::Auto) => {
            if let Some(why) = unavailable {
                return Err(Error::invalid(
                    "parameters",
                    format!(
                        "capacityEnforcement quota needs project quotas on node {node}: {why}; use auto or image"
                    ),
                ));
            }
            if !matches!(fs_type, "" | "xfs") {
                return Err(Error::invalid(
                    "volume_capabilities",
                    format!(
                        "fs_type {fs_type:?} is not supported; quota volumes are the root's XFS"
                    ),
                ));
            }
            Ok(Made::Quota)
        }
    }
}

fn list_names(dir: &Path) -> Result<Vec<String>> {
    Ok(fs::read_dir(dir)
        .map_err(|e| Error::io(format!("list {}", dir.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect())
}

fn make_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir(path).map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    // Pods of any uid write here, as with emptyDir.
    fs::set_permissions(path, fs::Permissions::from_mode(0o777))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))
}

fn grow_file(path: &Path, size: u64) -> Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    let (file, len) = localfs::open_with_len(&options, path)?;
    if size > len {
        file.set_len(size)
            .map_err(|e| Error::io(format!("grow {}", path.display()), e))?;
    }
    file.sync_all()
        .map_err(|e| Error::io(format!("fsync {}", path.display()), e))
}

/// mkfs writes a large image's metadata: background work, like a copy.
fn mkfs_ext4(path: &Path, size: u64) -> Result<()> {
    localfs::in_background(|| {
        stowage_common::tool::e2fs::mkfs(path, size).map_err(|e| e2fs_failed(path, e))
    })
}

/// Grows an unmounted ext4 image to its file size: resize2fs wants a fresh check first.
fn grow_ext4_offline(path: &Path) -> Result<()> {
    localfs::in_background(|| {
        stowage_common::tool::e2fs::grow_offline(path).map_err(|e| e2fs_failed(path, e))
    })
}

fn e2fs_failed(path: &Path, source: stowage_common::tool::ToolError) -> Error {
    Error::Tool {
        path: path.to_path_buf(),
        source,
    }
}

/// Is a loop device backed by this file (i.e. is the image staged on this node)?
fn attached_to_loop(path: &Path) -> bool {
    stowage_common::loop_device::backing(path).is_some()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod list_tests;

#[cfg(test)]
mod kind_tests {
    use super::*;

    #[test]
    fn the_kind_follows_enforcement_capability_and_the_roots_quota_support() {
        use AccessType::{Block, Mount};
        use Enforcement::{Auto, Image, None as Plain, Quota};
        let not_xfs = quota::NoQuota::NotXfs { fs_type: 0xEF53 };
        let no_quota = Some(&not_xfs);
        // (enforcement, access, fs_type, why the root has no quotas, what is made)
        type Case<'a> = (
            Enforcement,
            AccessType,
            &'a str,
            Option<&'a quota::NoQuota>,
            Option<Made>,
        );
        let cases: &[Case] = &[
            (Plain, Mount, "", None, Some(Made::Directory)),
            (Image, Mount, "", None, Some(Made::Image)),
            (Quota, Mount, "", None, Some(Made::Quota)),
            (Quota, Mount, "xfs", None, Some(Made::Quota)),
            (Quota, Mount, "ext4", None, Option::None),
            (Quota, Mount, "", no_quota, Option::None),
            (Auto, Mount, "", None, Some(Made::Quota)),
            (Auto, Mount, "", no_quota, Some(Made::Image)),
            (Auto, Mount, "ext4", None, Some(Made::Image)),
            (Auto, Block, "", None, Some(Made::Block)),
            (Quota, Block, "", no_quota, Some(Made::Block)),
        ];
        for (enforcement, access, fs_type, unavailable, want) in cases {
            let got = choose_kind(*enforcement, *access, fs_type, *unavailable, "n").ok();
            assert_eq!(
                got, *want,
                "{enforcement:?} {access:?} fs_type {fs_type:?} quota unavailable {unavailable:?}"
            );
        }
    }

    #[test]
    fn quota_on_a_root_without_it_says_why() {
        let why = quota::NoQuota::NotEnforced {
            mount_point: "/var/lib".into(),
            options: vec!["rw".into(), "attr2".into()],
        };
        let err = choose_kind(Enforcement::Quota, AccessType::Mount, "", Some(&why), "n")
            .expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.to_string().contains("without prjquota"), "{err}");
    }
}
