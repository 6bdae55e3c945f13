//! The local backend's records: an append-only log with group commit, and the live
//! records in memory.
//!
//! Every change (a volume or snapshot record put or removed) is one JSON line appended
//! to `records.log`. A change is acknowledged only after an `fdatasync` of the log
//! that covers it, and the fsync is shared: whoever finds no commit running becomes
//! the leader, writes every change queued so far in one `write`, syncs once, applies
//! the batch to the in-memory maps and wakes the writers it carried; changes queued
//! while it synced go out in the next batch. So a change costs one fsync alone and a
//! fraction of one under concurrency, and reads (get, list, pages) never touch the
//! disk. At open the log is replayed; a torn tail (an unacknowledged batch cut by a
//! crash) ends the replay and is cut off. When dead lines outnumber live records the
//! log is rewritten (temporary file, fsync, rename, directory fsync), streamed a chunk
//! of records at a time.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::ops::Bound;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::localfs;
use crate::record::{Layout, SnapshotRecord, VolumeRecord};

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "op")]
pub enum Change {
    /// A volume record made or replaced.
    PutVolume {
        /// The volume's key.
        key: String,
        /// Its record.
        record: VolumeRecord,
    },
    /// A volume record removed.
    DeleteVolume {
        /// The volume's key.
        key: String,
    },
    /// A snapshot record made or replaced.
    PutSnapshot {
        /// The snapshot's key.
        key: String,
        /// Its record.
        record: SnapshotRecord,
    },
    /// A snapshot record removed.
    DeleteSnapshot {
        /// The snapshot's key.
        key: String,
    },
}

/// How a batch is made durable; a seam so tests can count and hold syncs.
pub type SyncFn = Box<dyn Fn(&File) -> std::io::Result<()> + Send + Sync>;

/// Rewrite the log once it holds this many lines more than twice the live records.
const COMPACT_SLACK: usize = 4096;

/// Records a rewrite of the log copies per hold of the state lock (about 128 KiB of
/// lines): what it costs in memory, and the longest a read waits behind it.
const COMPACT_CHUNK: usize = 256;

/// Which of the two maps.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Volume,
    Snapshot,
}

/// The records of one local root: the log on disk, the live records in memory.
pub struct Store {
    path: PathBuf,
    /// Held while open: a second process appending to the log would not see the
    /// first one's changes in its memory.
    _lock: Flock<File>,
    state: Mutex<State>,
    committed: Condvar,
    /// Only the leader of a commit touches the file.
    file: Mutex<File>,
    sync: SyncFn,
    syncs: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Records are kept as their compact JSON, a third of the memory of the decoded
/// structs (whose small maps each take a B-tree node); a read decodes the one it needs.
/// Shared, so that a read takes its records out of the lock without copying them.
type Encoded = Arc<[u8]>;

/// What an enforced volume (image, block, quota) promises of the root: its data's
/// layout and its capacity. Kept beside the records so that GetCapacity and a quota
/// volume's project lease read no record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The volume's layout (where its data is, and its project if a quota volume).
    pub layout: Layout,
    /// The volume's capacity in bytes.
    pub capacity: i64,
}

impl Reservation {
    fn of(record: &VolumeRecord) -> Option<Self> {
        match record.layout {
            Layout::Image | Layout::Block | Layout::Quota { .. } => Some(Self {
                layout: record.layout.clone(),
                capacity: record.capacity_bytes,
            }),
            Layout::Directory | Layout::Nfs { .. } => None,
        }
    }

    fn project(&self) -> Option<u32> {
        match self.layout {
            Layout::Quota { project } => Some(project),
            _ => None,
        }
    }
}

#[derive(Default)]
struct State {
    volumes: BTreeMap<String, Encoded>,
    snapshots: BTreeMap<String, Encoded>,
    /// The enforced volumes' reservations, by key: updated with the records.
    reservations: BTreeMap<String, Reservation>,
    /// How many volume records hold each XFS project id (one, unless damaged).
    projects: BTreeMap<u32, usize>,
    /// Changes waiting for the next batch, with their sequence numbers.
    queue: Vec<(u64, Entry)>,
    next_seq: u64,
    /// A commit is being written and synced.
    leading: bool,
    /// Outcomes of finished changes not yet collected by their writers.
    outcomes: HashMap<u64, Result<(), Failure>>,
    /// Set after a failed fsync: what reached the disk is unknown until a restart.
    poisoned: Option<String>,
    /// Lines in the log file, live or dead.
    lines: usize,
}

