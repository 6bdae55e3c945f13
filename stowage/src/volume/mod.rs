//! Consuming volumes without a kubelet: `stowage mount`, `stowage unmount` and
//! `stowage status` against the single-machine mode's API and node plugin.

mod error;
mod mount;
mod placement;
mod record;
mod status;

pub use error::Error;
pub use mount::{MountArgs, UnmountArgs, mount, unmount};
pub use status::{StatusArgs, status};
