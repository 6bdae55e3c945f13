//! What the binder needs to know of a PersistentVolume and a claim, read once from
//! the API objects so that matching is pure and cheap.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use stowage_common::quantity::Quantity;

/// Annotations upstream's PV controller reads and writes.
pub mod annotations {
    /// On a claim the binder has finished binding once.
    pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
    /// On a side of a binding the controller wrote (not a user's pre-binding).
    pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
    /// On a volume a provisioner made: which one.
    pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
    /// On a claim: the node the scheduler (or `stowage mount`) chose.
    pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
    /// On a claim: the provisioner asked to make its volume.
    pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
    /// The beta name of [`STORAGE_PROVISIONER`], still written beside it.
    pub const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
    /// The class before `storageClassName` existed; upstream's class helpers still
    /// read it first, on volumes and on claims.
    pub const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
}

/// The access modes of a volume or claim as a set of bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct AccessModes(u8);

impl AccessModes {
    /// ReadWriteOnce.
    pub const RWO: Self = Self(1);
    /// ReadOnlyMany.
    pub const ROX: Self = Self(2);
    /// ReadWriteMany.
    pub const RWX: Self = Self(4);
    /// ReadWriteOncePod.
    pub const RWOP: Self = Self(8);
    const ALL_BITS: u8 = 0b1111;

    /// Unknown mode names are ignored, as upstream's index ignores them.
    pub fn parse<'a>(modes: impl IntoIterator<Item = &'a str>) -> Self {
        Self(modes.into_iter().fold(0, |bits, mode| {
            bits | match mode {
                "ReadWriteOnce" => 1,
                "ReadOnlyMany" => 2,
                "ReadWriteMany" => 4,
                "ReadWriteOncePod" => 8,
                _ => 0,
            }
        }))
    }

    /// Whether every mode of `other` is in `self`.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// How many modes the set holds.
    pub fn count(self) -> u32 {
        self.0.count_ones()
    }

    /// Whether the set holds no mode.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Every mode set that contains `self`, fewest modes first: the order in which
    /// upstream tries its access-mode groups.
    pub fn supersets(self) -> Vec<Self> {
        let mut sets: Vec<Self> = (1..=Self::ALL_BITS)
            .map(Self)
            .filter(|set| set.contains(self))
            .collect();
        sets.sort_by_key(|set| (set.count(), set.0));
        sets
    }

    /// The modes' API names, in upstream's order.
    pub fn names(self) -> Vec<&'static str> {
        [
            (Self::RWO, "ReadWriteOnce"),
            (Self::ROX, "ReadOnlyMany"),
            (Self::RWX, "ReadWriteMany"),
            (Self::RWOP, "ReadWriteOncePod"),
        ]
        .into_iter()
        .filter(|(mode, _)| self.contains(*mode))
        .map(|(_, name)| name)
        .collect()
    }
}

/// A volume's or claim's `volumeMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum VolumeMode {
    /// A mounted filesystem (the default).
    #[default]
    Filesystem,
    /// A raw block device.
    Block,
}

impl VolumeMode {
    /// Unset means Filesystem, as upstream defaults it.
    pub fn parse(mode: Option<&str>) -> Self {
        match mode {
            Some("Block") => Self::Block,
            _ => Self::Filesystem,
        }
    }
}

/// A claim reference on a volume: who it is bound or pre-bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRef {
    /// The claim's namespace.
    pub namespace: String,
    /// The claim's name.
    pub name: String,
    /// Empty when a user pre-bound the volume to a claim by name only.
    pub uid: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A claim's label selector; an unknown operator matches nothing, as upstream
/// fails to convert such a selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
    invalid: bool,
}

impl Selector {
    /// The selector of the API's LabelSelector.
    pub fn from_api(selector: &LabelSelector) -> Self {
        let mut requirements: Vec<Requirement> = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::In(k.clone(), vec![v.clone()]))
            .collect();
        let mut invalid = false;
        for expression in selector.match_expressions.iter().flatten() {
            let key = expression.key.clone();
            let values = expression.values.clone().unwrap_or_default();
            requirements.push(match expression.operator.as_str() {
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                _ => {
                    invalid = true;
                    continue;
                }
            });
        }
        Self {
            requirements,
            invalid,
        }
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.invalid
            && self
                .requirements
                .iter()
                .all(|requirement| match requirement {
                    Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
                    Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
                    Requirement::Exists(k) => labels.contains_key(k),
                    Requirement::DoesNotExist(k) => !labels.contains_key(k),
                })
    }
}

