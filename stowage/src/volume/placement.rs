//! The scheduler's part for a WaitForFirstConsumer claim on this machine: pre-bind
//! the smallest fitting static volume this node can reach, or else select this node
//! so that the provisioner makes one here.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, PersistentVolume, PersistentVolumeClaim,
};
use k8s_openapi::api::storage::v1::{CSIStorageCapacity, StorageClass};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use provisioner::binder::{Claim, Volume, VolumeIndex};
use provisioner::capacity;
use provisioner::events::{EventRecorder, claim_reference};
use serde_json::json;
use stowage_common::quantity::parse_bytes;

use super::error::{self, Error};

pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// What was done to get the claim bound.
#[derive(Debug)]
pub enum Placement {
    /// Nothing: the claim is bound, its node chosen, or its class binds at once.
    Nothing,
    PreBound(String),
    SelectedNode,
}

pub async fn place(
    client: &Client,
    claim: &PersistentVolumeClaim,
    node: &str,
) -> Result<Placement, Error> {
    let decided = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|v| !v.is_empty())
        || claim.annotations().contains_key(SELECTED_NODE);
    let class_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default();
    let class = match class_name.as_str() {
        "" => None,
        name => Some(
            Api::<StorageClass>::all(client.clone())
                .get(name)
                .await
                .map_err(error::api(format!("storage class {name}")))?,
        ),
    };
    let waits = class
        .as_ref()
        .and_then(|c| c.volume_binding_mode.as_deref())
        == Some("WaitForFirstConsumer");
    if decided || !waits {
        return Ok(Placement::Nothing);
    }
    let labels = node_labels(client, node).await?;
    if let Some(volume) = smallest_fitting(client, claim, node, &labels).await? {
        pre_bind(client, &volume, claim).await?;
        return Ok(Placement::PreBound(volume));
    }
    if class.as_ref().map(|c| c.provisioner.as_str()) != Some(driver_contract::DRIVER_NAME) {
        return Err(Error::NoPlace {
            node: node.to_string(),
            class: class_name,
        });
    }
    check_room(client, claim, &class_name, node).await?;
    let patch = json!({"metadata": {"annotations": {SELECTED_NODE: node}}});
    Api::<PersistentVolumeClaim>::namespaced(
        client.clone(),
        &claim.namespace().unwrap_or_default(),
    )
    .patch(
        &claim.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(error::api("select node for the claim"))?;
    Ok(Placement::SelectedNode)
}

/// Refuses a node whose published capacity for the class is smaller than the
/// claim, as the scheduler does, with a Warning event on the claim that says so,
/// rather than letting CreateVolume fail there.
async fn check_room(
    client: &Client,
    claim: &PersistentVolumeClaim,
    class: &str,
    node: &str,
) -> Result<(), Error> {
    let capacities = Api::<CSIStorageCapacity>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(error::api("list CSIStorageCapacity"))?;
    let request = claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref()?.requests.as_ref()?.get("storage"))
        .and_then(|q| parse_bytes(&q.0))
        .unwrap_or(0);
    let room = capacity::room::room(&capacities.items, class, node);
    let Some(why) = capacity::room::refusal(class, node, room, request) else {
        return Ok(());
    };
    EventRecorder::new(client.clone())
        .warning(
            &claim_reference(claim),
            capacity::room::NOT_ENOUGH_CAPACITY,
            &why.to_string(),
        )
        .await;
    Err(Error::NoRoom(why))
}

/// This node's labels, or its host-name label when the Node object is missing.
pub async fn node_labels(client: &Client, node: &str) -> Result<BTreeMap<String, String>, Error> {
    match Api::<Node>::all(client.clone()).get_opt(node).await {
        Ok(Some(object)) => Ok(object.labels().clone()),
        Ok(None) => Ok(BTreeMap::from([(
            "kubernetes.io/hostname".to_string(),
            node.to_string(),
        )])),
        Err(source) => Err(error::api(format!("node {node}"))(source)),
    }
}

