//! Objects in one redb file, written by one thread that commits in groups.
//!
//! Every write is a closure that reads the current state and returns the
//! mutations it wants; the writer thread runs the closures queued at that moment
//! inside one transaction, stamps each mutation with the next revision, commits
//! once (fsync), and only then answers the callers and publishes the changes to
//! the watch log. Concurrent writers therefore share one fsync, no acknowledged
//! write can be lost, and revisions in the log are strictly increasing.

pub mod log;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::error::{ApiError, Result};
pub use log::{Change, EventLog, EventType, TooOld, selectable};

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
/// Writes taken into one transaction at most.
const MAX_BATCH: usize = 512;
/// redb's own page cache. Its default (1 GiB) filled as the store grew and made
/// most of the server's resident memory at 100,000s of objects; pages beyond this
/// are read again through the kernel's page cache, which the kernel can reclaim.
const CACHE_BYTES: usize = 64 << 20;

/// What [`Reader::scan`] calls with each object's key and object; false stops the scan.
pub type Visit<'v> = &'v mut dyn FnMut(&str, Value) -> bool;
/// What [`Reader::scan_raw`] calls with each object's key and stored JSON bytes.
pub type VisitRaw<'v> = &'v mut dyn FnMut(&str, &[u8]) -> bool;

/// Read access to the objects, inside a read or a write transaction.
pub trait Reader {
    /// The object stored under `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Value>>;
    /// Visits objects whose key starts with `prefix`, in key order, after `after`
    /// when given, until `visit` returns false.
    fn scan(&self, prefix: &str, after: Option<&str>, visit: Visit<'_>) -> Result<()>;
    /// [`Reader::scan`] over the objects' JSON bytes: a LIST without selectors copies
    /// them into its answer. Encoding what `scan` yields is the meaning; the redb store
    /// hands over its stored bytes undecoded instead, which is the point of the method.
    fn scan_raw(&self, prefix: &str, after: Option<&str>, visit: VisitRaw<'_>) -> Result<()> {
        self.scan(prefix, after, &mut |key, object| {
            visit(key, object.to_string().as_bytes())
        })
    }
    /// The revision of the last committed write this reader sees.
    fn revision(&self) -> u64;
}

/// What a write wants done to one object.
#[derive(Debug)]
pub enum Mutation {
    /// Store `object` under `key`, created or replaced.
    Put {
        /// The object's store key.
        key: String,
        /// The object to store (its resourceVersion is stamped on commit).
        object: Value,
    },
    /// Remove the object under `key`, which must exist.
    Delete {
        /// The object's store key.
        key: String,
    },
    /// Nothing to write: the object is answered as it is, with no new revision.
    Keep(Value),
}

/// A write: reads the state it is given and returns the mutations it wants.
pub type WriteOp = Box<dyn FnOnce(&dyn Reader) -> Result<Vec<Mutation>> + Send>;

struct Write {
    op: WriteOp,
    reply: oneshot::Sender<Result<Vec<Value>>>,
}

/// The object store: a redb file, its writer thread and its watch log.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    writes: mpsc::Sender<Write>,
    log: Arc<EventLog>,
}

impl Store {
    /// Opens (or creates) the database and starts its writer thread.
    pub fn open(path: &Path, watch_history: usize) -> Result<Self> {
        let db = Arc::new(
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(path)
                .map_err(ApiError::storage)?,
        );
        let revision = {
            let txn = db.begin_write().map_err(ApiError::storage)?;
            txn.open_table(OBJECTS).map_err(ApiError::storage)?;
            let revision = {
                let meta = txn.open_table(META).map_err(ApiError::storage)?;
                read_revision(&meta)?
            };
            txn.commit().map_err(ApiError::storage)?;
            revision
        };
        let log = Arc::new(EventLog::new(watch_history, revision));
        let (writes, queue) = mpsc::channel(4 * MAX_BATCH);
        let writer = Writer {
            db: db.clone(),
            log: log.clone(),
        };
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(ApiError::storage)?;
        Ok(Self { db, writes, log })
    }

    /// The recent changes, for watches.
    pub fn log(&self) -> &Arc<EventLog> {
        &self.log
    }

