//! Volumes of a node that is gone. A local volume lives on one node; when that
//! Node object is deleted for good (still absent after a grace period, so a node
//! that re-registers is not mistaken), nobody can reclaim it: a Released one goes
//! Failed with a message naming the node, and with the opt-in `RemoveVolumes`
//! policy its PV object is deleted (its finalizers dropped: DeleteVolume has no
//! node to run on); a Bound one is reported with a Warning event on its claim.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::binder::VolumePhase;
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

impl std::str::FromStr for GonePolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "keep" => Ok(Self::Keep),
            "remove-volumes" => Ok(Self::RemoveVolumes),
            other => Err(format!("{other:?} is not keep or remove-volumes")),
        }
    }
}

/// The reason of the events this module records.
pub const NODE_GONE: &str = "VolumeNodeGone";

/// One volume's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
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

fn gone_message(node: &str) -> String {
    format!("node {node} is gone (its Node object was deleted): the volume cannot be reclaimed")
}

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
        let now = Instant::now();
        let pinned: Vec<(PersistentVolume, String)> = volumes
            .into_iter()
            .filter_map(|pv| pinned_node(&pv).map(|node| (pv, node)))
            .collect();
        self.absent_since.retain(|node, _| !nodes.contains(node));
        for (_, node) in &pinned {
            if !nodes.contains(node) {
                self.absent_since.entry(node.clone()).or_insert(now);
            }
        }
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
        Ok(())
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
}
