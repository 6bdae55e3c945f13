//! NFS volumes: the backend over a userspace session (crate nfs-session).

mod backend;
pub use backend::METADATA_DIR;

pub use backend::{Fill as NfsFill, NfsBackend};
