//! PersistentVolume writes shared by the binder and the reclaimer.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeStatus};
use kube::api::PostParams;
use kube::{Api, ResourceExt};

use crate::Result;
use crate::binder::VolumePhase;
use crate::binder::model::annotations;

/// Sets the phase, with a message (Failed) or without. As upstream's
/// updateVolumePhase, no `status.reason`: the reason goes with the event.
pub async fn set_phase(
    api: &Api<PersistentVolume>,
    pv: &PersistentVolume,
    phase: VolumePhase,
    message: Option<&str>,
) -> Result<PersistentVolume> {
    let mut pv = pv.clone();
    pv.status = Some(phase_status(phase, message));
    Ok(api
        .replace_status(&pv.name_any(), &PostParams::default(), &pv)
        .await?)
}

/// The status a phase change writes.
pub fn phase_status(phase: VolumePhase, message: Option<&str>) -> PersistentVolumeStatus {
    PersistentVolumeStatus {
        phase: Some(phase_name(phase).into()),
        message: message.map(str::to_string),
        ..Default::default()
    }
}

/// Upstream's unbindVolume, then Available: a binding the controller made is
/// removed; a user's pre-binding keeps its name and namespace and loses the uid.
pub async fn unbind(
    api: &Api<PersistentVolume>,
    pv: &PersistentVolume,
) -> Result<PersistentVolume> {
    let mut pv = pv.clone();
    let by_controller = pv
        .annotations()
        .contains_key(annotations::BOUND_BY_CONTROLLER);
    let spec = pv.spec.get_or_insert_default();
    if by_controller {
        spec.claim_ref = None;
        pv.annotations_mut()
            .remove(annotations::BOUND_BY_CONTROLLER);
    } else if let Some(claim_ref) = spec.claim_ref.as_mut() {
        claim_ref.uid = None;
    }
    let pv = api
        .replace(&pv.name_any(), &PostParams::default(), &pv)
        .await?;
    set_phase(api, &pv, VolumePhase::Available, None).await
}

pub fn phase_name(phase: VolumePhase) -> &'static str {
    match phase {
        VolumePhase::Pending => "Pending",
        VolumePhase::Available => "Available",
        VolumePhase::Bound => "Bound",
        VolumePhase::Released => "Released",
        VolumePhase::Failed => "Failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_carries_a_message_and_never_a_reason() {
        let cases = [
            (
                VolumePhase::Failed,
                Some("no deleter"),
                "Failed",
                Some("no deleter"),
            ),
            (VolumePhase::Available, None, "Available", None),
            (VolumePhase::Released, None, "Released", None),
        ];
        for (phase, message, name, expected) in cases {
            let status = phase_status(phase, message);
            assert_eq!(status.phase.as_deref(), Some(name));
            assert_eq!(status.message.as_deref(), expected, "{name}");
            assert_eq!(status.reason, None, "{name}: upstream writes no reason");
        }
    }
}
