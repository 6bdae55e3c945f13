//! Volumes of a node that is gone. A local volume lives on one node; when that
//! Node object is deleted for good (still absent after a grace period, so a node
//! that re-registers is not mistaken), nobody can reclaim it: a Released one goes
//! Failed with a message naming the node, and with the opt-in `RemoveVolumes`
//! policy its PV object is deleted (its finalizers dropped: DeleteVolume has no
//! node to run on); a Bound one is reported with a Warning event on its claim.
//! The node's CSIStorageCapacity objects are deleted after the same grace period:
//! its own provisioner, which would garbage-collect them, is gone with it, and the
//! scheduler would otherwise keep counting room on a node that does not exist.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use driver_contract::{DRIVER_NAME, TOPOLOGY_NODE_KEY};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::CSIStorageCapacity;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::binder::VolumePhase;
use crate::capacity::DRIVER_LABEL;
use crate::events::{EventRecorder, claim_reference, volume_reference};
use crate::reclaim::plan::pinned_node;
use crate::volumes::set_phase;

/// What to do with the PV objects of a gone node once they are Failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GonePolicy {
    /// Leave them Failed, for an administrator to look at and delete.
    Keep,
    /// Delete the PV objects of Released (then Failed) volumes.
    RemoveVolumes,
}

/// A `--gone-node-policy` that is neither policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not keep or remove-volumes")]
pub struct UnknownPolicy(String);

impl std::str::FromStr for GonePolicy {
    type Err = UnknownPolicy;

    fn from_str(text: &str) -> Result<Self, UnknownPolicy> {
        match text {
            "keep" => Ok(Self::Keep),
            "remove-volumes" => Ok(Self::RemoveVolumes),
            other => Err(UnknownPolicy(other.to_string())),
        }
    }
}

/// The reason of the events this module records.
pub const NODE_GONE: &str = "VolumeNodeGone";

/// One volume's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do: the node exists, or the volume's phase needs nothing.
    Nothing,
    /// Its node is gone, but not yet for the grace period.
    Wait,
    /// Released: mark it Failed with this message.
    Fail(String),
    /// Failed because its node is gone, and the policy removes it.
    Remove,
    /// Bound: warn on the claim, once.
    WarnClaim(String),
}

/// What a volume of `phase` pinned to `node` needs, its node gone for `gone_for`
/// (`None`: the node exists).
pub fn decide(
    phase: &str,
    message: Option<&str>,
    node: &str,
    gone_for: Option<Duration>,
    grace: Duration,
    policy: GonePolicy,
) -> Decision {
    let Some(gone_for) = gone_for else {
        return Decision::Nothing;
    };
    if gone_for < grace {
        return Decision::Wait;
    }
    let failed_message = gone_message(node);
    match phase {
        "Released" => Decision::Fail(failed_message),
        "Failed" if policy == GonePolicy::RemoveVolumes && message == Some(&failed_message) => {
            Decision::Remove
        }
        "Bound" => Decision::WarnClaim(format!(
            "the volume's node {node} is gone (its Node object was deleted): \
             the data on it cannot be reached; restore it elsewhere and delete this claim"
        )),
        _ => Decision::Nothing,
    }
}

/// The node whose room a capacity object of this driver describes.
pub fn capacity_node(capacity: &CSIStorageCapacity) -> Option<&str> {
    let ours = capacity.labels().get(DRIVER_LABEL).map(String::as_str) == Some(DRIVER_NAME);
    let node = capacity
        .node_topology
        .as_ref()?
        .match_labels
        .as_ref()?
        .get(TOPOLOGY_NODE_KEY)?;
    ours.then_some(node.as_str())
}

fn gone_message(node: &str) -> String {
    format!("node {node} is gone (its Node object was deleted): the volume cannot be reclaimed")
}

/// The central instance's loop over the volumes of deleted Nodes.
pub struct GoneNodes {
    client: Client,
    grace: Duration,
    policy: GonePolicy,
    interval: Duration,
    events: EventRecorder,
    /// When each absent node was first seen absent.
    absent_since: HashMap<String, Instant>,
    /// Claims already warned (by uid), so each gets one event.
    warned: HashSet<String>,
}

