//! The CSI Controller service: a thin gRPC layer over the volume, snapshot and
//! attach operations, which return the crate's [`Error`].

mod groups;
mod snapshots;
mod volumes;

pub use groups::GroupControllerService;

use std::sync::Arc;
use std::time::Instant;

use csi_proto::v1::controller_server::Controller;
use csi_proto::v1::controller_service_capability::{Rpc, rpc::Type as Cap};
use csi_proto::v1::{self as csi, ControllerServiceCapability};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::attach::Attachment;
use crate::backend::Backend;
pub(crate) use crate::backend::blocking;
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::record::VolumeRecord;
use driver_contract::ids::{Location, VolumeId, require_id};
use driver_contract::request::{is_single_node, parse_capability};

pub use volumes::DEFAULT_CAPACITY;

/// The CSI Controller service over a [`Driver`].
#[derive(Debug, Clone)]
pub struct ControllerService {
    driver: Arc<Driver>,
}

impl ControllerService {
    /// The service for `driver`.
    pub fn new(driver: Arc<Driver>) -> Self {
        Self { driver }
    }
}

/// A volume found by ID, with its record and the backend that holds it.
pub(crate) struct VolumeHandle<'a> {
    /// Its parsed ID.
    pub id: VolumeId,
    /// Its record.
    pub record: VolumeRecord,
    /// Where it lives.
    pub backend: Box<dyn Backend + 'a>,
}

/// Finds a volume by ID: NotFound for IDs this driver did not issue or no longer has.
pub(crate) async fn lookup_volume<'a>(driver: &'a Driver, raw: &str) -> Result<VolumeHandle<'a>> {
    let not_found = || Error::VolumeNotFound {
        id: raw.to_string(),
    };
    let id = VolumeId::parse(raw).ok_or_else(not_found)?;
    let backend = driver.backend(&id.location)?;
    let record = backend.volume(&id.key).await?.ok_or_else(not_found)?;
    Ok(VolumeHandle {
        id,
        record,
        backend,
    })
}

/// Cuts one page from items sorted by `id`; the token names the last item returned.
pub(crate) fn page<T>(
    items: Vec<T>,
    id: impl Fn(&T) -> &str,
    max_entries: i32,
    token: &str,
) -> Result<(Vec<T>, String)> {
    if max_entries < 0 {
        return Err(Error::invalid("max_entries", "must not be negative"));
    }
    let start = match token {
        "" => 0,
        t => {
            let after = t.strip_prefix("after:").ok_or_else(|| Error::StaleToken {
                token: t.to_string(),
            })?;
            items.partition_point(|item| id(item) <= after)
        }
    };
    let limit = if max_entries == 0 {
        usize::MAX
    } else {
        max_entries.unsigned_abs() as usize
    };
    let mut rest = items.into_iter().skip(start);
    let page: Vec<T> = rest.by_ref().take(limit).collect();
    let next = match (rest.next(), page.last()) {
        (Some(_), Some(last)) => format!("after:{}", id(last)),
        _ => String::new(),
    };
    Ok((page, next))
}

