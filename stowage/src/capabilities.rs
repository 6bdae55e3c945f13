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
    let call = client.controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {});
    let caps = answer("ControllerGetCapabilities", call)
        .await?
        .capabilities;
    Ok(caps
        .iter()
        .filter_map(|c| c.r#type.as_ref())
        .map(|controller_service_capability::Type::Rpc(rpc)| rpc.r#type)
        .collect())
}

/// The node RPC capabilities, as `rpc::Type` numbers.
pub async fn node_rpcs(client: &mut NodeClient<Channel>) -> Result<Vec<i32>, Refused> {
    let call = client.node_get_capabilities(csi::NodeGetCapabilitiesRequest {});
    let caps = answer("NodeGetCapabilities", call).await?.capabilities;
    Ok(caps
        .iter()
        .filter_map(|c| c.r#type.as_ref())
        .map(|node_service_capability::Type::Rpc(rpc)| rpc.r#type)
        .collect())
}

/// The answer to `rpc`, or why the driver refused it.
async fn answer<T>(
    rpc: &'static str,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Refused> {
    match call.await {
        Ok(response) => Ok(response.into_inner()),
        Err(status) => Err(Refused { rpc, status }),
    }
}
