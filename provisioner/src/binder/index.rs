//! The index of volumes that makes one match O(log n).
//!
//! Upstream (kube-controller-manager's PV controller) lists every volume of each
//! access-mode group and scans it per claim. Here the volumes a claim could take
//! are kept per (class, volume mode, exact access-mode set) in a B-tree ordered by
//! capacity then name, so the smallest sufficient one is a range lookup; volumes
//! that name a claim in their claimRef are kept per claim. The choice is the same
//! as upstream's, with ties (equal capacity) broken by name.

use std::collections::{BTreeSet, HashMap};

use stowage_common::quantity::Quantity;

use super::model::{AccessModes, Claim, Volume, VolumeMode, VolumePhase};

type Bucket = BTreeSet<(Quantity, String)>;

/// The volumes by name, indexed for matching claims.
#[derive(Debug, Default)]
pub struct VolumeIndex {
    volumes: HashMap<String, Volume>,
    /// Available, unclaimed, not deleted volumes: class -> (mode, modes) -> by size.
    available: HashMap<String, HashMap<(VolumeMode, AccessModes), Bucket>>,
    /// Volumes whose claimRef names a claim: (namespace, name) -> volume names.
    claimed: HashMap<(String, String), BTreeSet<String>>,
}

impl VolumeIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many volumes it holds.
    pub fn len(&self) -> usize {
        self.volumes.len()
    }

    /// Whether it holds no volume.
    pub fn is_empty(&self) -> bool {
        self.volumes.is_empty()
    }

    /// The volume named `name`.
    pub fn get(&self, name: &str) -> Option<&Volume> {
        self.volumes.get(name)
    }

    /// Adds or replaces a volume.
    pub fn upsert(&mut self, volume: Volume) {
        self.remove(&volume.name.clone());
        if let Some(claim) = &volume.claim_ref {
            self.claimed
                .entry((claim.namespace.clone(), claim.name.clone()))
                .or_default()
                .insert(volume.name.clone());
        } else if let (Some(capacity), VolumePhase::Available, false) =
            (volume.capacity, volume.phase, volume.deleting)
        {
            self.available
                .entry(volume.class.clone())
                .or_default()
                .entry((volume.mode, volume.access))
                .or_default()
                .insert((capacity, volume.name.clone()));
        }
        self.volumes.insert(volume.name.clone(), volume);
    }

    /// Removes a volume; returns it if it was there.
    pub fn remove(&mut self, name: &str) -> Option<Volume> {
        let volume = self.volumes.remove(name)?;
        if let Some(claim) = &volume.claim_ref {
            let key = (claim.namespace.clone(), claim.name.clone());
            if let Some(names) = self.claimed.get_mut(&key) {
                names.remove(name);
                if names.is_empty() {
                    self.claimed.remove(&key);
                }
            }
        }
        if let (Some(capacity), Some(by_shape)) =
            (volume.capacity, self.available.get_mut(&volume.class))
            && let Some(bucket) = by_shape.get_mut(&(volume.mode, volume.access))
        {
            bucket.remove(&(capacity, volume.name.clone()));
        }
        Some(volume)
    }

    /// The volume upstream's PV controller would bind `claim` to. With
    /// `delay_binding` (WaitForFirstConsumer) only a volume pre-bound to the claim
    /// qualifies: choosing among unbound ones is the scheduler's part.
    pub fn find_match(&self, claim: &Claim, delay_binding: bool) -> Option<&Volume> {
        let request = claim.request?;
        let prebound = self.claimed.get(&claim.key());
        let by_shape = self.available.get(&claim.class);
        for modes in claim.access.supersets() {
            if let Some(volume) =
                prebound.and_then(|names| self.prebound_in_group(names, claim, request, modes))
            {
                return Some(volume);
            }
            if delay_binding {
                continue;
            }
            let Some(bucket) = by_shape.and_then(|b| b.get(&(claim.mode, modes))) else {
                continue;
            };
            let found = bucket
                .range((request, String::new())..)
                .filter_map(|(_, name)| self.volumes.get(name))
                .find(|volume| {
                    claim
                        .selector
                        .as_ref()
                        .is_none_or(|s| s.matches(&volume.labels))
                });
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// Upstream checks a pre-bound volume's size, mode and deletion, but not its
    /// class, phase or labels: a user's explicit binding wins.
    fn prebound_in_group(
        &self,
        names: &BTreeSet<String>,
        claim: &Claim,
        request: Quantity,
        modes: AccessModes,
    ) -> Option<&Volume> {
        names
            .iter()
            .filter_map(|name| self.volumes.get(name))
            .filter(|v| {
                v.access == modes
                    && v.mode == claim.mode
                    && !v.deleting
                    && v.capacity.is_some_and(|c| c >= request)
                    && v.is_bound_to(claim)
            })
            .min_by(|a, b| (a.capacity, &a.name).cmp(&(b.capacity, &b.name)))
    }
}
