//! Expansion, as external-resizer does it: a bound claim whose request exceeds its
//! volume's capacity gets ControllerExpandVolume, the volume's new capacity, and a
//! claim status saying whether the node must still grow the filesystem.

use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimCondition,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use stowage_common::quantity::Quantity;

/// What a bound claim asks of its volume's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resize {
    Nothing,
    /// Grow the volume to this many bytes.
    Grow(u128),
    /// The request is below what the claim already has: refused.
    Shrink {
        requested: String,
        has: String,
    },
}

fn storage(
    map: Option<&std::collections::BTreeMap<String, ApiQuantity>>,
) -> Option<(u128, String)> {
    let q = map?.get("storage")?;
    Some((Quantity::parse(&q.0).ok()?.bytes(), q.0.clone()))
}

pub fn resize(pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> Resize {
    let requested = storage(
        pvc.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref()),
    );
    let has = storage(pvc.status.as_ref().and_then(|s| s.capacity.as_ref()));
    let volume = storage(pv.spec.as_ref().and_then(|s| s.capacity.as_ref()));
    match (requested, has, volume) {
        (Some((want, text)), Some((have, have_text)), _) if want < have => Resize::Shrink {
            requested: text,
            has: have_text,
        },
        (Some((want, _)), _, Some((size, _))) if want > size => Resize::Grow(want),
        _ => Resize::Nothing,
    }
}

/// The claim's status after the controller grew the volume to `bytes`: done, or
/// waiting for the node to grow the filesystem.
pub fn status_after(
    pvc: &PersistentVolumeClaim,
    bytes: u128,
    node_expansion_required: bool,
) -> PersistentVolumeClaim {
    let mut pvc = pvc.clone();
    let status = pvc.status.get_or_insert_default();
    if node_expansion_required {
        status.conditions = Some(vec![PersistentVolumeClaimCondition {
            type_: "FileSystemResizePending".into(),
            status: "True".into(),
            message: Some(
                "Waiting for user to (re-)start a pod to finish file system resize of volume on node."
                    .into(),
            ),
            last_transition_time: Some(Time(jiff::Timestamp::now())),
            ..Default::default()
        }]);
    } else {
        let size = Quantity::from_bytes(bytes).map_or_else(|| bytes.to_string(), |q| q.to_string());
        status
            .capacity
            .get_or_insert_default()
            .insert("storage".into(), ApiQuantity(size));
        status.conditions = None;
    }
    pvc
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(request: &str, has: &str) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "c"},
            "spec": {"resources": {"requests": {"storage": request}}},
            "status": {"phase": "Bound", "capacity": {"storage": has}}
        }))
        .expect("pvc")
    }

    fn volume(size: &str) -> PersistentVolume {
        serde_json::from_value(
            json!({"metadata": {"name": "v"}, "spec": {"capacity": {"storage": size}}}),
        )
        .expect("pv")
    }

    #[test]
    fn grow_shrink_or_nothing() {
        assert_eq!(
            resize(&claim("2Gi", "1Gi"), &volume("1Gi")),
            Resize::Grow(2 << 30)
        );
        assert_eq!(
            resize(&claim("1Gi", "1Gi"), &volume("1Gi")),
            Resize::Nothing
        );
        assert_eq!(
            resize(&claim("2Gi", "1Gi"), &volume("2Gi")),
            Resize::Nothing,
            "the volume is already big enough: the node finishes"
        );
        assert_eq!(
            resize(&claim("512Mi", "1Gi"), &volume("1Gi")),
            Resize::Shrink {
                requested: "512Mi".into(),
                has: "1Gi".into()
            }
        );
    }

    #[test]
    fn status_says_done_or_pending_on_the_node() {
        let done = status_after(&claim("2Gi", "1Gi"), 2 << 30, false);
        let status = done.status.expect("status");
        assert_eq!(status.capacity.expect("capacity")["storage"].0, "2Gi");
        assert!(status.conditions.is_none());
        let pending = status_after(&claim("2Gi", "1Gi"), 2 << 30, true);
        let status = pending.status.expect("status");
        assert_eq!(
            status.capacity.expect("capacity")["storage"].0,
            "1Gi",
            "not yet"
        );
        assert_eq!(
            status.conditions.expect("conditions")[0].type_,
            "FileSystemResizePending"
        );
    }
}