/// What happens to a volume once its claim is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReclaimPolicy {
    /// Kept with its data, Released, until an administrator acts (the default).
    #[default]
    Retain,
    /// Deleted with its data.
    Delete,
    /// Emptied and made Available again.
    Recycle,
}

impl ReclaimPolicy {
    /// Unset or unknown means Retain, as upstream defaults it.
    pub fn parse(policy: Option<&str>) -> Self {
        match policy {
            Some("Delete") => Self::Delete,
            Some("Recycle") => Self::Recycle,
            _ => Self::Retain,
        }
    }
}

/// A claim's `status.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClaimPhase {
    /// Not bound yet (also unset or unknown).
    #[default]
    Pending,
    /// Bound to its volume.
    Bound,
    /// Its volume is gone.
    Lost,
}

impl ClaimPhase {
    /// Unset or unknown means Pending.
    pub fn parse(phase: Option<&str>) -> Self {
        match phase {
            Some("Bound") => Self::Bound,
            Some("Lost") => Self::Lost,
            _ => Self::Pending,
        }
    }
}

/// A volume's `status.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VolumePhase {
    /// Not yet available (also unset or unknown).
    #[default]
    Pending,
    /// Free to bind.
    Available,
    /// Bound to a claim.
    Bound,
    /// Its claim is gone; not reclaimed yet.
    Released,
    /// Reclaiming it failed.
    Failed,
}

impl VolumePhase {
    /// Unset or unknown means Pending.
    pub fn parse(phase: Option<&str>) -> Self {
        match phase {
            Some("Available") => Self::Available,
            Some("Bound") => Self::Bound,
            Some("Released") => Self::Released,
            Some("Failed") => Self::Failed,
            _ => Self::Pending,
        }
    }
}

/// The binder's view of a PersistentVolume.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    /// The volume's name.
    pub name: String,
    /// Its class (see [`volume_class`]); empty for none.
    pub class: String,
    /// Its volume mode.
    pub mode: VolumeMode,
    /// Its access modes.
    pub access: AccessModes,
    /// None when the capacity is missing or malformed: such a volume matches nothing.
    pub capacity: Option<Quantity>,
    /// Its labels, for claims' selectors.
    pub labels: BTreeMap<String, String>,
    /// The claim it is bound or pre-bound to.
    pub claim_ref: Option<ClaimRef>,
    /// It has a deletion timestamp.
    pub deleting: bool,
    /// Its phase.
    pub phase: VolumePhase,
    /// Its reclaim policy.
    pub reclaim_policy: ReclaimPolicy,
    /// The binder set the claimRef (rather than a user pre-binding it).
    pub bound_by_controller: bool,
    /// Made by a provisioner for a claim (`pv.kubernetes.io/provisioned-by`).
    pub dynamically_provisioned: bool,
}

fn has_annotation(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(key))
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a String> {
    meta.annotations.as_ref().and_then(|a| a.get(key))
}

/// A volume's class as upstream's `GetPersistentVolumeClass` reads it: the beta
/// annotation first, then `spec.storageClassName`.
pub fn volume_class(pv: &PersistentVolume) -> String {
    annotation(&pv.metadata, annotations::BETA_STORAGE_CLASS)
        .cloned()
        .or_else(|| pv.spec.as_ref()?.storage_class_name.clone())
        .unwrap_or_default()
}

/// A claim's class as upstream's `GetPersistentVolumeClaimClass` reads it: the beta
/// annotation first, then `spec.storageClassName`; `None` when neither is set
/// (which is not the same as `""`, a claim that asks for no class).
pub fn claim_class(pvc: &PersistentVolumeClaim) -> Option<String> {
    annotation(&pvc.metadata, annotations::BETA_STORAGE_CLASS)
        .cloned()
        .or_else(|| pvc.spec.as_ref()?.storage_class_name.clone())
}

