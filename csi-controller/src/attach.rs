//! ControllerPublish bookkeeping: which nodes a volume is published to, persisted
//! so that a restarted controller still refuses a second node for a single-node volume.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::localfs;
use crate::record;

/// One publish of a volume to a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// The node it is published to.
    pub node: String,
    /// Published read-only.
    pub readonly: bool,
    /// Its access mode allows one node only.
    pub single_node: bool,
}

/// The publishes of every volume, persisted in one file.
#[derive(Debug)]
pub struct Attachments {
    path: PathBuf,
    book: Mutex<BTreeMap<String, Vec<Attachment>>>,
    /// Volumes one node may have published at once; 0: no limit.
    per_node_limit: usize,
}

impl Attachments {
    /// Loads the book at `path` (empty if absent).
    pub fn open(path: &Path, per_node_limit: usize) -> Result<Self> {
        let book = match localfs::read_optional(path)? {
            Some(bytes) => record::decode(&path.display().to_string(), &bytes)?,
            None => BTreeMap::new(),
        };
        Ok(Self {
            path: path.to_path_buf(),
            book: Mutex::new(book),
            per_node_limit,
        })
    }

    /// The nodes the volume is published to.
    pub fn nodes(&self, volume_id: &str) -> Vec<String> {
        self.lock()
            .get(volume_id)
            .map(|list| list.iter().map(|a| a.node.clone()).collect())
            .unwrap_or_default()
    }

    /// Records a publish; OK when already published the same way.
    pub fn publish(&self, volume_id: &str, wanted: Attachment) -> Result<()> {
        let mut book = self.lock();
        let list = book.get(volume_id).map(Vec::as_slice).unwrap_or_default();
        if let Some(existing) = list.iter().find(|a| a.node == wanted.node) {
            if *existing == wanted {
                return Ok(());
            }
            return Err(Error::PublishedOtherwise {
                volume: volume_id.to_string(),
                node: wanted.node,
            });
        }
        if let Some(other) = list.iter().find(|a| a.single_node || wanted.single_node) {
            return Err(Error::NotPublishable {
                volume: volume_id.to_string(),
                reason: format!(
                    "is single-node and already published to node {}",
                    other.node
                ),
            });
        }
        let on_node = book
            .values()
            .filter(|list| list.iter().any(|a| a.node == wanted.node))
            .count();
        if self.per_node_limit > 0 && on_node >= self.per_node_limit {
            // The node's attach limit (max_volumes_per_node): ResourceExhausted (spec).
            return Err(Error::AttachLimit {
                node: wanted.node,
                published: on_node,
            });
        }
        book.entry(volume_id.to_string()).or_default().push(wanted);
        self.persist(&book)
    }

    /// Removes the publish on `node` (all nodes when empty); OK when absent.
    pub fn unpublish(&self, volume_id: &str, node: &str) -> Result<()> {
        let mut book = self.lock();
        let Some(list) = book.get_mut(volume_id) else {
            return Ok(());
        };
        list.retain(|a| !node.is_empty() && a.node != node);
        if list.is_empty() {
            book.remove(volume_id);
        }
        self.persist(&book)
    }

    /// Drops every publish of a deleted volume.
    pub fn forget(&self, volume_id: &str) -> Result<()> {
        let mut book = self.lock();
        if book.remove(volume_id).is_some() {
            self.persist(&book)?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<Attachment>>> {
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn persist(&self, book: &BTreeMap<String, Vec<Attachment>>) -> Result<()> {
        localfs::write_atomic(&self.path, &record::encode(book)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(node: &str, single: bool) -> Attachment {
        Attachment {
            node: node.into(),
            readonly: false,
            single_node: single,
        }
    }

    #[test]
    fn single_node_volume_is_refused_on_a_second_node_even_after_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.json");
        let book = Attachments::open(&path, 0).expect("open");
        book.publish("v", at("n1", true)).expect("first");
        book.publish("v", at("n1", true)).expect("idempotent");
        let reopened = Attachments::open(&path, 0).expect("reopen");
        assert!(matches!(
            reopened.publish("v", at("n2", true)),
            Err(Error::NotPublishable { .. })
        ));
        assert!(matches!(
            reopened.publish(
                "v",
                Attachment {
                    readonly: true,
                    ..at("n1", true)
                }
            ),
            Err(Error::PublishedOtherwise { .. })
        ));
        reopened.unpublish("v", "n1").expect("unpublish");
        reopened.publish("v", at("n2", true)).expect("free again");
    }

    #[test]
    fn multi_node_volume_publishes_to_many_nodes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let book = Attachments::open(&dir.path().join("a.json"), 0).expect("open");
        book.publish("v", at("n1", false)).expect("n1");
        book.publish("v", at("n2", false)).expect("n2");
        assert_eq!(book.nodes("v"), vec!["n1".to_string(), "n2".to_string()]);
    }

    #[test]
    fn a_node_takes_volumes_up_to_its_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let book = Attachments::open(&dir.path().join("a.json"), 2).expect("open");
        book.publish("v1", at("n1", true)).expect("v1");
        book.publish("v2", at("n1", true)).expect("v2");
        book.publish("v2", at("n1", true))
            .expect("v2 again is no new volume");
        assert!(matches!(
            book.publish("v3", at("n1", true)),
            Err(Error::AttachLimit { .. })
        ));
        book.publish("v3", at("n2", true))
            .expect("another node has room");
        book.unpublish("v1", "n1").expect("unpublish");
        book.publish("v3", at("n1", false))
            .expect_err("v3 is single-node on n2");
        book.publish("v4", at("n1", true)).expect("room again");
    }
}
