//! A session with one NFSv3 export through the userspace client (no kernel mount, no
//! privilege). Its own crate because the controller (NFS volumes) and the provisioner
//! (Recycle of NFS volumes) both use it; the export's address is the driver
//! contract's, re-exported because [`Session::connect`] takes it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod session;

pub use driver_contract::export::Export;
pub use error::NfsError;
pub use nfs3_types::nfs3::{nfs_fh3, nfsstat3};
pub use session::{DirEntry, Session, SpaceStats};
