//! The Stowage CSI controller plugin: Identity and Controller services over local
//! and NFS backends. Knows CSI and the host, not Kubernetes.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod attach;
pub mod backend;
pub mod controller;
pub mod driver;
pub mod error;
pub mod freeze;
pub mod identity;
pub mod listing;
pub mod local;
pub mod localfs;
pub mod nfs;
pub mod pacer;
pub mod params;
pub mod record;

use std::sync::Arc;

use csi_proto::v1::controller_server::ControllerServer;
use csi_proto::v1::group_controller_server::GroupControllerServer;
use csi_proto::v1::identity_server::IdentityServer;
use tonic::service::Routes;

pub use controller::{ControllerService, GroupControllerService};
pub use driver::{ControllerConfig, Driver};
pub use error::{Error, Result};
pub use identity::IdentityService;

/// The Identity, Controller and GroupController services for `driver`, ready to serve.
pub fn controller_routes(driver: Arc<Driver>) -> Routes {
    Routes::new(IdentityServer::new(IdentityService::new(Some(
        driver.clone(),
    ))))
    .add_service(ControllerServer::new(ControllerService::new(
        driver.clone(),
    )))
    .add_service(GroupControllerServer::new(GroupControllerService::new(
        driver,
    )))
}
