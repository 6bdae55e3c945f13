//! Binding claims to volumes: the pure matching (model, index) and, on top, the
//! controller that writes the results.

pub mod controller;
pub mod index;
pub mod model;
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