/// A change as the log line that records it and the effect it has on the maps.
struct Entry {
    line: Vec<u8>,
    effect: Effect,
}

enum Effect {
    Put {
        snapshot: bool,
        key: String,
        record: Encoded,
        /// A volume's, if it is enforced.
        reservation: Option<Reservation>,
    },
    Delete {
        snapshot: bool,
        key: String,
    },
}

impl Entry {
    fn of(change: Change) -> Result<Self> {
        let mut line = serde_json::to_vec(&change).map_err(encoding)?;
        line.push(b'\n');
        let effect = match change {
            Change::PutVolume { key, record } => Effect::Put {
                snapshot: false,
                key,
                record: serde_json::to_vec(&record).map_err(encoding)?.into(),
                reservation: Reservation::of(&record),
            },
            Change::PutSnapshot { key, record } => Effect::Put {
                snapshot: true,
                key,
                record: serde_json::to_vec(&record).map_err(encoding)?.into(),
                reservation: None,
            },
            Change::DeleteVolume { key } => Effect::Delete {
                snapshot: false,
                key,
            },
            Change::DeleteSnapshot { key } => Effect::Delete {
                snapshot: true,
                key,
            },
        };
        Ok(Self { line, effect })
    }
}

impl Entry {
    /// A put read back from the log: the record is decoded (to check it, and for a
    /// volume's reservation) but kept as the bytes read, not encoded again. `None`
    /// when `record` is not exactly one record of its kind.
    fn as_read(kind: Kind, key: String, record: &[u8]) -> Option<Self> {
        let (snapshot, reservation) = match kind {
            Kind::Volume => {
                let decoded: VolumeRecord = serde_json::from_slice(record).ok()?;
                (false, Reservation::of(&decoded))
            }
            Kind::Snapshot => {
                serde_json::from_slice::<SnapshotRecord>(record).ok()?;
                (true, None)
            }
        };
        Some(Self {
            line: Vec::new(),
            effect: Effect::Put {
                snapshot,
                key,
                record: record.into(),
                reservation,
            },
        })
    }
}

fn encoding(e: serde_json::Error) -> Error {
    Error::CorruptMetadata {
        path: "(encoding a record)".into(),
        reason: e.to_string(),
    }
}

fn decoded<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::CorruptMetadata {
        path: format!("record {key} in memory"),
        reason: e.to_string(),
    })
}

/// A failure shared by every change of one batch.
#[derive(Debug, Clone)]
struct Failure {
    context: String,
    kind: ErrorKind,
    message: String,
}

impl Failure {
    fn new(context: impl Into<String>, e: &std::io::Error) -> Self {
        Self {
            context: context.into(),
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    fn to_error(&self) -> Error {
        Error::io(
            self.context.clone(),
            std::io::Error::new(self.kind, self.message.clone()),
        )
    }
}

impl Store {
    /// Opens (creating) the log at `path`, replaying it.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, Box::new(|file: &File| file.sync_data()))
    }

    /// As [`Store::open`], with the given way of making a batch durable.
    pub fn open_with(path: &Path, sync: SyncFn) -> Result<Self> {
        let lock = lock(path)?;
        // A rewrite cut short by a crash: only its rename would have made it count.
        localfs::remove_any(&path.with_extension("log.tmp"))?;
        let mut state = State::default();
        let valid_len = replay(path, &mut state)?;
        let mut options = OpenOptions::new();
        options.create(true).append(true).mode(0o600);
        let (file, len) = crate::localfs::open_with_len(&options, path)?;
        if len > valid_len {
            tracing::warn!(path = %path.display(), cut = len - valid_len,
                "cutting an unacknowledged torn tail off the record log");
            file.set_len(valid_len)
                .map_err(|e| Error::io(format!("truncate {}", path.display()), e))?;
            file.sync_all()
                .map_err(|e| Error::io(format!("fsync {}", path.display()), e))?;
        }
        let store = Self {
            path: path.to_path_buf(),
            _lock: lock,
            state: Mutex::new(state),
            committed: Condvar::new(),
            file: Mutex::new(file),
            sync,
            syncs: AtomicU64::new(0),
        };
        if store.lock().lines > 0 && store.wants_compaction() {
            store.compact()?;
        }
        Ok(store)
    }

    /// How many batches were synced since open.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Changes queued behind a running commit (for tests that hold a sync).
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    /// The volume record under `key`.
    pub fn volume(&self, key: &str) -> Result<Option<VolumeRecord>> {
        let bytes = self.lock().volumes.get(key).cloned();
        bytes.map(|b| decoded(key, &b)).transpose()
    }

    /// The snapshot record under `key`.
    pub fn snapshot(&self, key: &str) -> Result<Option<SnapshotRecord>> {
        let bytes = self.lock().snapshots.get(key).cloned();
        bytes.map(|b| decoded(key, &b)).transpose()
    }

    /// Every volume record, in key order.
    pub fn volumes(&self) -> Result<Vec<VolumeRecord>> {
        let all: Vec<(String, Encoded)> = self.lock().volumes.clone().into_iter().collect();
        all.iter().map(|(k, b)| decoded(k, b)).collect()
    }

    /// Every snapshot record, in key order.
    pub fn snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        let all: Vec<(String, Encoded)> = self.lock().snapshots.clone().into_iter().collect();
        all.iter().map(|(k, b)| decoded(k, b)).collect()
    }

