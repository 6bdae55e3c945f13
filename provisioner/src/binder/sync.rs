//! What to do about one claim or one volume, decided from current state alone
//! (level-triggered), following upstream's `syncClaim` and `syncVolume`.

use std::collections::HashMap;

use k8s_openapi::api::storage::v1::StorageClass;

use super::index::VolumeIndex;
use super::model::{Claim, ReclaimPolicy, Volume, VolumePhase};

/// How a claim's StorageClass asks for binding, when the class exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassInfo {
    pub wait_for_first_consumer: bool,
    pub provisioner: String,
}

/// The annotations that make a StorageClass the default, as upstream reads them.
const DEFAULT_CLASS_ANNOTATIONS: [&str; 2] = [
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];

/// The StorageClasses that exist, and which one is the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classes {
    pub by_name: HashMap<String, ClassInfo>,
    /// The class a claim without one is given (upstream's `GetDefaultClass`).
    pub default: Option<String>,
}

impl Classes {
    pub fn from_api<'a>(classes: impl IntoIterator<Item = &'a StorageClass>) -> Self {
        let mut book = Self::default();
        // Upstream: the newest default wins; equal timestamps, the first name.
        let mut best: Option<(Option<jiff::Timestamp>, String)> = None;
        for class in classes {
            let name = class.metadata.name.clone().unwrap_or_default();
            let is_default = DEFAULT_CLASS_ANNOTATIONS.iter().any(|key| {
                class
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(*key))
                    .is_some_and(|v| v == "true")
            });
            if is_default {
                let created = class.metadata.creation_timestamp.as_ref().map(|t| t.0);
                let newer = best.as_ref().is_none_or(|(time, best_name)| {
                    created > *time || (created == *time && name < *best_name)
                });
                if newer {
                    best = Some((created, name.clone()));
                }
            }
            let info = ClassInfo {
                wait_for_first_consumer: class.volume_binding_mode.as_deref()
                    == Some("WaitForFirstConsumer"),
                provisioner: class.provisioner.clone(),
            };
            book.by_name.insert(name, info);
        }
        book.default = best.map(|(_, name)| name);
        book
    }

    pub fn get(&self, name: &str) -> Option<&ClassInfo> {
        self.by_name.get(name)
    }
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
    pub fn normal(reason: &'static str, message: impl Into<String>) -> Self {
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
    /// Nothing matched a claim created without a class while no default existed:
    /// write the default class that exists now (upstream's retroactive default).
    AssignClass(String),
}

/// Decides for one claim, given the classes that exist.
pub fn sync_claim(claim: &Claim, classes: &Classes, volumes: &VolumeIndex) -> ClaimAction {
    if claim.bind_completed {
        sync_bound_claim(claim, volumes)
    } else {
        sync_unbound_claim(claim, classes, volumes)
    }
}

fn sync_unbound_claim(claim: &Claim, classes: &Classes, volumes: &VolumeIndex) -> ClaimAction {
    if !claim.volume_name.is_empty() {
        return sync_prebound_claim(claim, volumes);
    }
    let class = classes.get(&claim.class);
    let delay_binding = class.is_some_and(|c| c.wait_for_first_consumer);
    if let Some(volume) = volumes.find_match(claim, delay_binding) {
        return ClaimAction::Bind {
            volume: volume.name.clone(),
        };
    }
    if !claim.has_class
        && let Some(default) = &classes.default
    {
        return ClaimAction::AssignClass(default.clone());
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
        // Upstream looks for an in-tree plugin of that name and finds none.
        Some(class) if class.provisioner == NO_PROVISIONER => {
            ClaimAction::Pending(Some(Event::warning(
                "ProvisioningFailed",
                format!("no volume plugin matched name: {NO_PROVISIONER}"),
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
    if volume.deleting {
        return Some(format!(
            "the volume is marked for deletion {:?}",
            volume.name
        ));
    }
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
