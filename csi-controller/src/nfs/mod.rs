//! NFS volumes: the backend over a userspace session (crate nfs-session).

mod backend;
mod share;

pub use backend::{METADATA_DIR, NfsBackend};
pub use share::NfsShare;
