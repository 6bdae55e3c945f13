//! Tables of argument checks: each row a name, a request of any CSI RPC and the code
//! (and a word of the message) it must be refused with, walked by one loop whose
//! failure names the rows that did not hold.

use csi_proto::v1;
use tonic::Code;

use crate::csi::Csi;

macro_rules! calls {
    ($($variant:ident($request:ty) => $client:ident.$method:ident),* $(,)?) => {
        /// One request of any CSI RPC.
        pub enum Call {
            $($variant($request)),*
        }

        $(impl From<$request> for Call {
            fn from(request: $request) -> Self {
                Self::$variant(request)
            }
        })*

        impl Csi {
            /// Sends `call` to its service; the answer as Debug text.
            pub async fn send(&self, call: Call) -> Result<String, tonic::Status> {
                match call {
                    $(Call::$variant(request) => self
                        .$client
                        .clone()
                        .$method(request)
                        .await
                        .map(|answer| format!("{:?}", answer.into_inner())),)*
                }
            }
        }
    };
}

calls! {
    CreateVolume(v1::CreateVolumeRequest) => controller.create_volume,
    DeleteVolume(v1::DeleteVolumeRequest) => controller.delete_volume,
    ControllerPublish(v1::ControllerPublishVolumeRequest) => controller.controller_publish_volume,
    ControllerUnpublish(v1::ControllerUnpublishVolumeRequest) => controller.controller_unpublish_volume,
    Validate(v1::ValidateVolumeCapabilitiesRequest) => controller.validate_volume_capabilities,
    ListVolumes(v1::ListVolumesRequest) => controller.list_volumes,
    GetVolume(v1::ControllerGetVolumeRequest) => controller.controller_get_volume,
    Expand(v1::ControllerExpandVolumeRequest) => controller.controller_expand_volume,
    Modify(v1::ControllerModifyVolumeRequest) => controller.controller_modify_volume,
    CreateSnapshot(v1::CreateSnapshotRequest) => controller.create_snapshot,
    DeleteSnapshot(v1::DeleteSnapshotRequest) => controller.delete_snapshot,
    ListSnapshots(v1::ListSnapshotsRequest) => controller.list_snapshots,
    CreateGroupSnapshot(v1::CreateVolumeGroupSnapshotRequest) => group.create_volume_group_snapshot,
    DeleteGroupSnapshot(v1::DeleteVolumeGroupSnapshotRequest) => group.delete_volume_group_snapshot,
    GetGroupSnapshot(v1::GetVolumeGroupSnapshotRequest) => group.get_volume_group_snapshot,
    NodeStage(v1::NodeStageVolumeRequest) => node.node_stage_volume,
    NodeUnstage(v1::NodeUnstageVolumeRequest) => node.node_unstage_volume,
    NodePublish(v1::NodePublishVolumeRequest) => node.node_publish_volume,
    NodeUnpublish(v1::NodeUnpublishVolumeRequest) => node.node_unpublish_volume,
    NodeStats(v1::NodeGetVolumeStatsRequest) => node.node_get_volume_stats,
    NodeExpand(v1::NodeExpandVolumeRequest) => node.node_expand_volume,
}

/// A request that must be refused with `code`, the message mentioning `mentions`
/// (`""`: any message).
pub struct Refusal {
    pub name: &'static str,
    pub call: Call,
    pub code: Code,
    pub mentions: &'static str,
}

pub fn refusal(
    name: &'static str,
    call: impl Into<Call>,
    code: Code,
    mentions: &'static str,
) -> Refusal {
    Refusal {
        name,
        call: call.into(),
        code,
        mentions,
    }
}

/// Sends every row in order and fails naming each row whose answer was not its refusal.
pub async fn assert_refused(csi: &Csi, rows: Vec<Refusal>) {
    let mut wrong = Vec::new();
    for row in rows {
        let (name, code, mentions) = (row.name, row.code, row.mentions);
        match csi.send(row.call).await {
            Ok(answer) => wrong.push(format!("{name}: expected {code:?}, answered Ok({answer})")),
            Err(status) if status.code() != code || !status.message().contains(mentions) => {
                wrong.push(format!(
                    "{name}: expected {code:?} mentioning {mentions:?}, got {:?}: {}",
                    status.code(),
                    status.message()
                ));
            }
            Err(_) => {}
        }
    }
    assert!(
        wrong.is_empty(),
        "refusals that did not hold:\n{}",
        wrong.join("\n")
    );
}
