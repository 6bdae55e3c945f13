//! When kube-controller-manager's pvc-protection and pv-protection controllers let go
//! of a deleted object: pure decisions over the objects, one table row per rule.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Added to every claim at creation (StorageObjectInUseProtection admission).
pub const PVC_FINALIZER: &str = "kubernetes.io/pvc-protection";
/// Added to every volume at creation (the same admission).
pub const PV_FINALIZER: &str = "kubernetes.io/pv-protection";

fn deleting_with(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.deletion_timestamp.is_some()
        && meta
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == finalizer))
}

/// Whether the protection of `claim` is to be checked: it is deleted and still held.
pub fn claim_held(claim: &PersistentVolumeClaim) -> bool {
    deleting_with(&claim.metadata, PVC_FINALIZER)
}

/// The claims `pod` uses, as upstream counts them: none once the Pod has finished
/// (phase Succeeded or Failed); else every claim it names in a volume, directly or as
/// the claim of a generic ephemeral volume (`<pod>-<volume>`). All are in its namespace.
fn claims_of(pod: &Pod) -> impl Iterator<Item = String> + '_ {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let finished = matches!(phase, Some("Succeeded" | "Failed"));
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    pod.spec
        .iter()
        .filter(move |_| !finished)
        .flat_map(|spec| spec.volumes.iter().flatten())
        .filter_map(
            move |volume| match (&volume.persistent_volume_claim, &volume.ephemeral) {
                (Some(claim), _) => Some(claim.claim_name.clone()),
                (None, Some(_)) => Some(format!("{pod_name}-{}", volume.name)),
                (None, None) => None,
            },
        )
}

/// Which claims some unfinished Pod uses, by namespace and name: built once from a
/// Pod list, so that each held claim is one lookup, not a walk over every Pod.
#[derive(Debug, Default)]
pub struct ClaimUsers(HashSet<(String, String)>);

impl ClaimUsers {
    pub fn new<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Self {
        let mut used = HashSet::new();
        for pod in pods {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            for claim in claims_of(pod) {
                used.insert((namespace.clone(), claim));
            }
        }
        Self(used)
    }

    /// Whether a Pod of the claim's namespace uses it.
    pub fn in_use(&self, claim: &PersistentVolumeClaim) -> bool {
        let meta = &claim.metadata;
        let key = (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        self.0.contains(&key)
    }
}

/// Whether a held claim may let go: no Pod uses it.
pub fn claim_releasable(claim: &PersistentVolumeClaim, users: &ClaimUsers) -> bool {
    claim_held(claim) && !users.in_use(claim)
}

/// Whether a deleted, held volume may let go: it is not Bound (upstream's pv-protection
/// counts a Bound volume as in use; the binder marks it Released once its claim is gone).
pub fn volume_releasable(volume: &PersistentVolume) -> bool {
    let phase = volume.status.as_ref().and_then(|s| s.phase.as_deref());
    deleting_with(&volume.metadata, PV_FINALIZER) && phase != Some("Bound")
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const DELETED: &str = "2024-01-01T00:00:00Z";

    fn object<T: serde::de::DeserializeOwned>(value: Value) -> T {
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    fn claim(deleted: bool, finalizer: bool) -> PersistentVolumeClaim {
        object(json!({"metadata": {
            "name": "data", "namespace": "ns",
            "deletionTimestamp": deleted.then_some(DELETED),
            "finalizers": if finalizer { vec![PVC_FINALIZER] } else { vec![] },
        }}))
    }

    fn pod(namespace: &str, phase: &str, volume: Value) -> Pod {
        object(json!({
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"containers": [], "volumes": [volume]},
            "status": {"phase": phase},
        }))
    }

    fn uses_data() -> Value {
        json!({"name": "v", "persistentVolumeClaim": {"claimName": "data"}})
    }

    #[test]
    fn a_deleted_claim_is_held_while_a_pod_uses_it() {
        let ephemeral = json!({"name": "data", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}});
        let cases: Vec<(&str, PersistentVolumeClaim, Vec<Pod>, bool)> = vec![
            ("unused: released", claim(true, true), vec![], false),
            (
                "a running pod uses it: held",
                claim(true, true),
                vec![pod("ns", "Running", uses_data())],
                true,
            ),
            (
                "a pending pod counts too",
                claim(true, true),
                vec![pod("ns", "Pending", uses_data())],
                true,
            ),
            (
                "a finished pod does not",
                claim(true, true),
                vec![
                    pod("ns", "Succeeded", uses_data()),
                    pod("ns", "Failed", uses_data()),
                ],
                false,
            ),
            (
                "a pod of another namespace does not",
                claim(true, true),
                vec![pod("other", "Running", uses_data())],
                false,
            ),
            (
                "a pod naming another claim does not",
                claim(true, true),
                vec![pod(
                    "ns",
                    "Running",
                    json!({"name": "v", "persistentVolumeClaim": {"claimName": "logs"}}),
                )],
                false,
            ),
            (
                "the claim of a generic ephemeral volume (<pod>-<volume>) is the pod's",
                object(json!({"metadata": {"name": "web-data", "namespace": "ns",
                    "deletionTimestamp": DELETED, "finalizers": [PVC_FINALIZER]}})),
                vec![pod("ns", "Running", ephemeral)],
                true,
            ),
        ];
        for (what, claim, pods, held) in cases {
            assert!(claim_held(&claim), "{what}");
            assert_eq!(
                claim_releasable(&claim, &ClaimUsers::new(&pods)),
                !held,
                "{what}"
            );
        }
        for (what, claim) in [
            ("not deleted", claim(false, true)),
            ("already released", claim(true, false)),
        ] {
            assert!(!claim_held(&claim), "{what}");
            assert!(!claim_releasable(&claim, &ClaimUsers::default()), "{what}");
        }
    }

