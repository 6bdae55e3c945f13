//! Which instance makes a claim's volume, decided from the claim and its class alone.
//!
//! As upstream's external-provisioner, an instance acts on a claim only once the
//! binder (kube-controller-manager's PV controller, or Stowage's) has named this
//! driver in the claim's storage-provisioner annotation: the binder writes that
//! annotation on a new claim, so a provisioner that wrote the claim before it (a
//! node taking an Immediate claim) would race the binder for the same object,
//! and one of the two writes would be refused with a conflict.

use driver_contract::DRIVER_NAME;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;

use crate::Scope;
use crate::binder::model::annotations;

/// Where a claim's volume is made.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    Central,
    Node(String),
    /// An Immediate local claim no node has taken yet.
    AnyNode,
    /// A WaitForFirstConsumer claim without a selected node yet.
    NotYet,
}

/// What an instance is to do about a claim that needs a volume made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Duty {
    /// CreateVolume and the PersistentVolume, on this node when given.
    Provision(Option<String>),
    /// Write this node as the selected node of an Immediate local claim, then provision.
    Take(String),
}

/// The provisioner the binder named on the claim, read as upstream does: the GA
/// key when it is there, else the beta one.
pub(crate) fn named_provisioner(pvc: &PersistentVolumeClaim) -> Option<&str> {
    let annotations = pvc.metadata.annotations.as_ref()?;
    annotations
        .get(annotations::STORAGE_PROVISIONER)
        .or_else(|| annotations.get(annotations::BETA_STORAGE_PROVISIONER))
        .map(String::as_str)
}

/// What the instance of `scope` does about `pvc`, a claim of `class` (one of this
/// driver's) that needs a volume: nothing until the binder names this driver on it,
/// then the central instance makes NFS volumes, and a node instance local volumes
/// of claims that select it or, for an Immediate claim that selects no node, takes
/// it. `clone_source_node` is the node of a clone's local source volume, asked
/// only for an Immediate claim: only that node can fill it.
pub(crate) fn duty(
    scope: &Scope,
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    clone_source_node: impl FnOnce() -> Option<String>,
) -> Option<Duty> {
    if named_provisioner(pvc) != Some(DRIVER_NAME) {
        return None;
    }
    match (scope, owner(pvc, class)) {
        (Scope::Central, Owner::Central) => Some(Duty::Provision(None)),
        (Scope::Node(me), Owner::Node(node)) if *me == node => Some(Duty::Provision(Some(node))),
        (Scope::Node(me), Owner::AnyNode) if clone_source_node().is_none_or(|n| n == *me) => {
            Some(Duty::Take(me.clone()))
        }
        _ => None,
    }
}