    /// Is the XFS project id held by a volume record?
    pub fn project_used(&self, project: u32) -> bool {
        self.lock().projects.contains_key(&project)
    }

    /// The enforced volumes' keys and reservations, without decoding a record.
    pub fn reservations(&self) -> Vec<(String, Reservation)> {
        let state = self.lock();
        state
            .reservations
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect()
    }

    /// The keys of every volume.
    pub fn volume_keys(&self) -> Vec<String> {
        self.lock().volumes.keys().cloned().collect()
    }

    /// The keys of every snapshot.
    pub fn snapshot_keys(&self) -> Vec<String> {
        self.lock().snapshots.keys().cloned().collect()
    }

    /// Hands `each` the JSON of up to `limit` volume records in key order whose keys
    /// lie after `start`, and returns the key of the last. `each` runs outside the
    /// lock: the lock is held only to take shared handles to the records.
    pub fn volume_page(
        &self,
        start: Bound<&str>,
        limit: usize,
        mut each: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<Option<String>> {
        let (page, last): (Vec<Encoded>, Option<String>) = {
            let state = self.lock();
            let mut last = None;
            let page = state
                .volumes
                .range::<str, _>((start, Bound::Unbounded))
                .take(limit)
                .map(|(key, record)| {
                    last = Some(key);
                    record.clone()
                })
                .collect();
            (page, last.cloned())
        };
        for record in &page {
            each(record)?;
        }
        Ok(last)
    }

    /// Makes `changes` durable together (one line each, in one batch or in a batch
    /// shared with concurrent callers) and then visible.
    pub fn commit(&self, changes: Vec<Change>) -> Result<()> {
        let entries = changes
            .into_iter()
            .map(Entry::of)
            .collect::<Result<Vec<_>>>()?;
        let mut state = self.lock();
        if let Some(reason) = &state.poisoned {
            return Err(poisoned(reason));
        }
        let mut mine = Vec::with_capacity(entries.len());
        for entry in entries {
            let seq = state.next_seq;
            state.next_seq += 1;
            state.queue.push((seq, entry));
            mine.push(seq);
        }
        let Some(&last) = mine.last() else {
            return Ok(());
        };
        loop {
            if let Some(outcome) = state.outcomes.remove(&last) {
                for seq in &mine {
                    state.outcomes.remove(seq);
                }
                return outcome.map_err(|f| f.to_error());
            }
            if state.leading {
                state = self
                    .committed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            } else {
                state = self.lead(state);
            }
        }
    }

    /// Writes and syncs everything queued, as the leader, and records the outcomes.
    fn lead<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        state.leading = true;
        let batch = std::mem::take(&mut state.queue);
        drop(state);
        let outcome = self.write_batch(&batch);
        let mut state = self.lock();
        let seqs: Vec<u64> = batch.iter().map(|(seq, _)| *seq).collect();
        match &outcome {
            Ok(()) => {
                state.lines += batch.len();
                for (_, entry) in batch {
                    apply(&mut state, entry.effect);
                }
            }
            Err((failure, poison)) if *poison => state.poisoned = Some(failure.message.clone()),
            Err(_) => {}
        }
        for seq in seqs {
            state
                .outcomes
                .insert(seq, outcome.clone().map_err(|(f, _)| f));
        }
        let compact = outcome.is_ok() && state.poisoned.is_none() && self.wants(&state);
        drop(state);
        // The batch's writers have their outcomes: they need not wait for a rewrite.
        self.committed.notify_all();
        if compact && let Err(e) = self.compact() {
            tracing::warn!(error = %e, "could not rewrite the record log; it keeps growing");
        }
        let mut state = self.lock();
        state.leading = false;
        self.committed.notify_all();
        state
    }

