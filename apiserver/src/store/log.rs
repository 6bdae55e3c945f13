//! The in-memory log of recent changes that watches are served from.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::watch;

/// What a change did to its object, as a watch event's type names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object was replaced.
    Modified,
    /// The object was removed.
    Deleted,
}

impl EventType {
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One committed change, as the log keeps it for its whole time in the window:
/// the object once JSON-encoded (what every JSON watcher is sent, so it is encoded
/// once, not once per watcher) and, for selectors, only the fields they can read of
/// it and of the object before it. A window of 100,000 changes of whole decoded
/// objects and their predecessors took gigabytes; this keeps about the bytes.
#[derive(Debug)]
pub struct Change {
    /// The revision the change was committed at.
    pub revision: u64,
    /// The object's storage key (`group/plural/namespace/name`).
    pub key: String,
    /// What the change did.
    pub event: EventType,
    /// The object after the change (before it, for a deletion), JSON-encoded.
    pub object: Bytes,
    /// What selectors read of `object` (see [`selectable`]), JSON-encoded: decoded
    /// only for a watch with a selector. As a tree of maps it took ≈ 2 KiB a change.
    pub selectable: Bytes,
    /// The same of the object before the change, so a watch with a selector can
    /// tell an object entering or leaving the selection.
    pub old: Option<Bytes>,
    /// When the change became durable and visible to watches.
    pub committed: Option<Instant>,
}

/// The part of `object` label and field selectors read: name, namespace and labels,
/// and the value at each of `fields` (JSON pointers of the kind's selectable fields).
pub fn selectable(object: &Value, fields: &[&str]) -> Value {
    let mut kept = Value::Object(Default::default());
    for pointer in ["/metadata/name", "/metadata/namespace", "/metadata/labels"]
        .into_iter()
        .chain(fields.iter().copied())
    {
        if let Some(value) = object.pointer(pointer) {
            place(&mut kept, pointer, value.clone());
        }
    }
    kept
}

/// Sets the value at `pointer` in `target`, making the objects on the way.
fn place(target: &mut Value, pointer: &str, value: Value) {
    let mut at = target;
    let mut steps = pointer.split('/').skip(1).peekable();
    while let Some(step) = steps.next() {
        let Value::Object(map) = at else { return };
        if steps.peek().is_none() {
            map.insert(step.to_string(), value);
            return;
        }
        at = map
            .entry(step.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
}

/// A bounded, ordered log of changes plus a signal that new ones arrived.
pub struct EventLog {
    inner: RwLock<Window>,
    latest: watch::Sender<u64>,
}

struct Window {
    changes: VecDeque<Arc<Change>>,
    capacity: usize,
    /// Every change with a revision above this one is in `changes`.
    complete_after: u64,
}

/// The log no longer holds changes that far back.
#[derive(Debug, Clone, Copy)]
pub struct TooOld {
    /// The oldest revision a watch may still start after.
    pub oldest: u64,
}

impl EventLog {
    /// A log of `capacity` changes, the store being at `current_revision`.
    pub fn new(capacity: usize, current_revision: u64) -> Self {
        let (latest, _) = watch::channel(current_revision);
        Self {
            inner: RwLock::new(Window {
                changes: VecDeque::with_capacity(capacity.min(1 << 16)),
                capacity: capacity.max(1),
                complete_after: current_revision,
            }),
            latest,
        }
    }

    /// Appends changes committed together, in revision order.
    pub fn append(&self, batch: Vec<Change>) {
        let Some(last) = batch.last().map(|c| c.revision) else {
            return;
        };
        let committed = Some(Instant::now());
        {
            let mut window = self.inner.write().unwrap_or_else(|e| e.into_inner());
            for mut change in batch {
                change.committed = committed;
                if window.changes.len() == window.capacity
                    && let Some(evicted) = window.changes.pop_front()
                {
                    window.complete_after = evicted.revision;
                }
                window.changes.push_back(Arc::new(change));
            }
        }
        self.latest.send_replace(last);
    }

    /// Changes after `revision`, at most `max` of them.
    pub fn since(&self, revision: u64, max: usize) -> Result<Vec<Arc<Change>>, TooOld> {
        let window = self.inner.read().unwrap_or_else(|e| e.into_inner());
        if revision < window.complete_after {
            return Err(TooOld {
                oldest: window.complete_after + 1,
            });
        }
        let start = window.changes.partition_point(|c| c.revision <= revision);
        Ok(window.changes.range(start..).take(max).cloned().collect())
    }

    /// Whether any change after `revision` satisfies `wanted`, and the revision of the
    /// last change looked at (`revision` itself when there is none).
    pub fn any_since(
        &self,
        revision: u64,
        wanted: impl Fn(&Change) -> bool,
    ) -> Result<(bool, u64), TooOld> {
        let window = self.inner.read().unwrap_or_else(|e| e.into_inner());
        if revision < window.complete_after {
            return Err(TooOld {
                oldest: window.complete_after + 1,
            });
        }
        let start = window.changes.partition_point(|c| c.revision <= revision);
        let later = window.changes.range(start..);
        let latest = later.clone().last().map_or(revision, |c| c.revision);
        Ok((later.into_iter().any(|c| wanted(c)), latest))
    }

    /// The change made at exactly `revision`, while the log holds it.
    pub fn at(&self, revision: u64) -> Option<Arc<Change>> {
        let window = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let index = window.changes.partition_point(|c| c.revision < revision);
        window
            .changes
            .get(index)
            .filter(|c| c.revision == revision)
            .cloned()
    }

    /// A receiver that wakes whenever changes are appended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Drops every change up to `revision`, as etcd compaction does.
    pub fn compact(&self, revision: u64) {
        let mut window = self.inner.write().unwrap_or_else(|e| e.into_inner());
        while window
            .changes
            .front()
            .is_some_and(|c| c.revision <= revision)
        {
            window.changes.pop_front();
        }
        window.complete_after = window.complete_after.max(revision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(revision: u64) -> Change {
        Change {
            revision,
            key: format!("core/pods/default/p{revision}"),
            event: EventType::Added,
            object: Bytes::new(),
            selectable: Bytes::new(),
            old: None,
            committed: None,
        }
    }

    #[test]
    fn selectable_keeps_what_selectors_read_and_nothing_else() {
        let object = serde_json::json!({
            "metadata": {"name": "a", "namespace": "ns", "labels": {"app": "x"},
                         "annotations": {"big": "yes"}, "uid": "u"},
            "spec": {"nodeName": "n1", "containers": [1, 2, 3]},
            "status": {"phase": "Bound"},
        });
        let cases: [(&[&str], Value); 2] = [
            (
                &[],
                serde_json::json!({"metadata": {"name": "a", "namespace": "ns", "labels": {"app": "x"}}}),
            ),
            (
                &["/spec/nodeName", "/status/phase", "/spec/missing"],
                serde_json::json!({
                    "metadata": {"name": "a", "namespace": "ns", "labels": {"app": "x"}},
                    "spec": {"nodeName": "n1"},
                    "status": {"phase": "Bound"},
                }),
            ),
        ];
        for (fields, expected) in cases {
            assert_eq!(selectable(&object, fields), expected, "fields {fields:?}");
        }
    }

    #[test]
    fn since_returns_changes_after_the_revision_in_order() {
        let log = EventLog::new(10, 4);
        log.append((5..=9).map(change).collect());
        let revisions: Vec<u64> = log
            .since(6, 100)
            .map(|v| v.iter().map(|c| c.revision).collect())
            .unwrap_or_default();
        assert_eq!(revisions, vec![7, 8, 9]);
        assert!(log.since(3, 100).is_err(), "before the log began");
        assert!(log.since(4, 100).is_ok());
    }

    #[test]
    fn any_since_looks_only_after_the_revision() {
        let log = EventLog::new(10, 4);
        log.append((5..=9).map(change).collect());
        let is_seven = |c: &Change| c.revision == 7;
        assert_eq!(log.any_since(6, is_seven).ok(), Some((true, 9)));
        assert_eq!(log.any_since(7, is_seven).ok(), Some((false, 9)));
        assert_eq!(log.any_since(9, is_seven).ok(), Some((false, 9)));
        assert!(log.any_since(3, is_seven).is_err());
    }

    #[test]
    fn eviction_and_compaction_expire_old_revisions() {
        let log = EventLog::new(3, 0);
        log.append((1..=5).map(change).collect());
        assert!(log.since(1, 10).is_err());
        assert_eq!(log.since(2, 10).map(|v| v.len()).unwrap_or(0), 3);
        log.compact(4);
        assert_eq!(log.since(1, 10).err().map(|e| e.oldest), Some(5));
        assert_eq!(log.since(4, 10).map(|v| v.len()).unwrap_or(0), 1);
    }
}
