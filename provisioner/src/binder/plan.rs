//! One pass's decisions from the objects as the binder sees them, kept pure so that
//! the table tests (`tests.rs`) check what a whole pass writes, not only each rule.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt;

use super::VolumeIndex;
use super::model::{Claim, ClaimRef, Volume, VolumePhase};
use super::status::is_bound;
use super::sync::{ClaimAction, Classes, VolumeAction, sync_claim, sync_volume};
use super::written::is_later_version;

/// One decision of a pass, applied independently of the others.
#[derive(Debug)]
pub enum Step {
    Bind(Arc<PersistentVolume>, Arc<PersistentVolumeClaim>),
    Claim(Arc<PersistentVolumeClaim>, ClaimAction),
    Volume(Arc<PersistentVolume>, Volume, VolumeAction),
}

/// Decides for every volume, then for every claim (oldest first), and keeps the
/// volume decisions no binding overrides. A volume chosen for a claim is taken in
/// the index at once, so no two claims of one pass get the same volume.
///
/// A volume without a claimRef that the pass would make Available (a new one,
/// Pending) is a candidate for this pass's claims already: upstream's volume and claim workers
/// run apart, so its claim worker skips volumes not yet Available to avoid write
/// conflicts with the volume worker; here one plan makes both decisions, so the
/// claim binds in this pass (the volume going from Pending to Bound) instead of
/// being told FailedBinding, marked Pending and bound a pass later.
pub fn plan(
    volumes: Vec<Arc<PersistentVolume>>,
    mut claims: Vec<Arc<PersistentVolumeClaim>>,
    classes: &Classes,
) -> Vec<Step> {
    // Oldest first, as upstream's queue roughly does, and deterministic.
    claims.sort_by_key(|c| {
        (
            c.metadata.creation_timestamp.clone().map(|t| t.0),
            c.namespace(),
            c.name_any(),
        )
    });
    let by_claim: HashMap<(String, String), &Arc<PersistentVolumeClaim>> = claims
        .iter()
        .map(|c| ((c.namespace().unwrap_or_default(), c.name_any()), c))
        .collect();
    let volumes: BTreeMap<String, Arc<PersistentVolume>> =
        volumes.into_iter().map(|pv| (pv.name_any(), pv)).collect();
    let mut index = VolumeIndex::new();
    let mut volume_actions = Vec::new();
    for (name, pv) in &volumes {
        let volume = Volume::from_api(pv);
        let claim = volume
            .claim_ref
            .as_ref()
            .and_then(|r| by_claim.get(&(r.namespace.clone(), r.name.clone())))
            .map(|c| Claim::from_api(c));
        let action = sync_volume(&volume, claim.as_ref());
        tracing::trace!(volume = %name, ?action, "volume decided");
        let mut candidate = volume.clone();
        if action == VolumeAction::SetPhase(VolumePhase::Available) {
            candidate.phase = VolumePhase::Available;
        }
        index.upsert(candidate);
        volume_actions.push((name, pv, volume, action));
    }
    let mut steps = Vec::new();
    let mut touched = HashSet::new();
    for pvc in &claims {
        let claim = Claim::from_api(pvc);
        let action = sync_claim(&claim, classes, &index);
        tracing::trace!(claim = %claim.name, ?action, "claim decided");
        let ClaimAction::Bind { volume } = &action else {
            steps.push(Step::Claim(pvc.clone(), action));
            continue;
        };
        let Some(pv) = volumes.get(volume) else {
            continue;
        };
        if names_a_later_version_of(pv, pvc) {
            // Its provisioner wrote the claim before making the volume, and the claim's
            // watch is behind the volume's: bind when it catches up, as the claim
            // write now would only conflict. Its event starts that pass.
            touched.insert(volume.clone());
            continue;
        }
        if let Some(mut taken) = index.get(volume).cloned() {
            taken.claim_ref = Some(ClaimRef {
                namespace: claim.namespace.clone(),
                name: claim.name.clone(),
                uid: claim.uid.clone(),
            });
            index.upsert(taken);
        }
        touched.insert(volume.clone());
        if !is_bound(pv, pvc) {
            steps.push(Step::Bind(pv.clone(), pvc.clone()));
        }
    }
    for (name, pv, volume, action) in volume_actions {
        if action != VolumeAction::Nothing && !touched.contains(name) {
            steps.push(Step::Volume(pv.clone(), volume, action));
        }
    }
    steps
}

/// Whether the volume's claimRef names a later version of this claim than the one
/// in hand.
fn names_a_later_version_of(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    pv.spec
        .as_ref()
        .and_then(|spec| spec.claim_ref.as_ref())
        .is_some_and(|reference| {
            reference.uid == pvc.metadata.uid
                && is_later_version(
                    reference.resource_version.as_deref(),
                    pvc.metadata.resource_version.as_deref(),
                )
        })
}