    /// Appends the batch and syncs. On failure says whether the log must be
    /// considered unknown (a failed fsync) rather than just not extended.
    fn write_batch(&self, batch: &[(u64, Entry)]) -> Result<(), (Failure, bool)> {
        let bytes: Vec<u8> = batch
            .iter()
            .flat_map(|(_, entry)| entry.line.iter().copied())
            .collect();
        let ctx = |what: &str| format!("{what} {}", self.path.display());
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let before = file
            .metadata()
            .map_err(|e| (Failure::new(ctx("stat"), &e), false))?
            .len();
        if let Err(e) = file.write_all(&bytes) {
            // Cut what part of the batch got in, so the next batch follows whole lines.
            let cut = file.set_len(before).is_err();
            return Err((Failure::new(ctx("append to"), &e), cut));
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        crate::pacer::durable(|| (self.sync)(&file))
            .map_err(|e| (Failure::new(ctx("fsync"), &e), true))
    }

    fn wants_compaction(&self) -> bool {
        self.wants(&self.lock())
    }

    fn wants(&self, state: &State) -> bool {
        let live = state.volumes.len() + state.snapshots.len();
        state.lines > 2 * live + COMPACT_SLACK
    }

    /// Rewrites the log with one line per live record. Called only by the leader of
    /// a commit (or at open, before the store is shared): only a leader changes the
    /// maps, so they hold still while the records stream out a chunk at a time, and
    /// the state lock is let go between chunks for readers and queueing writers.
    fn compact(&self) -> Result<()> {
        let temp = self.path.with_extension("log.tmp");
        let ctx = |what: &str, p: &Path| format!("{what} {}", p.display());
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| Error::io(ctx("create", &temp), e))?;
        let mut chunk = Vec::new();
        let mut lines = 0;
        for kind in [Kind::Volume, Kind::Snapshot] {
            let mut after: Option<String> = None;
            loop {
                chunk.clear();
                let (count, last) = self.compacted_lines(kind, after.as_deref(), &mut chunk)?;
                if count == 0 {
                    break;
                }
                out.write_all(&chunk)
                    .map_err(|e| Error::io(ctx("write", &temp), e))?;
                lines += count;
                after = last;
            }
        }
        out.sync_all()
            .map_err(|e| Error::io(ctx("fsync", &temp), e))?;
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        fs::rename(&temp, &self.path).map_err(|e| Error::io(ctx("rename into", &self.path), e))?;
        if let Some(dir) = self.path.parent() {
            localfs::sync_dir(dir)?;
        }
        *file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io(ctx("open", &self.path), e))?;
        self.lock().lines = lines;
        Ok(())
    }

    /// Appends to `out` the log lines of up to [`COMPACT_CHUNK`] records of `kind`
    /// whose keys follow `after`; returns how many and the last key.
    fn compacted_lines(
        &self,
        kind: Kind,
        after: Option<&str>,
        out: &mut Vec<u8>,
    ) -> Result<(usize, Option<String>)> {
        let state = self.lock();
        let (map, op) = match kind {
            Kind::Volume => (&state.volumes, "putVolume"),
            Kind::Snapshot => (&state.snapshots, "putSnapshot"),
        };
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut count = 0;
        let mut last = None;
        for (key, record) in map
            .range::<str, _>((from, Bound::Unbounded))
            .take(COMPACT_CHUNK)
        {
            // The line a `Change::Put…` encodes to, built from the kept JSON.
            out.extend_from_slice(br#"{"op":""#);
            out.extend_from_slice(op.as_bytes());
            out.extend_from_slice(br#"","key":"#);
            serde_json::to_writer(&mut *out, key).map_err(encoding)?;
            out.extend_from_slice(br#","record":"#);
            out.extend_from_slice(record);
            out.extend_from_slice(b"}\n");
            count += 1;
            last = Some(key);
        }
        Ok((count, last.cloned()))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Takes `<log>.lock` (not the log itself, which compaction replaces).
fn lock(path: &Path) -> Result<Flock<File>> {
    let lock_path = path.with_extension("lock");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| Error::io(format!("open {}", lock_path.display()), e))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| Error::RootHeld {
        lock: lock_path.display().to_string(),
        errno: errno.to_string(),
    })
}

fn poisoned(reason: &str) -> Error {
    Error::io(
        "the record log",
        std::io::Error::other(format!(
            "an earlier fsync failed ({reason}); restart the plugin to recover"
        )),
    )
}

fn apply(state: &mut State, effect: Effect) {
    match effect {
        Effect::Put {
            snapshot: false,
            key,
            record,
            reservation,
        } => {
            unreserve(state, &key);
            if let Some(reservation) = reservation {
                if let Some(project) = reservation.project() {
                    *state.projects.entry(project).or_default() += 1;
                }
                state.reservations.insert(key.clone(), reservation);
            }
            state.volumes.insert(key, record);
        }
        Effect::Put {
            snapshot: true,
            key,
            record,
            ..
        } => {
            state.snapshots.insert(key, record);
        }
        Effect::Delete {
            snapshot: false,
            key,
        } => {
            unreserve(state, &key);
            state.volumes.remove(&key);
        }
        Effect::Delete {
            snapshot: true,
            key,
        } => {
            state.snapshots.remove(&key);
        }
    }
}

/// Drops the reservation (and project id) of the volume `key` had, if any.
fn unreserve(state: &mut State, key: &str) {
    let Some(project) = state.reservations.remove(key).and_then(|r| r.project()) else {
        return;
    };
    if let Some(holders) = state.projects.get_mut(&project) {
        *holders -= 1;
        if *holders == 0 {
            state.projects.remove(&project);
        }
    }
}

/// Applies the log's whole lines to `state`; returns the length of the valid prefix.
/// A line that does not end or does not decode ends the replay: only an
/// unacknowledged batch can be torn, and nothing acknowledged follows it.
fn replay(path: &Path, state: &mut State) -> Result<u64> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
    };
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut valid = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(valid);
        }
        let entry = match split_put(&line)
            .and_then(|(kind, key, record)| Entry::as_read(kind, key, record))
        {
            Some(entry) => entry,
            None => match serde_json::from_slice::<Change>(&line) {
                Ok(change) => Entry::of(change)?,
                Err(_) => return refuse_if_lines_follow(path, reader, valid),
            },
        };
        apply(state, entry.effect);
        state.lines += 1;
        valid += n as u64;
    }
}