fn owner(pvc: &PersistentVolumeClaim, class: &StorageClass) -> Owner {
    let kind = class
        .parameters
        .as_ref()
        .and_then(|p| p.get("type"))
        .map_or("local", String::as_str);
    if kind == "nfs" {
        return Owner::Central;
    }
    match pvc.annotations().get(annotations::SELECTED_NODE) {
        Some(node) => Owner::Node(node.clone()),
        None if class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer") => {
            Owner::NotYet
        }
        None => Owner::AnyNode,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn claim(annotations: Value) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "claim", "namespace": "ns", "uid": "uid-1",
                         "annotations": annotations},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "c",
                     "resources": {"requests": {"storage": "1Mi"}}},
        }))
        .unwrap_or_else(|e| panic!("claim: {e}"))
    }

    fn class(kind: &str, binding: &str) -> StorageClass {
        serde_json::from_value(json!({
            "metadata": {"name": "c"},
            "provisioner": DRIVER_NAME,
            "parameters": {"type": kind},
            "volumeBindingMode": binding,
        }))
        .unwrap_or_else(|e| panic!("class: {e}"))
    }

    const GA: &str = "volume.kubernetes.io/storage-provisioner";
    const BETA: &str = "volume.beta.kubernetes.io/storage-provisioner";
    const NODE: &str = "volume.kubernetes.io/selected-node";

    struct Case {
        name: &'static str,
        scope: Scope,
        annotations: Value,
        class: StorageClass,
        /// The node of a clone's local source volume.
        source_node: Option<&'static str>,
        expected: Option<Duty>,
    }

    fn cases() -> Vec<Case> {
        let n1 = || Scope::Node("n1".into());
        let take = || Some(Duty::Take("n1".into()));
        let immediate = || class("local", "Immediate");
        let waiting = || class("local", "WaitForFirstConsumer");
        let nfs = || class("nfs", "Immediate");
        let case = |name, scope, annotations, class, expected| Case {
            name,
            scope,
            annotations,
            class,
            source_node: None,
            expected,
        };
        vec![
            case(
                "an Immediate claim the binder has not named yet is not taken",
                n1(),
                json!({}),
                immediate(),
                None,
            ),
            case(
                "an Immediate claim naming this driver is taken",
                n1(),
                json!({GA: DRIVER_NAME, BETA: DRIVER_NAME}),
                immediate(),
                take(),
            ),
            case(
                "the beta key alone names the provisioner (older controllers)",
                n1(),
                json!({BETA: DRIVER_NAME}),
                immediate(),
                take(),
            ),
            case(
                "the GA key wins over the beta one",
                n1(),
                json!({GA: "other.example.com", BETA: DRIVER_NAME}),
                immediate(),
                None,
            ),
            case(
                "a claim of another provisioner is not taken",
                n1(),
                json!({GA: "other.example.com", BETA: "other.example.com"}),
                immediate(),
                None,
            ),
            case(
                "a claim selecting this node, not named yet, waits",
                n1(),
                json!({NODE: "n1"}),
                waiting(),
                None,
            ),
            case(
                "a claim selecting this node and naming this driver is provisioned here",
                n1(),
                json!({NODE: "n1", GA: DRIVER_NAME}),
                waiting(),
                Some(Duty::Provision(Some("n1".into()))),
            ),
            case(
                "a claim selecting another node is that node's",
                n1(),
                json!({NODE: "n2", GA: DRIVER_NAME}),
                immediate(),
                None,
            ),
            case(
                "a WaitForFirstConsumer claim without a node is nobody's yet",
                n1(),
                json!({GA: DRIVER_NAME}),
                waiting(),
                None,
            ),
            case(
                "the central instance leaves local claims to the nodes",
                Scope::Central,
                json!({GA: DRIVER_NAME}),
                immediate(),
                None,
            ),
            case(
                "an NFS claim not named yet waits, centrally too",
                Scope::Central,
                json!({}),
                nfs(),
                None,
            ),
            case(
                "an NFS claim naming this driver is the central instance's",
                Scope::Central,
                json!({GA: DRIVER_NAME}),
                nfs(),
                Some(Duty::Provision(None)),
            ),
            case(
                "a node leaves NFS claims to the central instance",
                n1(),
                json!({GA: DRIVER_NAME}),
                nfs(),
                None,
            ),
            Case {
                source_node: Some("n1"),
                ..case(
                    "a clone of a volume on this node is taken",
                    n1(),
                    json!({GA: DRIVER_NAME}),
                    immediate(),
                    take(),
                )
            },
            Case {
                source_node: Some("n2"),
                ..case(
                    "a clone of a volume on another node is left to it",
                    n1(),
                    json!({GA: DRIVER_NAME}),
                    immediate(),
                    None,
                )
            },
        ]
    }

    #[test]
    fn an_instance_acts_on_a_claim_only_once_the_binder_names_this_driver() {
        for case in cases() {
            let pvc = claim(case.annotations);
            let got = duty(&case.scope, &pvc, &case.class, || {
                case.source_node.map(String::from)
            });
            assert_eq!(got, case.expected, "{}", case.name);
        }
    }
}
