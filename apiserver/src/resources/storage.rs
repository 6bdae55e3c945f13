//! storage.k8s.io/v1: StorageClass and CSIDriver.

use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use serde_json::{Value, json};

use super::{PLAIN, decode_named, default_at, roundtrip, validate_name_only};
use crate::error::Result;
use crate::meta;
use crate::registry::{Behaviour, Resource};
use crate::resources::core::DEFAULT_CLASS_ANNOTATIONS;
use crate::store::Reader;
use crate::table::{self, Column, text};
use crate::validation::{FieldError, check_one_of};

/// The StorageClass kind.
pub const STORAGE_CLASS: Resource = Resource {
    group: "storage.k8s.io",
    version: "v1",
    kind: "StorageClass",
    plural: "storageclasses",
    singular: "storageclass",
    short_names: &["sc"],
    namespaced: false,
    has_status: false,
    behaviour: Behaviour {
        decode: roundtrip::<StorageClass>,
        normalize: Ok,
        prepare_create: prepare_class,
        validate: validate_class,
        columns: &[
            Column::name(),
            Column::new(
                "Provisioner",
                "string",
                "provisioner indicates the type of the provisioner.",
            ),
            Column::new(
                "ReclaimPolicy",
                "string",
                "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class.",
            ),
            Column::new(
                "VolumeBindingMode",
                "string",
                "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.",
            ),
            Column::new(
                "AllowVolumeExpansion",
                "string",
                "allowVolumeExpansion shows whether the storage class allow volume expand.",
            ),
            Column::age(),
        ],
        cells: class_cells,
        fields: &[],
    },
};

/// The CSIDriver kind.
pub const CSI_DRIVER: Resource = Resource {
    group: "storage.k8s.io",
    version: "v1",
    kind: "CSIDriver",
    plural: "csidrivers",
    singular: "csidriver",
    short_names: &[],
    namespaced: false,
    has_status: false,
    behaviour: Behaviour {
        decode: roundtrip::<CSIDriver>,
        prepare_create: prepare_driver,
        validate: validate_name_only,
        ..PLAIN
    },
};

fn prepare_class(object: &mut Value, _: &dyn Reader) -> Result<()> {
    default_at(object, &["reclaimPolicy"], json!("Delete"));
    default_at(object, &["volumeBindingMode"], json!("Immediate"));
    Ok(())
}

fn validate_class(object: &Value, old: Option<&Value>) -> Result<Vec<FieldError>> {
    let (class, mut errors) = decode_named::<StorageClass>(object)?;
    if class.provisioner.is_empty() {
        errors.push(FieldError::required("provisioner", ""));
    }
    if let Some(policy) = &class.reclaim_policy {
        check_one_of("reclaimPolicy", policy, &["Delete", "Retain"], &mut errors);
    }
    if let Some(mode) = &class.volume_binding_mode {
        check_one_of(
            "volumeBindingMode",
            mode,
            &["Immediate", "WaitForFirstConsumer"],
            &mut errors,
        );
    }
    if let Some(old) = old {
        for field in [
            "parameters",
            "provisioner",
            "reclaimPolicy",
            "volumeBindingMode",
        ] {
            if object.get(field) != old.get(field) {
                errors.push(FieldError::forbidden(
                    field,
                    format!("updates to {field} are forbidden."),
                ));
            }
        }
    }
    Ok(errors)
}

/// Upstream's CSIDriver defaults.
fn prepare_driver(object: &mut Value, _: &dyn Reader) -> Result<()> {
    default_at(object, &["spec", "attachRequired"], json!(true));
    default_at(object, &["spec", "podInfoOnMount"], json!(false));
    default_at(object, &["spec", "requiresRepublish"], json!(false));
    default_at(object, &["spec", "storageCapacity"], json!(false));
    default_at(
        object,
        &["spec", "fsGroupPolicy"],
        json!("ReadWriteOnceWithFSType"),
    );
    default_at(
        object,
        &["spec", "volumeLifecycleModes"],
        json!(["Persistent"]),
    );
    Ok(())
}

fn class_cells(object: &Value) -> Vec<Value> {
    let annotations = object.pointer("/metadata/annotations");
    let is_default = DEFAULT_CLASS_ANNOTATIONS
        .iter()
        .any(|a| annotations.and_then(|m| m.get(*a)).and_then(Value::as_str) == Some("true"));
    let name = if is_default {
        format!("{} (default)", meta::name(object))
    } else {
        meta::name(object).to_string()
    };
    let expansion = match object.get("allowVolumeExpansion").and_then(Value::as_bool) {
        Some(allowed) => allowed.to_string(),
        None => "false".into(),
    };
    vec![
        json!(name),
        json!(text(object, "/provisioner")),
        json!(text(object, "/reclaimPolicy")),
        json!(text(object, "/volumeBindingMode")),
        json!(expansion),
        table::age(object),
    ]
}