impl Volume {
    /// The binder's view of `pv`.
    pub fn from_api(pv: &PersistentVolume) -> Self {
        let spec = pv.spec.clone().unwrap_or_default();
        let capacity = spec
            .capacity
            .as_ref()
            .and_then(|c| c.get("storage"))
            .and_then(|q| Quantity::parse(&q.0).ok());
        let claim_ref = spec.claim_ref.as_ref().map(|r| ClaimRef {
            namespace: r.namespace.clone().unwrap_or_default(),
            name: r.name.clone().unwrap_or_default(),
            uid: r.uid.clone().unwrap_or_default(),
        });
        Self {
            name: pv.metadata.name.clone().unwrap_or_default(),
            class: volume_class(pv),
            mode: VolumeMode::parse(spec.volume_mode.as_deref()),
            access: AccessModes::parse(spec.access_modes.iter().flatten().map(String::as_str)),
            capacity,
            labels: pv.metadata.labels.clone().unwrap_or_default(),
            claim_ref,
            deleting: pv.metadata.deletion_timestamp.is_some(),
            phase: VolumePhase::parse(pv.status.as_ref().and_then(|s| s.phase.as_deref())),
            reclaim_policy: ReclaimPolicy::parse(spec.persistent_volume_reclaim_policy.as_deref()),
            bound_by_controller: has_annotation(&pv.metadata, annotations::BOUND_BY_CONTROLLER),
            dynamically_provisioned: has_annotation(&pv.metadata, annotations::PROVISIONED_BY),
        }
    }

    /// Pre-bound or bound to this claim: same name and namespace, and the same uid if it has one.
    pub fn is_bound_to(&self, claim: &Claim) -> bool {
        self.claim_ref.as_ref().is_some_and(|r| {
            r.name == claim.name
                && r.namespace == claim.namespace
                && (r.uid.is_empty() || r.uid == claim.uid)
        })
    }
}

/// The binder's view of a PersistentVolumeClaim.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The claim's namespace.
    pub namespace: String,
    /// The claim's name.
    pub name: String,
    /// The claim's uid.
    pub uid: String,
    /// The class it asks for; empty both for "no class" and for no class set.
    pub class: String,
    /// A class is set (possibly `""`): a default class is never written over it.
    pub has_class: bool,
    /// The volume mode it asks for.
    pub mode: VolumeMode,
    /// The access modes it asks for.
    pub access: AccessModes,
    /// None when the request is missing or malformed: such a claim matches nothing.
    pub request: Option<Quantity>,
    /// The labels a volume must have, if any.
    pub selector: Option<Selector>,
    /// The volume it names (`spec.volumeName`); empty for none.
    pub volume_name: String,
    /// Its phase.
    pub phase: ClaimPhase,
    /// `pv.kubernetes.io/bind-completed`: the binder finished binding it once.
    pub bind_completed: bool,
    /// `volume.kubernetes.io/selected-node`: the scheduler's (or `stowage mount`'s) choice.
    pub selected_node: Option<String>,
}

impl Claim {
    /// The binder's view of `pvc`.
    pub fn from_api(pvc: &PersistentVolumeClaim) -> Self {
        let spec = pvc.spec.clone().unwrap_or_default();
        let request = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .and_then(|q| Quantity::parse(&q.0).ok());
        let class = claim_class(pvc);
        Self {
            namespace: pvc.metadata.namespace.clone().unwrap_or_default(),
            name: pvc.metadata.name.clone().unwrap_or_default(),
            uid: pvc.metadata.uid.clone().unwrap_or_default(),
            class: class.clone().unwrap_or_default(),
            has_class: class.is_some(),
            mode: VolumeMode::parse(spec.volume_mode.as_deref()),
            access: AccessModes::parse(spec.access_modes.iter().flatten().map(String::as_str)),
            request,
            selector: spec.selector.as_ref().map(Selector::from_api),
            volume_name: spec.volume_name.clone().unwrap_or_default(),
            phase: ClaimPhase::parse(pvc.status.as_ref().and_then(|s| s.phase.as_deref())),
            bind_completed: has_annotation(&pvc.metadata, annotations::BIND_COMPLETED),
            selected_node: annotation(&pvc.metadata, annotations::SELECTED_NODE).cloned(),
        }
    }

    /// (namespace, name): how volumes' claim references name it.
    pub fn key(&self) -> (String, String) {
        (self.namespace.clone(), self.name.clone())
    }
}
