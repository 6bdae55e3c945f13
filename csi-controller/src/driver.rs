//! The controller's state: its backends, the in-flight guards and the attach book.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::attach::Attachments;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::local::LocalBackend;
use crate::nfs::{NfsBackend, NfsShare};
use driver_contract::ids::{Location, valid_node_id};
use driver_contract::inflight::InFlight;

/// How the controller was started.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// This node's name; with `local_root`, the controller serves its local volumes.
    pub node_id: Option<String>,
    /// The root under which this node's local volumes live (needs `node_id`).
    pub local_root: Option<PathBuf>,
    /// Where the controller keeps its own small state (known exports, attachments).
    pub state_dir: PathBuf,
    /// Serve ControllerPublish/Unpublish with attach bookkeeping.
    pub enable_attach: bool,
    /// With attach: at most this many volumes published to one node (0: no limit), the
    /// figure the node plugins report as max_volumes_per_node.
    pub max_volumes_per_node: usize,
}

/// Everything the Controller and Identity services act on.
#[derive(Debug)]
pub struct Driver {
    /// This node's local volumes, when started with a local root.
    pub local: Option<LocalBackend>,
    /// NFS volumes, on whatever export their class names.
    pub nfs: NfsBackend,
    /// One call per volume or snapshot at a time.
    pub inflight: InFlight,
    /// ControllerPublish bookkeeping, when started with attach.
    pub attachments: Option<Attachments>,
}

/// How long Probe waits for each NFS export.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

impl Driver {
    /// Opens the backends and state `config` names, sweeping what crashed calls left.
    pub fn open(config: &ControllerConfig) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&config.state_dir)
            .map_err(|e| Error::io(format!("create {}", config.state_dir.display()), e))?;
        let local = match (&config.local_root, &config.node_id) {
            (Some(root), Some(node)) if valid_node_id(node) => {
                Some(LocalBackend::open(root, node)?)
            }
            (Some(_), Some(node)) => {
                return Err(Error::invalid(
                    "node-id",
                    format!("{node:?} is not a valid node name of at most 80 bytes"),
                ));
            }
            (Some(_), None) => {
                return Err(Error::invalid("node-id", "is required with --local-root"));
            }
            (None, _) => None,
        };
        let attachments = config
            .enable_attach
            .then(|| {
                Attachments::open(
                    &config.state_dir.join("attachments.json"),
                    config.max_volumes_per_node,
                )
            })
            .transpose()?;
        Ok(Arc::new(Self {
            local,
            nfs: NfsBackend::open(&config.state_dir)?,
            inflight: InFlight::default(),
            attachments,
        }))
    }

    /// Where the volumes and snapshots of `location` live: this node's local root, or
    /// the NFS export the ID names. Resolved once per call; the handlers then ask it.
    pub fn backend(&self, location: &Location) -> Result<Box<dyn Backend + '_>> {
        match location {
            Location::Local { node } => Ok(Box::new(self.local_for(node)?.clone())),
            Location::Nfs(export) => Ok(Box::new(NfsShare::new(&self.nfs, export.clone()))),
        }
    }

    /// Every place this controller knows volumes in: its local root, then the NFS
    /// exports it has made volumes on.
    pub fn backends(&self) -> Vec<Box<dyn Backend + '_>> {
        let local = self
            .local
            .iter()
            .map(|l| Box::new(l.clone()) as Box<dyn Backend + '_>);
        let nfs = self
            .nfs
            .known_exports()
            .into_iter()
            .map(|e| Box::new(NfsShare::new(&self.nfs, e)) as Box<dyn Backend + '_>);
        local.chain(nfs).collect()
    }

    /// The local backend, if `node` is this controller's.
    fn local_for(&self, node: &str) -> Result<&LocalBackend> {
        match &self.local {
            Some(local) if local.node() == node => Ok(local),
            other => Err(Error::OtherNode {
                node: node.to_string(),
                serves: other.as_ref().map(|l| l.node().to_string()),
            }),
        }
    }

    /// Ready when the local root is usable and every known NFS export answers.
    pub async fn ready(&self) -> bool {
        if let Some(local) = &self.local
            && local.available_bytes().is_err()
        {
            return false;
        }
        for export in self.nfs.known_exports() {
            let ping = tokio::time::timeout(PROBE_TIMEOUT, self.nfs.ping(&export)).await;
            if !matches!(ping, Ok(Ok(()))) {
                tracing::warn!(%export, "NFS export does not answer");
                return false;
            }
        }
        true
    }
}
