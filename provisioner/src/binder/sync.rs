//! What to do about one claim or one volume, decided from current state alone
//! (level-triggered), following upstream's `syncClaim` and `syncVolume`.

use super::index::VolumeIndex;
use super::model::{Claim, ClaimPhase, ReclaimPolicy, Volume, VolumePhase};

/// How a claim's StorageClass asks for binding, when the class exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassInfo {
    pub wait_for_first_consumer: bool,
    pub provisioner: String,
}

/// Upstream's provisioner name for "static volumes only".
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// An event to record on the object, as upstream words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Event {
    fn normal(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason,
            message: message.into(),
        }
    }

    fn warning(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimAction {
    /// Write (or complete) the binding of the claim and this volume, both sides.
    Bind { volume: String },
    /// Leave the claim Pending, saying why when there is something to say.
    Pending(Option<Event>),
    /// No static volume fits and the class names a provisioner: provision one.
    Provision,
    /// The claim's volume is gone or belongs to another claim.
    Lost(Event),
}

/// Decides for one claim; `class` is its StorageClass if that exists.
pub fn sync_claim(claim: &Claim, class: Option<&ClassInfo>, volumes: &VolumeIndex) -> ClaimAction {
    if claim.bind_completed {
        sync_bound_claim(claim, volumes)
    } else {
        sync_unbound_claim(claim, class, volumes)
    }
}

fn sync_unbound_claim(
    claim: &Claim,
    class: Option<&ClassInfo>,
    volumes: &VolumeIndex,
) -> ClaimAction {
    if !claim.volume_name.is_empty() {
        return sync_prebound_claim(claim, volumes);
    }
    let delay_binding = class.is_some_and(|c| c.wait_for_first_consumer);
    if let Some(volume) = volumes.find_match(claim, delay_binding) {
        return ClaimAction::Bind {
            volume: volume.name.clone(),
        };
    }
    if delay_binding && claim.selected_node.is_none() {
        return ClaimAction::Pending(Some(Event::normal(
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding",
        )));
    }
    if claim.class.is_empty() {
        return ClaimAction::Pending(Some(Event::normal(
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set",
        )));
    }
    match class {
        None => ClaimAction::Pending(Some(Event::warning(
            "ProvisioningFailed",
            format!("storageclass.storage.k8s.io \"{}\" not found", claim.class),
        ))),
        Some(class) if class.provisioner == NO_PROVISIONER => {
            ClaimAction::Pending(Some(Event::normal(
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set",
            )))
        }
        Some(_) => ClaimAction::Provision,
    }
}

/// A claim that names its volume (`spec.volumeName`) before being bound.
fn sync_prebound_claim(claim: &Claim, volumes: &VolumeIndex) -> ClaimAction {
    let Some(volume) = volumes.get(&claim.volume_name) else {
        // Upstream waits quietly: the user may create the volume later.
        return ClaimAction::Pending(None);
    };
    match &volume.claim_ref {
        None => match mismatch(volume, claim) {
            None => ClaimAction::Bind {
                volume: volume.name.clone(),
            },
            Some(why) => ClaimAction::Pending(Some(Event::warning(
                "VolumeMismatch",
                format!("Cannot bind to requested volume {:?}: {why}", volume.name),
            ))),
        },
        Some(_) if volume.is_bound_to(claim) => ClaimAction::Bind {
            volume: volume.name.clone(),
        },
        Some(_) => ClaimAction::Pending(Some(Event::warning(
            "FailedBinding",
            format!(
                "volume {:?} already bound to a different claim.",
                volume.name
            ),
        ))),
    }
}

/// Why a volume named by a claim cannot serve it (upstream's checkVolumeSatisfyClaim).
fn mismatch(volume: &Volume, claim: &Claim) -> Option<String> {
    let big_enough = matches!((volume.capacity, claim.request), (Some(c), Some(r)) if c >= r);
    if !big_enough {
        return Some("requested PV is too small".into());
    }
    if volume.class != claim.class {
        return Some("storageClassName does not match".into());
    }
    if volume.mode != claim.mode {
        return Some("incompatible volumeMode".into());
    }
    if !volume.access.contains(claim.access) {
        return Some("incompatible accessMode".into());
    }
    if volume.deleting {
        return Some("the volume is being deleted".into());
    }
    None
}

fn sync_bound_claim(claim: &Claim, volumes: &VolumeIndex) -> ClaimAction {
    if claim.volume_name.is_empty() {
        return ClaimAction::Lost(Event::warning(
            "ClaimLost",
            "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
        ));
    }
    let Some(volume) = volumes.get(&claim.volume_name) else {
        return ClaimAction::Lost(Event::warning(
            "ClaimLost",
            "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
        ));
    };
    if volume.claim_ref.is_none() || volume.is_bound_to(claim) {
        return ClaimAction::Bind {
            volume: volume.name.clone(),
        };
    }
    ClaimAction::Lost(Event::warning(
        "ClaimMisbound",
        "Two claims are bound to the same volume, this one is bound incorrectly",
    ))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeAction {
    Nothing,
    SetPhase(VolumePhase),
    /// Undo a binding whose claim went elsewhere: clear the claimRef, or only its
    /// uid when a user pre-bound the volume.
    Unbind,
    /// The claim is gone: mark Released (unless already Released or Failed), then
    /// reclaim by policy.
    Reclaim(ReclaimPolicy),
}

/// Decides for one volume; `claim` is the claim its claimRef names, if that exists.
pub fn sync_volume(volume: &Volume, claim: Option<&Claim>) -> VolumeAction {
    let Some(claim_ref) = &volume.claim_ref else {
        return phase(volume, VolumePhase::Available);
    };
    if claim_ref.uid.is_empty() {
        // Pre-bound by a user to a claim that has not been bound yet.
        return phase(volume, VolumePhase::Available);
    }
    let Some(claim) = claim.filter(|c| c.uid == claim_ref.uid) else {
        return VolumeAction::Reclaim(volume.reclaim_policy);
    };
    if claim.volume_name.is_empty() {
        // Half-bound: the claim's sync completes it.
        return VolumeAction::Nothing;
    }
    if claim.volume_name == volume.name {
        return phase(volume, VolumePhase::Bound);
    }
    if volume.dynamically_provisioned && volume.reclaim_policy == ReclaimPolicy::Delete {
        return VolumeAction::Reclaim(ReclaimPolicy::Delete);
    }
    VolumeAction::Unbind
}

fn phase(volume: &Volume, wanted: VolumePhase) -> VolumeAction {
    if volume.phase == wanted {
        VolumeAction::Nothing
    } else {
        VolumeAction::SetPhase(wanted)
    }
}

/// The claim phase a claim action leads to.
pub fn claim_phase_after(action: &ClaimAction) -> ClaimPhase {
    match action {
        ClaimAction::Bind { .. } => ClaimPhase::Bound,
        ClaimAction::Lost(_) => ClaimPhase::Lost,
        ClaimAction::Pending(_) | ClaimAction::Provision => ClaimPhase::Pending,
    }
}
