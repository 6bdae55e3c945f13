//! A session with one NFSv3 export through the userspace client (no kernel mount, no
//! privilege), and the export's address. Its own crate because the controller (NFS
//! volumes) and the provisioner (Recycle of NFS volumes) both use it, and the node
//! plugin needs only the address, not the controller.

mod error;
mod export;
mod session;

pub use error::NfsError;
pub use export::{DEFAULT_PORTMAP_PORT, Export};
pub use nfs3_types::nfs3::{nfs_fh3, nfsstat3};
pub use session::{DirEntry, Session, SpaceStats};
