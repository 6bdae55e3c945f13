//! Capacity tracking, as external-provisioner's: the node-mode provisioner asks its
//! node plugin's GetCapacity, with this node's topology, for every local class of
//! the driver, and keeps one CSIStorageCapacity per class in its namespace
//! (labelled with the driver and its node, so it finds its own and garbage-collects
//! those of classes gone); the scheduler, `stowage mount` and the provisioner read
//! them to place a claim only where it fits.

mod plan;
pub mod room;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use csi_proto::v1 as csi;
use driver_contract::{DRIVER_NAME, TOPOLOGY_NODE_KEY};
use k8s_openapi::api::storage::v1::{CSIStorageCapacity, StorageClass};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use stowage_common::quantity::parse_bytes;

use plan::{Action, Published, Wanted};

/// The label naming the driver of a published capacity.
pub const DRIVER_LABEL: &str = "csi.storage.k8s.io/drivername";
/// The label naming the instance that publishes a capacity.
pub const MANAGED_BY_LABEL: &str = "csi.storage.k8s.io/managed-by";

/// Why one round of publishing failed; the next round tries again.
#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    /// The node plugin's GetCapacity failed.
    #[error("GetCapacity for class {class}: {status}")]
    GetCapacity {
        /// The class asked about.
        class: String,
        /// The plugin's answer.
        status: Box<tonic::Status>,
    },
    /// An API request failed.
    #[error("{what}: {source}")]
    Api {
        /// What was asked.
        what: String,
        /// The API's answer.
        source: Box<kube::Error>,
    },
}

fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> CapacityError {
    let what = what.into();
    move |source| CapacityError::Api {
        what,
        source: Box::new(source),
    }
}

/// The node instance's loop publishing its node's room per local class.
pub struct Publisher {
    client: Client,
    csi: tonic::transport::Channel,
    node: String,
    namespace: String,
    interval: Duration,
}

impl Publisher {
    /// Publishes `node`'s room, asked of the plugin at `csi`, into `namespace` every `interval`.
    pub fn new(
        client: Client,
        csi: tonic::transport::Channel,
        node: String,
        namespace: String,
        interval: Duration,
    ) -> Self {
        Self {
            client,
            csi,
            node,
            namespace,
            interval,
        }
    }

    /// Publishes every `interval` until `shutdown`; a failed round is logged and retried.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(error) = self.round().await {
                tracing::warn!(%error, "capacity not published");
            }
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = &mut shutdown => return,
            }
        }
    }

    /// One pass: ask the driver, compare with what is published, change the difference.
    pub async fn round(&self) -> Result<(), CapacityError> {
        let wanted = self.wanted().await?;
        let published = self.published().await?;
        let mine: Vec<Published> = published.iter().map(as_published).collect();
        for action in plan::plan(&self.node, &wanted, &mine) {
            self.apply(action, &published).await?;
        }
        Ok(())
    }

    async fn wanted(&self) -> Result<Vec<Wanted>, CapacityError> {
        let classes = Api::<StorageClass>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(api_error("list storage classes"))?;
        let mut wanted = Vec::new();
        for class in classes.items.iter().filter(|c| is_local_class(c)) {
            let request = csi::GetCapacityRequest {
                volume_capabilities: Vec::new(),
                parameters: class
                    .parameters
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                accessible_topology: Some(csi::Topology {
                    segments: HashMap::from([(TOPOLOGY_NODE_KEY.to_string(), self.node.clone())]),
                }),
            };
            let reply = csi::controller_client::ControllerClient::new(self.csi.clone())
                .get_capacity(request)
                .await
                .map_err(|status| CapacityError::GetCapacity {
                    class: class.name_any(),
                    status: Box::new(status),
                })?
                .into_inner();
            wanted.push(Wanted {
                class: class.name_any(),
                capacity: reply.available_capacity,
                maximum: reply.maximum_volume_size,
            });
        }
        Ok(wanted)
    }

    async fn published(&self) -> Result<Vec<CSIStorageCapacity>, CapacityError> {
        let selector = format!(
            "{DRIVER_LABEL}={DRIVER_NAME},{MANAGED_BY_LABEL}={}",
            managed_by(&self.node)
        );
        Ok(self
            .api()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(api_error("list CSIStorageCapacity"))?
            .items)
    }

    async fn apply(
        &self,
        action: Action,
        published: &[CSIStorageCapacity],
    ) -> Result<(), CapacityError> {
        let api = self.api();
        match action {
            Action::Create(wanted) => {
                let object = self.object(&wanted, None);
                api.create(&PostParams::default(), &object)
                    .await
                    .map_err(api_error(format!("create capacity of {}", wanted.class)))?;
                tracing::info!(
                    class = wanted.class,
                    capacity = wanted.capacity,
                    "capacity published"
                );
            }
            Action::Update { name, wanted } => {
                let current = published.iter().find(|p| p.name_any() == name);
                let object = self.object(&wanted, current.map(|c| c.metadata.clone()));
                api.replace(&name, &PostParams::default(), &object)
                    .await
                    .map_err(api_error(format!("update capacity {name}")))?;
                tracing::debug!(
                    class = wanted.class,
                    capacity = wanted.capacity,
                    "capacity updated"
                );
            }
            Action::Delete { name } => {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(e) => return Err(api_error(format!("delete capacity {name}"))(e)),
                }
                tracing::info!(capacity = name, "capacity of a class gone deleted");
            }
        }
        Ok(())
    }

    fn object(&self, wanted: &Wanted, metadata: Option<ObjectMeta>) -> CSIStorageCapacity {
        let labels = BTreeMap::from([
            (DRIVER_LABEL.to_string(), DRIVER_NAME.to_string()),
            (MANAGED_BY_LABEL.to_string(), managed_by(&self.node)),
        ]);
        let metadata = metadata.unwrap_or_else(|| ObjectMeta {
            generate_name: Some("csisc-".into()),
            namespace: Some(self.namespace.clone()),
            ..ObjectMeta::default()
        });
        CSIStorageCapacity {
            metadata: ObjectMeta {
                labels: Some(labels),
                ..metadata
            },
            storage_class_name: wanted.class.clone(),
            node_topology: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    TOPOLOGY_NODE_KEY.to_string(),
                    self.node.clone(),
                )])),
                match_expressions: None,
            }),
            capacity: Some(Quantity(wanted.capacity.to_string())),
            maximum_volume_size: wanted.maximum.map(|m| Quantity(m.to_string())),
        }
    }

    fn api(&self) -> Api<CSIStorageCapacity> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

