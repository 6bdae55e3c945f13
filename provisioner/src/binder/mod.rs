//! Binding claims to volumes: the pure matching (model, index) and, on top, the
//! controller that writes the results.

pub mod index;
pub mod model;

#[cfg(test)]
mod tests;

pub use index::VolumeIndex;
pub use model::{AccessModes, Claim, ClaimRef, Selector, Volume, VolumeMode, VolumePhase};
