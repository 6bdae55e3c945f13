//! Binding claims to volumes: the pure matching (model, index) and, on top, the
//! controller that writes the results.

pub(crate) mod controller;
mod event_queue;
mod index;
pub(crate) mod model;
pub(crate) mod plan;
pub(crate) mod status;
pub(crate) mod sync;
mod written;

#[cfg(test)]
mod tests;

pub(crate) use controller::Binder;
pub use index::VolumeIndex;
pub use model::{
    AccessModes, Claim, ClaimPhase, ClaimRef, ReclaimPolicy, Selector, Volume, VolumeMode,
    VolumePhase,
};