/// Why `node` has no room for the claim by its published capacity, or `None`
/// (room, nothing published, or the objects unreadable: CreateVolume then decides).
/// The provisioner asks before CreateVolume, so a full node is refused with an
/// event that says so rather than an error from inside the driver.
pub async fn refusal_for(
    client: &Client,
    pvc: &k8s_openapi::api::core::v1::PersistentVolumeClaim,
    class: &str,
    node: &str,
) -> Option<room::NoRoom> {
    let capacities = match Api::<CSIStorageCapacity>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(error) => {
            tracing::warn!(%error, "capacity not readable; placing without it");
            return None;
        }
    };
    let request = crate::provision::request::requested_bytes(pvc).unwrap_or(0);
    room::refusal(class, node, room::room(&capacities, class, node), request)
}

/// A class this node's plugin makes volumes for: the driver's, of the local kind.
fn is_local_class(class: &StorageClass) -> bool {
    class.provisioner == DRIVER_NAME
        && class
            .parameters
            .as_ref()
            .and_then(|p| p.get("type"))
            .is_none_or(|kind| kind == "local")
}

fn as_published(capacity: &CSIStorageCapacity) -> Published {
    let bytes = |q: &Option<Quantity>| {
        q.as_ref()
            .and_then(|q| parse_bytes(&q.0))
            .and_then(|b| i64::try_from(b).ok())
    };
    Published {
        name: capacity.name_any(),
        class: capacity.storage_class_name.clone(),
        node: room::node_of(capacity).map(str::to_string),
        capacity: bytes(&capacity.capacity),
        maximum: bytes(&capacity.maximum_volume_size),
    }
}

/// The managed-by label of one node's publisher: `stowage-<node>`, or for a node
/// name too long for a label value, its start and a hash of the whole.
pub fn managed_by(node: &str) -> String {
    let value = format!("stowage-{node}");
    if value.len() <= 63 {
        return value;
    }
    // FNV-1a: stable across builds, unlike std's hasher.
    let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let start: String = value.chars().take(46).collect();
    format!("{}-{hash:016x}", start.trim_end_matches(['-', '.']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_by_is_a_valid_label_value_for_any_node_name() {
        let long = "n".repeat(253);
        let cases = [
            (
                "a short name is kept",
                "node-1",
                "stowage-node-1".to_string(),
            ),
            (
                "a long one is cut and hashed",
                long.as_str(),
                managed_by(long.as_str()),
            ),
        ];
        for (what, node, expected) in cases {
            let value = managed_by(node);
            assert_eq!(value, expected, "{what}");
            assert!(value.len() <= 63, "{what}: {value}");
            assert!(
                value.ends_with(|c: char| c.is_ascii_alphanumeric()),
                "{what}: {value}"
            );
        }
        assert_ne!(managed_by(&"a".repeat(100)), managed_by(&"a".repeat(101)));
    }
}