impl GoneNodes {
    /// Acts on a node gone for `grace` by `policy`, looking every `interval`.
    pub fn new(client: Client, grace: Duration, policy: GonePolicy, interval: Duration) -> Self {
        Self {
            events: EventRecorder::new(client.clone()),
            client,
            grace,
            policy,
            interval,
            absent_since: HashMap::new(),
            warned: HashSet::new(),
        }
    }

    /// Looks every interval until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(error) = self.pass().await {
                tracing::warn!(%error, "volumes of gone nodes not checked");
            }
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = &mut shutdown => return,
            }
        }
    }

    async fn pass(&mut self) -> Result<(), kube::Error> {
        let nodes: HashSet<String> = Api::<Node>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        let volumes = Api::<PersistentVolume>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let pinned: Vec<(PersistentVolume, String)> = volumes
            .into_iter()
            .filter_map(|pv| pinned_node(&pv).map(|node| (pv, node)))
            .collect();
        let capacities = self.capacities().await;
        let referenced = pinned
            .iter()
            .map(|(_, node)| node.as_str())
            .chain(capacities.iter().filter_map(capacity_node));
        let now = Instant::now();
        self.note_absent(&nodes, referenced, now);
        for (pv, node) in &pinned {
            let gone_for = self.absent_since.get(node).map(|since| now - *since);
            let status = pv.status.as_ref();
            let decision = decide(
                status.and_then(|s| s.phase.as_deref()).unwrap_or_default(),
                status.and_then(|s| s.message.as_deref()),
                node,
                gone_for,
                self.grace,
                self.policy,
            );
            if let Err(error) = self.act(pv, decision).await {
                tracing::warn!(volume = %pv.name_any(), %error, "volume of a gone node");
            }
        }
        for capacity in &capacities {
            let gone_for = capacity_node(capacity)
                .and_then(|node| self.absent_since.get(node))
                .map(|since| now - *since);
            if gone_for.is_some_and(|gone_for| gone_for >= self.grace) {
                self.remove_capacity(capacity).await;
            }
        }
        Ok(())
    }

    /// Starts the clock of every referenced node that is absent; forgets those back.
    fn note_absent<'a>(
        &mut self,
        nodes: &HashSet<String>,
        referenced: impl Iterator<Item = &'a str>,
        now: Instant,
    ) {
        self.absent_since.retain(|node, _| !nodes.contains(node));
        for node in referenced {
            if !nodes.contains(node) {
                self.absent_since.entry(node.to_string()).or_insert(now);
            }
        }
    }

    /// This driver's capacity objects in every namespace; none when they cannot be
    /// listed (the volumes are still looked after).
    async fn capacities(&self) -> Vec<CSIStorageCapacity> {
        let selector = format!("{DRIVER_LABEL}={DRIVER_NAME}");
        match Api::<CSIStorageCapacity>::all(self.client.clone())
            .list(&ListParams::default().labels(&selector))
            .await
        {
            Ok(list) => list.items,
            Err(error) => {
                tracing::warn!(%error, "capacity objects of gone nodes not checked");
                Vec::new()
            }
        }
    }

    async fn remove_capacity(&self, capacity: &CSIStorageCapacity) {
        let (name, namespace) = (
            capacity.name_any(),
            capacity.namespace().unwrap_or_default(),
        );
        let api = Api::<CSIStorageCapacity>::namespaced(self.client.clone(), &namespace);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(capacity = %name, %namespace, "removed: its node is gone"),
            Err(error) => tracing::warn!(capacity = %name, %error, "capacity of a gone node"),
        }
    }

    async fn act(&mut self, pv: &PersistentVolume, decision: Decision) -> crate::Result<()> {
        let api = Api::<PersistentVolume>::all(self.client.clone());
        match decision {
            Decision::Nothing | Decision::Wait => {}
            Decision::Fail(message) => {
                set_phase(&api, pv, VolumePhase::Failed, Some(&message)).await?;
                self.events
                    .warning(&volume_reference(pv), NODE_GONE, &message)
                    .await;
                tracing::warn!(volume = %pv.name_any(), message, "failed");
            }
            Decision::Remove => {
                let name = pv.name_any();
                if !pv.finalizers().is_empty() {
                    let patch = json!({"metadata": {"finalizers": null}});
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                }
                api.delete(&name, &DeleteParams::default()).await?;
                tracing::warn!(volume = %name, "removed: its node is gone");
            }
            Decision::WarnClaim(message) => {
                let Some(claim) = self.claim_of(pv).await else {
                    return Ok(());
                };
                let uid = claim.uid().unwrap_or_default();
                if self.warned.insert(uid) {
                    self.events
                        .warning(&claim_reference(&claim), NODE_GONE, &message)
                        .await;
                }
            }
        }
        Ok(())
    }

    async fn claim_of(&self, pv: &PersistentVolume) -> Option<PersistentVolumeClaim> {
        let reference = pv.spec.as_ref()?.claim_ref.as_ref()?;
        Api::<PersistentVolumeClaim>::namespaced(
            self.client.clone(),
            reference.namespace.as_deref()?,
        )
        .get_opt(reference.name.as_deref()?)
        .await
        .ok()?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_of_a_gone_node_are_failed_removed_or_reported() {
        use GonePolicy::{Keep, RemoveVolumes};
        let grace = Duration::from_secs(60);
        let after = Some(Duration::from_secs(61));
        let failed = gone_message("n1");
        let cases = [
            (
                "the node exists",
                "Released",
                None,
                None,
                Keep,
                Decision::Nothing,
            ),
            (
                "gone, within the grace period",
                "Released",
                None,
                Some(Duration::from_secs(59)),
                Keep,
                Decision::Wait,
            ),
            (
                "gone for good, Released",
                "Released",
                None,
                after,
                Keep,
                Decision::Fail(failed.clone()),
            ),
            (
                "Failed, kept by default",
                "Failed",
                Some(failed.as_str()),
                after,
                Keep,
                Decision::Nothing,
            ),
            (
                "Failed by us, removed when opted in",
                "Failed",
                Some(failed.as_str()),
                after,
                RemoveVolumes,
                Decision::Remove,
            ),
            (
                "Failed for another reason is not ours to remove",
                "Failed",
                Some("recycle failed"),
                after,
                RemoveVolumes,
                Decision::Nothing,
            ),
            (
                "Available is left alone",
                "Available",
                None,
                after,
                RemoveVolumes,
                Decision::Nothing,
            ),
        ];
        for (what, phase, message, gone_for, policy, expected) in cases {
            assert_eq!(
                decide(phase, message, "n1", gone_for, grace, policy),
                expected,
                "{what}"
            );
        }
        assert!(matches!(
            decide("Bound", None, "n1", after, grace, Keep),
            Decision::WarnClaim(m) if m.contains("node n1 is gone")
        ));
    }

    #[test]
    fn a_capacity_object_names_its_node_only_when_it_is_this_drivers() {
        let capacity = |driver: Option<&str>, topology: Option<(&str, &str)>| {
            let labels = driver.map(|d| [(DRIVER_LABEL.to_string(), d.to_string())].into());
            let node_topology = topology.map(|(key, node)| {
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                    match_labels: Some([(key.to_string(), node.to_string())].into()),
                    ..Default::default()
                }
            });
            CSIStorageCapacity {
                metadata: kube::api::ObjectMeta {
                    labels,
                    ..Default::default()
                },
                node_topology,
                storage_class_name: "local".into(),
                ..Default::default()
            }
        };
        let cases = [
            (
                "ours, with a node",
                capacity(Some(DRIVER_NAME), Some((TOPOLOGY_NODE_KEY, "n1"))),
                Some("n1"),
            ),
            (
                "another driver's",
                capacity(Some("other.csi.io"), Some((TOPOLOGY_NODE_KEY, "n1"))),
                None,
            ),
            (
                "unlabelled",
                capacity(None, Some((TOPOLOGY_NODE_KEY, "n1"))),
                None,
            ),
            (
                "another topology key",
                capacity(Some(DRIVER_NAME), Some(("zone", "z1"))),
                None,
            ),
            ("no topology", capacity(Some(DRIVER_NAME), None), None),
        ];
        for (case, object, expected) in cases {
            assert_eq!(capacity_node(&object), expected, "{case}");
        }
    }
}
