//! What the modifier does for one claim, decided from the claim, its volume and the
//! class it asks for (pure, so every case is a table row).

use std::collections::BTreeMap;

use driver_contract::DRIVER_NAME;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::VolumeAttributesClass;

/// The next step for a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModifyStep {
    Nothing,
    /// The class asked for does not exist (yet): say so (`Pending`), as
    /// external-resizer does, and wait for it.
    Pending(String),
    /// ControllerModifyVolume with the class's parameters, then record the class.
    Modify {
        target: String,
        parameters: BTreeMap<String, String>,
    },
}

/// The class a claim asks for and the one its volume has, as upstream compares them:
/// work only on a Bound claim of our driver whose `spec.volumeAttributesClassName`
/// differs from `status.currentVolumeAttributesClassName`.
pub fn modify_step(
    pvc: &PersistentVolumeClaim,
    pv: &PersistentVolume,
    class: Option<&VolumeAttributesClass>,
) -> ModifyStep {
    let Some(target) = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_attributes_class_name.clone())
        .filter(|name| !name.is_empty())
    else {
        // Unsetting the class is not a modification upstream performs.
        return ModifyStep::Nothing;
    };
    let status = pvc.status.clone().unwrap_or_default();
    if status.phase.as_deref() != Some("Bound")
        || status.current_volume_attributes_class_name.as_deref() == Some(target.as_str())
    {
        return ModifyStep::Nothing;
    }
    let ours = pv
        .spec
        .as_ref()
        .and_then(|s| s.csi.as_ref())
        .is_some_and(|csi| csi.driver == DRIVER_NAME);
    if !ours {
        return ModifyStep::Nothing;
    }
    let pending = status.modify_volume_status.as_ref().is_some_and(|m| {
        m.status == "Pending" && m.target_volume_attributes_class_name.as_deref() == Some(&target)
    });
    match class {
        // Already said: writing it again would only wake the next pass.
        None if pending => ModifyStep::Nothing,
        None => ModifyStep::Pending(target),
        Some(class) if class.driver_name != DRIVER_NAME => ModifyStep::Nothing,
        Some(class) => ModifyStep::Modify {
            target,
            parameters: class.parameters.clone().unwrap_or_default(),
        },
    }
}

/// The `status` value of a claim's modifyVolumeStatus after a failed call: upstream's
/// external-resizer marks errors the driver will repeat (InvalidArgument, and the
/// like) Infeasible and anything else still InProgress.
pub fn failure_status(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::InvalidArgument
        | tonic::Code::OutOfRange
        | tonic::Code::NotFound
        | tonic::Code::FailedPrecondition
        | tonic::Code::Unimplemented => "Infeasible",
        _ => "InProgress",
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
