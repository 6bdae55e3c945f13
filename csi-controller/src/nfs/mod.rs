//! NFS volumes: the backend over a userspace session (crate nfs-session).

mod backend;
mod share;

pub use backend::NfsBackend;
pub use share::NfsShare;