/// Wraps one RPC: a span with the method and object, its duration, and the status mapping.
async fn rpc<T>(
    method: &'static str,
    object: &str,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<Response<T>, Status> {
    let span = tracing::info_span!("rpc", method, volume_id = object);
    async move {
        let started = Instant::now();
        let result = work.await;
        let micros = started.elapsed().as_micros();
        match &result {
            Ok(_) => tracing::debug!(duration_us = micros, "ok"),
            Err(e) => tracing::debug!(duration_us = micros, code = ?e.code(), "failed"),
        }
        result.map(Response::new).map_err(Status::from)
    }
    .instrument(span)
    .await
}

fn capability(cap: Cap) -> ControllerServiceCapability {
    ControllerServiceCapability {
        r#type: Some(csi::controller_service_capability::Type::Rpc(Rpc {
            r#type: cap as i32,
        })),
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<csi::CreateVolumeRequest>,
    ) -> Result<Response<csi::CreateVolumeResponse>, Status> {
        let req = request.into_inner();
        let name = req.name.clone();
        rpc("CreateVolume", &name, async {
            Ok(csi::CreateVolumeResponse {
                volume: Some(volumes::create(&self.driver, req).await?),
            })
        })
        .await
    }

    async fn delete_volume(
        &self,
        request: Request<csi::DeleteVolumeRequest>,
    ) -> Result<Response<csi::DeleteVolumeResponse>, Status> {
        let req = request.into_inner();
        let id = req.volume_id.clone();
        rpc("DeleteVolume", &id, async {
            volumes::delete(&self.driver, req).await?;
            Ok(csi::DeleteVolumeResponse {})
        })
        .await
    }

    async fn controller_publish_volume(
        &self,
        request: Request<csi::ControllerPublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerPublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let id = req.volume_id.clone();
        rpc("ControllerPublishVolume", &id, self.publish(req)).await
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<csi::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let id = req.volume_id.clone();
        rpc("ControllerUnpublishVolume", &id, self.unpublish(req)).await
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<csi::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<csi::ValidateVolumeCapabilitiesResponse>, Status> {
        let req = request.into_inner();
        let id = req.volume_id.clone();
        rpc(
            "ValidateVolumeCapabilities",
            &id,
            volumes::validate(&self.driver, req),
        )
        .await
    }

    async fn list_volumes(
        &self,
        request: Request<csi::ListVolumesRequest>,
    ) -> Result<Response<csi::ListVolumesResponse>, Status> {
        rpc(
            "ListVolumes",
            "",
            volumes::list(&self.driver, request.into_inner()),
        )
        .await
    }

    async fn get_capacity(
        &self,
        request: Request<csi::GetCapacityRequest>,
    ) -> Result<Response<csi::GetCapacityResponse>, Status> {
        rpc(
            "GetCapacity",
            "",
            volumes::capacity(&self.driver, request.into_inner()),
        )
        .await
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<csi::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<csi::ControllerGetCapabilitiesResponse>, Status> {
        let mut caps = vec![
            Cap::CreateDeleteVolume,
            Cap::ListVolumes,
            Cap::GetCapacity,
            Cap::GetVolume,
            Cap::VolumeCondition,
            Cap::ExpandVolume,
            Cap::CreateDeleteSnapshot,
            Cap::ListSnapshots,
            Cap::GetSnapshot,
            Cap::CloneVolume,
            Cap::SingleNodeMultiWriter,
            Cap::ModifyVolume,
        ];
        if self.driver.attachments.is_some() {
            caps.extend([
                Cap::PublishUnpublishVolume,
                Cap::PublishReadonly,
                Cap::ListVolumesPublishedNodes,
            ]);
        }
        Ok(Response::new(csi::ControllerGetCapabilitiesResponse {
            capabilities: caps.into_iter().map(capability).collect(),
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<csi::CreateSnapshotRequest>,
    ) -> Result<Response<csi::CreateSnapshotResponse>, Status> {
        let req = request.into_inner();
        let name = req.name.clone();
        rpc("CreateSnapshot", &name, async {
            Ok(csi::CreateSnapshotResponse {
                snapshot: Some(snapshots::create(&self.driver, req).await?),
            })
        })
        .await
    }

    async fn delete_snapshot(
        &self,
        request: Request<csi::DeleteSnapshotRequest>,
    ) -> Result<Response<csi::DeleteSnapshotResponse>, Status> {
        let req = request.into_inner();
        let id = req.snapshot_id.clone();
        rpc("DeleteSnapshot", &id, async {
            snapshots::delete(&self.driver, req).await?;
            Ok(csi::DeleteSnapshotResponse {})
        })
        .await
    }

    async fn list_snapshots(
        &self,
        request: Request<csi::ListSnapshotsRequest>,
    ) -> Result<Response<csi::ListSnapshotsResponse>, Status> {
        rpc(
            "ListSnapshots",
            "",
            snapshots::list(&self.driver, request.into_inner()),
        )
        .await
    }

    async fn get_snapshot(
        &self,
        request: Request<csi::GetSnapshotRequest>,
    ) -> Result<Response<csi::GetSnapshotResponse>, Status> {
        let req = request.into_inner();
        let id = req.snapshot_id.clone();
        rpc("GetSnapshot", &id, async {
            Ok(csi::GetSnapshotResponse {
                snapshot: Some(snapshots::get(&self.driver, req).await?),
            })
        })
        .await
    }

    async fn controller_expand_volume(
        &self,
        request: Request<csi::ControllerExpandVolumeRequest>,
    ) -> Result<Response<csi::ControllerExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        let id = req.volume_id.clone();
        rpc(
            "ControllerExpandVolume",
            &id,
            volumes::expand(&self.driver, req),
        )
        .await
    }

    async fn controller_get_volume(
        &self,
        request: Request<csi::ControllerGetVolumeRequest>,
    ) -> Result<Response<csi::ControllerGetVolumeResponse>, Status> {
        let req = request.into_inner();
        let id = req.volume_id.clone();
        rpc("ControllerGetVolume", &id, volumes::get(&self.driver, req)).await
    }

    async fn controller_modify_volume(
        &self,
        request: Request<csi::ControllerModifyVolumeRequest>,
    ) -> Result<Response<csi::ControllerModifyVolumeResponse>, Status> {
        let req = request.into_inner();
        let id = req.volume_id.clone();
        rpc("ControllerModifyVolume", &id, async {
            volumes::modify(&self.driver, req)
                .await
                .map(|()| csi::ControllerModifyVolumeResponse {})
        })
        .await
    }
}

impl ControllerService {
    fn attachments(&self) -> Result<&crate::attach::Attachments> {
        self.driver
            .attachments
            .as_ref()
            .ok_or(Error::AttachDisabled)
    }

    /// ControllerPublishVolume (spec: published with other options is AlreadyExists; a
    /// single-node volume published elsewhere FailedPrecondition; a node that does not
    /// hold a local volume NotFound).
    async fn publish(
        &self,
        req: csi::ControllerPublishVolumeRequest,
    ) -> Result<csi::ControllerPublishVolumeResponse> {
        let book = self.attachments()?;
        require_id("volume_id", &req.volume_id)?;
        require_id("node_id", &req.node_id)?;
        let cap = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| Error::invalid("volume_capability", "is required"))?;
        let needs = parse_capability("volume_capability", cap)?;
        let handle = lookup_volume(&self.driver, &req.volume_id).await?;
        if let Location::Local { node } = &handle.id.location
            && *node != req.node_id
        {
            return Err(Error::NotOnNode {
                node: req.node_id,
                volume: req.volume_id,
            });
        }
        if needs.access_type != handle.record.access_type {
            return Err(Error::invalid(
                "volume_capability",
                "access type differs from the volume's",
            ));
        }
        let _guard = self
            .driver
            .inflight
            .claim(handle.id.key.as_str(), &format!("volume {}", req.volume_id))?;
        book.publish(
            &req.volume_id,
            Attachment {
                node: req.node_id.clone(),
                readonly: req.readonly,
                single_node: is_single_node(cap),
            },
        )?;
        Ok(csi::ControllerPublishVolumeResponse::default())
    }

    /// ControllerUnpublishVolume (spec: a volume or publish that does not exist is
    /// unpublished, OK).
    async fn unpublish(
        &self,
        req: csi::ControllerUnpublishVolumeRequest,
    ) -> Result<csi::ControllerUnpublishVolumeResponse> {
        let book = self.attachments()?;
        require_id("volume_id", &req.volume_id)?;
        // A volume this plugin cannot find is regarded as unpublished: 0 OK (spec,
        // ControllerUnpublishVolume), and any stale entry of it goes too.
        let key = match lookup_volume(&self.driver, &req.volume_id).await {
            Ok(handle) => handle.id.key.as_str().to_string(),
            Err(Error::VolumeNotFound { .. }) => req.volume_id.clone(),
            Err(e) => return Err(e),
        };
        let _guard = self
            .driver
            .inflight
            .claim(&key, &format!("volume {}", req.volume_id))?;
        book.unpublish(&req.volume_id, &req.node_id)?;
        Ok(csi::ControllerUnpublishVolumeResponse {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_the_token_and_reject_foreign_ones() {
        let items: Vec<String> = (0..5).map(|i| format!("v{i}")).collect();
        let (first, token) = page(items.clone(), |s| s.as_str(), 2, "").expect("page");
        assert_eq!(first, vec!["v0", "v1"]);
        let (second, token) = page(items.clone(), |s| s.as_str(), 2, &token).expect("page");
        assert_eq!(second, vec!["v2", "v3"]);
        let (third, token) = page(items.clone(), |s| s.as_str(), 2, &token).expect("page");
        assert_eq!(third, vec!["v4"]);
        assert!(token.is_empty());
        assert!(matches!(
            page(items.clone(), |s| s.as_str(), 2, "bogus"),
            Err(Error::StaleToken { .. })
        ));
        assert!(matches!(
            page(items, |s| s.as_str(), -1, ""),
            Err(Error::InvalidArgument { .. })
        ));
    }
}