    #[test]
    fn the_index_holds_every_claim_an_unfinished_pod_uses() {
        let two_volumes: Pod = object(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"containers": [], "volumes": [
                uses_data(),
                {"name": "cache", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                {"name": "config", "configMap": {"name": "settings"}},
            ]},
            "status": {"phase": "Running"},
        }));
        let pods = vec![
            two_volumes,
            pod("other", "Pending", uses_data()),
            pod(
                "ns",
                "Succeeded",
                json!({"name": "v", "persistentVolumeClaim": {"claimName": "done"}}),
            ),
        ];
        let users = ClaimUsers::new(&pods);
        let named = |namespace: &str, name: &str| -> PersistentVolumeClaim {
            object(json!({"metadata": {"name": name, "namespace": namespace}}))
        };
        for (what, claim, used) in [
            ("a claim named in a volume", named("ns", "data"), true),
            (
                "a generic ephemeral volume's claim",
                named("ns", "web-cache"),
                true,
            ),
            (
                "the same name in another pod's namespace",
                named("other", "data"),
                true,
            ),
            (
                "a namespace no pod uses it in",
                named("third", "data"),
                false,
            ),
            ("a finished pod's claim", named("ns", "done"), false),
            (
                "a volume that is no claim",
                named("ns", "web-config"),
                false,
            ),
        ] {
            assert_eq!(users.in_use(&claim), used, "{what}");
        }
    }

    #[test]
    fn a_deleted_volume_is_held_while_bound() {
        let volume = |deleted: bool, finalizer: bool, phase: &str| -> PersistentVolume {
            object(json!({
                "metadata": {"name": "pv", "deletionTimestamp": deleted.then_some(DELETED),
                             "finalizers": if finalizer { vec![PV_FINALIZER] } else { vec![] }},
                "status": {"phase": phase},
            }))
        };
        for (what, pv, releasable) in [
            ("bound: held", volume(true, true, "Bound"), false),
            ("released: let go", volume(true, true, "Released"), true),
            ("available: let go", volume(true, true, "Available"), true),
            ("failed: let go", volume(true, true, "Failed"), true),
            (
                "not deleted: nothing to do",
                volume(false, true, "Released"),
                false,
            ),
            ("already let go", volume(true, false, "Released"), false),
        ] {
            assert_eq!(volume_releasable(&pv), releasable, "{what}");
        }
    }
}