    /// Runs `op` in the next group commit; returns the objects as stored (a
    /// deleted object carries the revision of its deletion).
    pub async fn write(&self, op: WriteOp) -> Result<Vec<Value>> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(Write { op, reply })
            .await
            .map_err(|_| ApiError::ShuttingDown)?;
        answer.await.map_err(|_| ApiError::ShuttingDown)?
    }

    /// Runs `op` against the current state and answers what it would store,
    /// writing nothing (`dryRun=All`).
    pub async fn dry_run(&self, op: WriteOp) -> Result<Vec<Value>> {
        self.read(move |reader| {
            let mut objects = Vec::new();
            for mutation in op(reader)? {
                objects.push(match mutation {
                    Mutation::Put { object, .. } | Mutation::Keep(object) => object,
                    Mutation::Delete { key } => reader
                        .get(&key)?
                        .ok_or_else(|| ApiError::storage(format!("missing {key}")))?,
                });
            }
            Ok(objects)
        })
        .await
    }

    /// Runs `read` against a consistent snapshot, off the async threads.
    pub async fn read<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Reader) -> Result<T> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(ApiError::storage)?;
            let objects = txn.open_table(OBJECTS).map_err(ApiError::storage)?;
            let meta = txn.open_table(META).map_err(ApiError::storage)?;
            let revision = read_revision(&meta)?;
            read(&TableReader {
                table: &objects,
                revision,
            })
        })
        .await
        .map_err(ApiError::storage)?
    }
}

fn read_revision(meta: &impl ReadableTable<&'static str, u64>) -> Result<u64> {
    Ok(meta
        .get(REVISION)
        .map_err(ApiError::storage)?
        .map(|v| v.value())
        .unwrap_or(0))
}

struct TableReader<'t, T> {
    table: &'t T,
    revision: u64,
}