/// A put line as this store writes it, `{"op":"put…","key":K,"record":R}`, cut into
/// its kind, key and record bytes without decoding the line; `None` for any other
/// shape (a delete, or a line written otherwise), which replay decodes whole.
fn split_put(line: &[u8]) -> Option<(Kind, String, &[u8])> {
    let body = line.strip_suffix(b"}\n")?;
    let (kind, rest) = match body.strip_prefix(br#"{"op":"putVolume","key":"#) {
        Some(rest) => (Kind::Volume, rest),
        None => (
            Kind::Snapshot,
            body.strip_prefix(br#"{"op":"putSnapshot","key":"#)?,
        ),
    };
    let mut keys = serde_json::Deserializer::from_slice(rest).into_iter::<String>();
    let key = keys.next()?.ok()?;
    let record = rest
        .get(keys.byte_offset()..)?
        .strip_prefix(br#","record":"#)?;
    Some((kind, key, record))
}

/// A bad line with good lines after it is not a torn tail but damage: cutting there
/// would drop acknowledged records, so the store refuses to open.
fn refuse_if_lines_follow(path: &Path, reader: BufReader<File>, valid: u64) -> Result<u64> {
    for line in reader.split(b'\n') {
        let line = line.map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        if serde_json::from_slice::<Change>(&line).is_ok() {
            return Err(Error::CorruptMetadata {
                path: path.display().to_string(),
                reason: format!("an undecodable line at byte {valid} is followed by records"),
            });
        }
    }
    Ok(valid)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
