//! Binding claims to volumes: the pure matching (model, index) and, on top, the
//! controller that writes the results.

pub mod controller;
mod event_queue;
pub mod index;
pub mod model;
pub mod plan;
pub mod status;
pub mod sync;

#[cfg(test)]
mod tests;

pub use controller::Binder;
pub use index::VolumeIndex;
pub use model::{
    AccessModes, Claim, ClaimPhase, ClaimRef, ReclaimPolicy, Selector, Volume, VolumeMode,
    VolumePhase,
};