impl<T: ReadableTable<&'static str, &'static [u8]>> Reader for TableReader<'_, T> {
    fn get(&self, key: &str) -> Result<Option<Value>> {
        match self.table.get(key).map_err(ApiError::storage)? {
            Some(bytes) => Ok(Some(decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    fn scan(&self, prefix: &str, after: Option<&str>, visit: Visit<'_>) -> Result<()> {
        let mut failed = None;
        self.scan_raw(prefix, after, &mut |key, bytes| match decode(bytes) {
            Ok(object) => visit(key, object),
            Err(error) => {
                failed = Some(error);
                false
            }
        })?;
        failed.map_or(Ok(()), Err)
    }

    fn scan_raw(&self, prefix: &str, after: Option<&str>, visit: VisitRaw<'_>) -> Result<()> {
        let start = after.unwrap_or(prefix);
        let range = self.table.range(start..).map_err(ApiError::storage)?;
        for entry in range {
            let (key, value) = entry.map_err(ApiError::storage)?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            if Some(key) == after {
                continue;
            }
            if !visit(key, value.value()) {
                break;
            }
        }
        Ok(())
    }

    fn revision(&self) -> u64 {
        self.revision
    }
}

fn decode(bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(ApiError::storage)
}

struct Writer {
    db: Arc<Database>,
    log: Arc<EventLog>,
}

/// A write whose mutations are in the open transaction, waiting for its commit.
struct Pending {
    reply: oneshot::Sender<Result<Vec<Value>>>,
    objects: Vec<Value>,
}

impl Writer {
    fn run(self, mut queue: mpsc::Receiver<Write>) {
        while let Some(first) = queue.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(write) => batch.push(write),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
    }

    fn commit_batch(&self, batch: Vec<Write>) {
        let mut pending = Vec::with_capacity(batch.len());
        let mut changes = Vec::new();
        let outcome = self.apply(batch, &mut pending, &mut changes);
        match outcome {
            Ok(()) => {
                self.log.append(changes);
                for write in pending {
                    let _ = write.reply.send(Ok(write.objects));
                }
            }
            Err(error) => {
                tracing::error!(%error, "commit failed");
                for write in pending {
                    let _ = write.reply.send(Err(ApiError::storage(&error)));
                }
            }
        }
    }

    fn apply(
        &self,
        batch: Vec<Write>,
        pending: &mut Vec<Pending>,
        changes: &mut Vec<Change>,
    ) -> Result<()> {
        let txn = self.db.begin_write().map_err(ApiError::storage)?;
        {
            let mut objects = txn.open_table(OBJECTS).map_err(ApiError::storage)?;
            let mut meta = txn.open_table(META).map_err(ApiError::storage)?;
            let mut revision = read_revision(&meta)?;
            for write in batch {
                let reader = TableReader {
                    table: &objects,
                    revision,
                };
                let mutations = match (write.op)(&reader) {
                    Ok(mutations) => mutations,
                    Err(error) => {
                        let _ = write.reply.send(Err(error));
                        continue;
                    }
                };
                let mut stored = Vec::with_capacity(mutations.len());
                for mutation in mutations {
                    if let Mutation::Keep(object) = mutation {
                        stored.push(object);
                        continue;
                    }
                    revision += 1;
                    let (change, object) = apply_one(&mut objects, mutation, revision)?;
                    stored.push(object);
                    changes.push(change);
                }
                pending.push(Pending {
                    reply: write.reply,
                    objects: stored,
                });
            }
            meta.insert(REVISION, revision).map_err(ApiError::storage)?;
        }
        txn.commit().map_err(ApiError::storage)
    }
}

/// Writes one mutation; returns the change for the watch log and the object as stored.
fn apply_one(
    objects: &mut redb::Table<&str, &[u8]>,
    mutation: Mutation,
    revision: u64,
) -> Result<(Change, Value)> {
    let (key, new) = match mutation {
        Mutation::Put { key, object } => (key, Some(object)),
        Mutation::Delete { key } => (key, None),
        Mutation::Keep(_) => return Err(ApiError::storage("nothing to apply")),
    };
    let old = match objects.get(key.as_str()).map_err(ApiError::storage)? {
        Some(bytes) => Some(decode(bytes.value())?),
        None => None,
    };
    let (event, mut object) = match (new, old.as_ref()) {
        (Some(object), None) => (EventType::Added, object),
        (Some(object), Some(_)) => (EventType::Modified, object),
        (None, Some(old)) => (EventType::Deleted, old.clone()),
        (None, None) => return Err(ApiError::storage(format!("delete of missing {key}"))),
    };
    object["metadata"]["resourceVersion"] = Value::String(revision.to_string());
    let bytes = serde_json::to_vec(&object).map_err(ApiError::storage)?;
    if event == EventType::Deleted {
        objects.remove(key.as_str()).map_err(ApiError::storage)?;
    } else {
        objects
            .insert(key.as_str(), bytes.as_slice())
            .map_err(ApiError::storage)?;
    }
    let fields = selectable_fields(&key);
    let encode_selectable = |object: &Value| exact_json(&selectable(object, &fields));
    let change = Change {
        revision,
        event,
        object: exact(bytes),
        selectable: encode_selectable(&object)?,
        old: old.as_ref().map(encode_selectable).transpose()?,
        committed: None,
        key,
    };
    Ok((change, object))
}

/// `value` JSON-encoded, in an allocation of its length (see [`exact`]).
fn exact_json(value: &Value) -> Result<bytes::Bytes> {
    serde_json::to_vec(value)
        .map(exact)
        .map_err(ApiError::storage)
}

/// `bytes` without spare capacity, for the watch log to hold. serde_json grows its
/// buffer by doubling, so the JSON of a 0.6 KiB object has 1 KiB behind it, and a
/// `Bytes` made from a `Vec` with spare capacity keeps all of it, and a separate
/// header, for as long as the change is in the window (100,000 changes by default).
fn exact(bytes: Vec<u8>) -> bytes::Bytes {
    bytes::Bytes::from(bytes.into_boxed_slice())
}

/// The JSON pointers of the selectable fields of the kind stored under `key`.
fn selectable_fields(key: &str) -> Vec<&'static str> {
    crate::registry::all()
        .iter()
        .find(|resource| key.starts_with(&resource.prefix(None)))
        .map(|resource| resource.behaviour.fields.iter().map(|(_, p)| *p).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A reader with only `get` and `scan`, as a store other than redb has them.
    struct Decoded<'r>(&'r dyn Reader);

    impl Reader for Decoded<'_> {
        fn get(&self, key: &str) -> Result<Option<Value>> {
            self.0.get(key)
        }

        fn scan(&self, prefix: &str, after: Option<&str>, visit: Visit<'_>) -> Result<()> {
            self.0.scan(prefix, after, visit)
        }

        fn revision(&self) -> u64 {
            self.0.revision()
        }
    }

    /// The bytes a change holds, with the capacity behind them: a `Bytes` made from a
    /// `Vec` gives that `Vec` back, spare capacity and all, when it is the only owner.
    fn held(bytes: bytes::Bytes) -> (usize, usize) {
        let len = bytes.len();
        (len, Vec::from(bytes).capacity())
    }

    #[test]
    fn a_logged_change_holds_its_json_without_spare_capacity() -> Result<()> {
        let dir = tempfile::tempdir().map_err(ApiError::storage)?;
        let db = Database::create(dir.path().join("store.redb")).map_err(ApiError::storage)?;
        let txn = db.begin_write().map_err(ApiError::storage)?;
        let mut objects = txn.open_table(OBJECTS).map_err(ApiError::storage)?;
        let key = "core/persistentvolumes//pv-1";
        // Sizes that serde_json's doubling buffer does not land on exactly.
        let object = |label: &str| {
            json!({
                "metadata": {"name": "pv-1", "labels": {"app": label, "tier": "bench"},
                             "annotations": {"a": "x".repeat(300)}},
                "spec": {"capacity": {"storage": "1Gi"}, "storageClassName": ""},
                "status": {"phase": "Available"},
            })
        };
        let cases = [
            (
                "create",
                Mutation::Put {
                    key: key.into(),
                    object: object("a"),
                },
            ),
            (
                "update",
                Mutation::Put {
                    key: key.into(),
                    object: object("bb"),
                },
            ),
            ("delete", Mutation::Delete { key: key.into() }),
        ];
        for (revision, (what, mutation)) in (1..).zip(cases) {
            let (change, _) = apply_one(&mut objects, mutation, revision)?;
            let mut parts = vec![("object", change.object), ("selectable", change.selectable)];
            parts.extend(change.old.map(|old| ("old", old)));
            for (part, bytes) in parts {
                let (len, capacity) = held(bytes);
                assert!(len > 0, "{what}: {part} is empty");
                assert_eq!(capacity, len, "{what}: {part}");
            }
        }
        Ok(())
    }

    type Scanned = Vec<(String, Vec<u8>)>;

    fn scan_raw(reader: &dyn Reader, prefix: &str, after: Option<&str>, stop: usize) -> Scanned {
        let mut seen = Vec::new();
        let scanned = reader.scan_raw(prefix, after, &mut |key, bytes| {
            seen.push((key.to_string(), bytes.to_vec()));
            seen.len() < stop
        });
        assert!(scanned.is_ok(), "{scanned:?}");
        seen
    }

    #[tokio::test]
    async fn the_default_scan_raw_yields_the_bytes_the_redb_store_holds() -> Result<()> {
        let dir = tempfile::tempdir().map_err(ApiError::storage)?;
        let store = Store::open(&dir.path().join("store.redb"), 16)?;
        store
            .write(Box::new(|_: &dyn Reader| {
                let put = |key: &str| Mutation::Put {
                    key: key.to_string(),
                    object: json!({"metadata": {"name": key}, "spec": {"z": 1, "a": [true, null]}}),
                };
                Ok(vec![put("a/1"), put("a/2"), put("a/3"), put("b/1")])
            }))
            .await?;
        let cases = [
            ("a/", None, usize::MAX, 3),
            ("a/", Some("a/1"), usize::MAX, 2),
            ("a/", None, 2, 2),
            ("b/", None, usize::MAX, 1),
            ("c/", None, usize::MAX, 0),
        ];
        store
            .read(move |reader| {
                for (prefix, after, stop, count) in cases {
                    let raw = scan_raw(reader, prefix, after, stop);
                    assert_eq!(raw.len(), count, "{prefix} after {after:?}");
                    assert_eq!(
                        scan_raw(&Decoded(reader), prefix, after, stop),
                        raw,
                        "{prefix} after {after:?}"
                    );
                }
                Ok(())
            })
            .await
    }
}
