//! What the binder needs to know of a PersistentVolume and a claim, read once from
//! the API objects so that matching is pure and cheap.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use stowage_common::quantity::Quantity;

/// Annotations upstream's PV controller reads and writes.
pub mod annotations {
    pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
    pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
    pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
    pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
    pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
    pub const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
    /// The class before `storageClassName` existed; upstream's class helpers still
    /// read it first, on volumes and on claims.
    pub const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
}

/// The access modes of a volume or claim as a set of bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct AccessModes(u8);

impl AccessModes {
    pub const RWO: Self = Self(1);
    pub const ROX: Self = Self(2);
    pub const RWX: Self = Self(4);
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

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn count(self) -> u32 {
        self.0.count_ones()
    }

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum VolumeMode {
    #[default]
    Filesystem,
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
    pub namespace: String,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReclaimPolicy {
    #[default]
    Retain,
    Delete,
    Recycle,
}

impl ReclaimPolicy {
    pub fn parse(policy: Option<&str>) -> Self {
        match policy {
            Some("Delete") => Self::Delete,
            Some("Recycle") => Self::Recycle,
            _ => Self::Retain,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClaimPhase {
    #[default]
    Pending,
    Bound,
    Lost,
}

impl ClaimPhase {
    pub fn parse(phase: Option<&str>) -> Self {
        match phase {
            Some("Bound") => Self::Bound,
            Some("Lost") => Self::Lost,
            _ => Self::Pending,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VolumePhase {
    #[default]
    Pending,
    Available,
    Bound,
    Released,
    Failed,
}

impl VolumePhase {
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
    pub name: String,
    pub class: String,
    pub mode: VolumeMode,
    pub access: AccessModes,
    /// None when the capacity is missing or malformed: such a volume matches nothing.
    pub capacity: Option<Quantity>,
    pub labels: BTreeMap<String, String>,
    pub claim_ref: Option<ClaimRef>,
    pub deleting: bool,
    pub phase: VolumePhase,
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
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The class it asks for; empty both for "no class" and for no class set.
    pub class: String,
    /// A class is set (possibly `""`): a default class is never written over it.
    pub has_class: bool,
    pub mode: VolumeMode,
    pub access: AccessModes,
    /// None when the request is missing or malformed: such a claim matches nothing.
    pub request: Option<Quantity>,
    pub selector: Option<Selector>,
    pub volume_name: String,
    pub phase: ClaimPhase,
    /// `pv.kubernetes.io/bind-completed`: the binder finished binding it once.
    pub bind_completed: bool,
    /// `volume.kubernetes.io/selected-node`: the scheduler's (or `stowage mount`'s) choice.
    pub selected_node: Option<String>,
}

impl Claim {
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

    pub fn key(&self) -> (String, String) {
        (self.namespace.clone(), self.name.clone())
    }
}
