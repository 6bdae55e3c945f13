//! What a CSI driver says it offers, as the clients in this binary ask for it.

use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::controller_service_capability;
use csi_proto::v1::node_client::NodeClient;
use csi_proto::v1::node_service_capability;
use csi_proto::v1::{self as csi};
use tonic::transport::Channel;

/// A driver that did not say what it offers.
#[derive(Debug, thiserror::Error)]
#[error("{rpc}: {}", .status.message())]
pub struct Refused {
    rpc: &'static str,
    status: tonic::Status,
}

/// The controller RPC capabilities, as `rpc::Type` numbers.
pub async fn controller_rpcs(client: &mut ControllerClient<Channel>) -> Result<Vec<i32>, Refused> {
    let caps = client
        .controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {})
        .await
        .map_err(|status| Refused {
            rpc: "ControllerGetCapabilities",
            status,
        })?
        .into_inner();
    Ok(caps
        .capabilities
        .iter()
        .filter_map(|c| c.r#type.as_ref())
        .map(|controller_service_capability::Type::Rpc(rpc)| rpc.r#type)
        .collect())
}

/// The node RPC capabilities, as `rpc::Type` numbers.
pub async fn node_rpcs(client: &mut NodeClient<Channel>) -> Result<Vec<i32>, Refused> {
    let caps = client
        .node_get_capabilities(csi::NodeGetCapabilitiesRequest {})
        .await
        .map_err(|status| Refused {
            rpc: "NodeGetCapabilities",
            status,
        })?
        .into_inner();
    Ok(caps
        .capabilities
        .iter()
        .filter_map(|c| c.r#type.as_ref())
        .map(|node_service_capability::Type::Rpc(rpc)| rpc.r#type)
        .collect())
}
