//! The Container Storage Interface v1.12: messages, servers and clients.

#[allow(clippy::all, clippy::unwrap_used, missing_docs)] // generated code
pub mod csi {
    pub mod v1 {
        tonic::include_proto!("csi.v1");
        pub use crate::list_volumes::{ListVolumesResponse, list_volumes_response};
    }
}

pub use csi::v1;

pub mod channel;
pub mod list_volumes;
