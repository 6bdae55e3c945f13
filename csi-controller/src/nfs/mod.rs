//! NFS volumes: the backend over a userspace session (crate nfs-session).

mod backend;

pub use backend::{Fill as NfsFill, NfsBackend};