/// The binder's own choice among the Available volumes whose affinity admits this node.
async fn smallest_fitting(
    client: &Client,
    claim: &PersistentVolumeClaim,
    node: &str,
    labels: &BTreeMap<String, String>,
) -> Result<Option<String>, Error> {
    let volumes = Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(error::api("list volumes"))?;
    let mut index = VolumeIndex::new();
    for pv in volumes.items.iter().filter(|pv| admits(pv, node, labels)) {
        index.upsert(Volume::from_api(pv));
    }
    Ok(index
        .find_match(&Claim::from_api(claim), false)
        .map(|volume| volume.name.clone()))
}

/// Sets the volume's claimRef, as the scheduler does; the binder completes the binding.
/// The resourceVersion makes it fail rather than overwrite a concurrent change.
async fn pre_bind(
    client: &Client,
    volume: &str,
    claim: &PersistentVolumeClaim,
) -> Result<(), Error> {
    let api = Api::<PersistentVolume>::all(client.clone());
    let current = api
        .get(volume)
        .await
        .map_err(error::api(format!("volume {volume}")))?;
    let patch = json!({
        "metadata": {"resourceVersion": current.resource_version()},
        "spec": {"claimRef": {
            "kind": "PersistentVolumeClaim",
            "apiVersion": "v1",
            "namespace": claim.namespace(),
            "name": claim.name_any(),
            "uid": claim.uid(),
        }},
    });
    api.patch(volume, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(error::api(format!("pre-bind volume {volume}")))
}

/// Does the volume's required node affinity admit this node?
pub fn admits(pv: &PersistentVolume, node: &str, labels: &BTreeMap<String, String>) -> bool {
    let Some(terms) = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .map(|r| &r.node_selector_terms)
    else {
        return true;
    };
    let fields = BTreeMap::from([("metadata.name".to_string(), node.to_string())]);
    terms.iter().any(|term| {
        let expressions = term.match_expressions.iter().flatten();
        let field_matches = term.match_fields.iter().flatten();
        expressions.clone().count() + field_matches.clone().count() > 0
            && expressions
                .into_iter()
                .all(|r| requirement_holds(r, labels))
            && field_matches
                .into_iter()
                .all(|r| requirement_holds(r, &fields))
    })
}

fn requirement_holds(req: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&req.key);
    let values = req.values.as_deref().unwrap_or_default();
    let number = |v: &str| v.parse::<i64>().ok();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => match (
            value.and_then(|v| number(v)),
            values.first().and_then(|v| number(v)),
        ) {
            (Some(have), Some(bound)) if req.operator == "Gt" => have > bound,
            (Some(have), Some(bound)) => have < bound,
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pinned(terms: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(json!({
            "metadata": {"name": "pv"},
            "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": terms}}},
        }))
        .expect("pv")
    }

    #[test]
    fn node_affinity_is_evaluated_as_the_scheduler_does() {
        let labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), "a".to_string()),
            ("zone".to_string(), "3".to_string()),
        ]);
        let expr = |key: &str, op: &str, values: &[&str]| json!([{"matchExpressions": [{"key": key, "operator": op, "values": values}]}]);
        let cases = [
            (expr("kubernetes.io/hostname", "In", &["a"]), true),
            (expr("kubernetes.io/hostname", "In", &["b"]), false),
            (expr("kubernetes.io/hostname", "NotIn", &["b"]), true),
            (expr("rack", "Exists", &[]), false),
            (expr("rack", "DoesNotExist", &[]), true),
            (expr("zone", "Gt", &["2"]), true),
            (expr("zone", "Lt", &["2"]), false),
            (
                json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]}]),
                true,
            ),
            // Terms are ORed; an empty term matches nothing.
            (
                json!([{}, {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["3"]}]}]),
                true,
            ),
            (json!([{}]), false),
        ];
        for (terms, want) in cases {
            assert_eq!(
                admits(&pinned(terms.clone()), "a", &labels),
                want,
                "{terms}"
            );
        }
        let unpinned: PersistentVolume = serde_json::from_value(json!({"spec": {}})).expect("pv");
        assert!(admits(&unpinned, "a", &labels));
    }
}
