//! What a claim's status should say, as upstream's `updateClaimStatus` writes it.

use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus,
};
use kube::ResourceExt;

/// The status of a claim bound to `pv`, if it differs from the current one: the
/// access modes follow the volume's on every sync; the capacity is written only
/// when the claim becomes Bound, after which it is the resizer's to change.
pub fn bound_status(
    pvc: &PersistentVolumeClaim,
    pv: &PersistentVolume,
) -> Option<PersistentVolumeClaimStatus> {
    let volume = pv.spec.clone().unwrap_or_default();
    let current = pvc.status.clone().unwrap_or_default();
    let becoming_bound = current.phase.as_deref() != Some("Bound");
    if !becoming_bound && current.access_modes == volume.access_modes {
        return None;
    }
    Some(PersistentVolumeClaimStatus {
        phase: Some("Bound".into()),
        access_modes: volume.access_modes,
        capacity: if becoming_bound {
            volume.capacity
        } else {
            current.capacity.clone()
        },
        ..current
    })
}

/// Whether the volume's claimRef names this very claim (name, namespace and uid).
pub fn points_at(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    pv.spec
        .as_ref()
        .and_then(|spec| spec.claim_ref.as_ref())
        .is_some_and(|r| {
            r.name == pvc.metadata.name
                && r.namespace == pvc.metadata.namespace
                && r.uid == pvc.metadata.uid
        })
}

/// Whether the claim names the volume and says its binding was completed.
pub fn names(pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let named =
        pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == pv.metadata.name.as_deref();
    named
        && pvc
            .annotations()
            .contains_key(super::model::annotations::BIND_COMPLETED)
}

/// Whether every write of binding the pair is true already, so that a pass has
/// nothing to write for it.
pub fn is_bound(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let volume_bound = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    points_at(pv, pvc) && volume_bound && names(pvc, pv) && bound_status(pvc, pv).is_none()
}

/// The status of a claim that is not bound (Pending or Lost), if it differs from
/// the current one: with no volume, upstream clears the access modes and capacity.
pub fn unbound_status(
    pvc: &PersistentVolumeClaim,
    phase: &str,
) -> Option<PersistentVolumeClaimStatus> {
    let current = pvc.status.clone().unwrap_or_default();
    let stale = current.phase.as_deref() != Some(phase)
        || current.access_modes.as_ref().is_some_and(|m| !m.is_empty())
        || current.capacity.as_ref().is_some_and(|c| !c.is_empty());
    stale.then(|| PersistentVolumeClaimStatus {
        phase: Some(phase.into()),
        access_modes: None,
        capacity: None,
        ..current
    })
}

/// The claim's annotations naming `provisioner` as the one to make its volume, as
/// kube-controller-manager's `setClaimProvisioner` writes them (the GA key and the
/// beta one the older sidecars read), if they do not say so yet.
pub fn provisioner_annotations(
    pvc: &PersistentVolumeClaim,
    provisioner: &str,
) -> Option<std::collections::BTreeMap<String, String>> {
    let mut annotations = pvc.metadata.annotations.clone().unwrap_or_default();
    let keys = [
        super::model::annotations::STORAGE_PROVISIONER,
        super::model::annotations::BETA_STORAGE_PROVISIONER,
    ];
    let stale = keys
        .iter()
        .any(|key| annotations.get(*key).map(String::as_str) != Some(provisioner));
    stale.then(|| {
        for key in keys {
            annotations.insert(key.to_string(), provisioner.to_string());
        }
        annotations
    })
}
