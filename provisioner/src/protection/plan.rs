//! When kube-controller-manager's pvc-protection and pv-protection controllers let go
//! of a deleted object: pure decisions over the objects, one table row per rule.

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

/// Whether `pod` uses `claim`, as upstream counts it: a Pod of its namespace that has
/// not finished (phase Succeeded or Failed) names it in a volume, directly or as the
/// claim of a generic ephemeral volume (`<pod>-<volume>`).
pub fn pod_uses(pod: &Pod, claim: &PersistentVolumeClaim) -> bool {
    if pod.metadata.namespace != claim.metadata.namespace {
        return false;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    let claim_name = claim.metadata.name.as_deref().unwrap_or_default();
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
        .any(|volume| {
            let direct = volume
                .persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.claim_name == claim_name);
            let ephemeral =
                volume.ephemeral.is_some() && format!("{pod_name}-{}", volume.name) == claim_name;
            direct || ephemeral
        })
}

/// Whether a held claim may let go: no Pod uses it.
pub fn claim_releasable(claim: &PersistentVolumeClaim, pods: &[Pod]) -> bool {
    claim_held(claim) && !pods.iter().any(|pod| pod_uses(pod, claim))
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
            assert_eq!(claim_releasable(&claim, &pods), !held, "{what}");
        }
        for (what, claim) in [
            ("not deleted", claim(false, true)),
            ("already released", claim(true, false)),
        ] {
            assert!(!claim_held(&claim), "{what}");
            assert!(!claim_releasable(&claim, &[]), "{what}");
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
