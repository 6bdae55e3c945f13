//! Admission that depends on how the server is run rather than on the kind:
//! StorageObjectInUseProtection, which kube-apiserver enables by default and which
//! `stowage apiserver --storage-object-in-use-protection` (set by `stowage up`) turns on.

use serde_json::{Value, json};

use crate::registry::Resource;
use crate::resources::core::{PERSISTENT_VOLUME, PERSISTENT_VOLUME_CLAIM};

/// The finalizer that holds a claim while a pod uses it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer that holds a volume while a claim is bound to it.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// Adds the protection finalizer to a new claim or volume, as upstream's plugin does on
/// create: once, whatever else the object carries; other kinds are left alone.
pub fn protect_storage_object(resource: &Resource, object: &mut Value) {
    let finalizer = if resource.kind == PERSISTENT_VOLUME_CLAIM.kind {
        PVC_PROTECTION
    } else if resource.kind == PERSISTENT_VOLUME.kind {
        PV_PROTECTION
    } else {
        return;
    };
    let Some(object) = object.as_object_mut() else {
        return;
    };
    let metadata = object.entry("metadata").or_insert_with(|| json!({}));
    let Some(metadata) = metadata.as_object_mut() else {
        return;
    };
    let finalizers = metadata.entry("finalizers").or_insert_with(|| json!([]));
    if finalizers.is_null() {
        *finalizers = json!([]);
    }
    let Some(list) = finalizers.as_array_mut() else {
        // Not a list: the typed decode refuses the object with a clear error.
        return;
    };
    if !list.iter().any(|f| f == finalizer) {
        list.push(json!(finalizer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::core::POD;

    #[test]
    fn new_claims_and_volumes_get_their_finalizer_once() {
        for (what, resource, object, want) in [
            (
                "a claim",
                &PERSISTENT_VOLUME_CLAIM,
                json!({"metadata": {"name": "c"}}),
                json!([PVC_PROTECTION]),
            ),
            (
                "a volume, beside its own finalizers",
                &PERSISTENT_VOLUME,
                json!({"metadata": {"name": "v", "finalizers": ["a/b"]}}),
                json!(["a/b", PV_PROTECTION]),
            ),
            (
                "a claim already carrying it",
                &PERSISTENT_VOLUME_CLAIM,
                json!({"metadata": {"finalizers": [PVC_PROTECTION]}}),
                json!([PVC_PROTECTION]),
            ),
            (
                "a claim with no metadata",
                &PERSISTENT_VOLUME_CLAIM,
                json!({}),
                json!([PVC_PROTECTION]),
            ),
            (
                "null finalizers",
                &PERSISTENT_VOLUME,
                json!({"metadata": {"finalizers": null}}),
                json!([PV_PROTECTION]),
            ),
        ] {
            let mut object = object;
            protect_storage_object(resource, &mut object);
            assert_eq!(object["metadata"]["finalizers"], want, "{what}");
        }
        let mut pod = json!({"metadata": {"name": "p"}});
        protect_storage_object(&POD, &mut pod);
        assert!(
            pod["metadata"].get("finalizers").is_none(),
            "other kinds untouched"
        );
    }
}
