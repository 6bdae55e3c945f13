//! The CSI Identity service, shared by the controller and node binaries.

use std::sync::Arc;

use csi_proto::v1::identity_server::Identity;
use csi_proto::v1::plugin_capability::{
    Service, Type as CapType, VolumeExpansion, service, volume_expansion,
};
use csi_proto::v1::{self as csi, PluginCapability};
use tonic::{Request, Response, Status};

use crate::driver::Driver;

/// The CSI Identity service: plugin info, capabilities and readiness.
#[derive(Debug, Clone)]
pub struct IdentityService {
    /// The controller, when this endpoint serves one: its readiness is the probe's.
    controller: Option<Arc<Driver>>,
}

impl IdentityService {
    /// Identity for an endpoint serving `controller` (None: a node plugin alone).
    pub fn new(controller: Option<Arc<Driver>>) -> Self {
        Self { controller }
    }
}

fn service_capability(kind: service::Type) -> PluginCapability {
    PluginCapability {
        r#type: Some(CapType::Service(Service {
            r#type: kind as i32,
        })),
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _: Request<csi::GetPluginInfoRequest>,
    ) -> Result<Response<csi::GetPluginInfoResponse>, Status> {
        Ok(Response::new(csi::GetPluginInfoResponse {
            name: driver_contract::DRIVER_NAME.to_string(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<csi::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<csi::GetPluginCapabilitiesResponse>, Status> {
        // Spec: the capabilities of the Plugin as a whole, as deployed, the same from
        // every instance: a node instance whose Controller runs in another process
        // (`--without-controller`) still names the Controller services.
        let capabilities = vec![
            service_capability(service::Type::ControllerService),
            service_capability(service::Type::GroupControllerService),
            service_capability(service::Type::VolumeAccessibilityConstraints),
            PluginCapability {
                r#type: Some(CapType::VolumeExpansion(VolumeExpansion {
                    r#type: volume_expansion::Type::Online as i32,
                })),
            },
        ];
        Ok(Response::new(csi::GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(
        &self,
        _: Request<csi::ProbeRequest>,
    ) -> Result<Response<csi::ProbeResponse>, Status> {
        let ready = match &self.controller {
            Some(driver) => driver.ready().await,
            None => true,
        };
        tracing::trace!(ready, "probe");
        Ok(Response::new(csi::ProbeResponse { ready: Some(ready) }))
    }
}
