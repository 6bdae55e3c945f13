//! storage.k8s.io/v1 kinds the CSI sidecars and kubelet use: CSINode, VolumeAttachment,
//! CSIStorageCapacity and VolumeAttributesClass, with upstream's validation
//! (`pkg/apis/storage/validation`) and kubectl columns (`printers.go`).

use std::collections::BTreeSet;

use k8s_openapi::api::storage::v1::{
    CSINode, CSIStorageCapacity, VolumeAttachment, VolumeAttributesClass, VolumeError,
};
use serde_json::{Value, json};

use super::core::check_selector;
use super::{PLAIN, decode_named, roundtrip};
use crate::error::Result;
use crate::meta;
use crate::registry::{Behaviour, Resource};
use crate::table::{self, Column, text};
use crate::validation::{
    FieldError, SUBDOMAIN_MESSAGE, check_nonnegative_quantity, check_qualified_name,
    check_subdomain, check_unchanged,
};

const GROUP: &str = "storage.k8s.io";

/// Upstream's `csiNodeIDMaxLength`.
const MAX_NODE_ID: usize = 192;
/// `maxAttachedVolumeMetadataSize`, and the bound of class parameters.
const MAX_METADATA_BYTES: usize = 256 << 10;
/// `maxVolumeErrorMessageSize`.
const MAX_ERROR_MESSAGE: usize = 1024;
/// `maxProvisionerParameterLen`.
const MAX_PARAMETERS: usize = 512;

/// The CSINode kind.
pub const CSI_NODE: Resource = Resource {
    group: GROUP,
    version: "v1",
    kind: "CSINode",
    plural: "csinodes",
    singular: "csinode",
    short_names: &[],
    namespaced: false,
    has_status: false,
    behaviour: Behaviour {
        decode: roundtrip::<CSINode>,
        validate: validate_csi_node,
        columns: &[
            Column::name(),
            Column::new(
                "Drivers",
                "integer",
                "Drivers indicates the number of CSI drivers registered on the node",
            ),
            Column::age(),
        ],
        cells: csi_node_cells,
        ..PLAIN
    },
};

/// The VolumeAttachment kind.
pub const VOLUME_ATTACHMENT: Resource = Resource {
    group: GROUP,
    version: "v1",
    kind: "VolumeAttachment",
    plural: "volumeattachments",
    singular: "volumeattachment",
    short_names: &[],
    namespaced: false,
    has_status: true,
    behaviour: Behaviour {
        decode: roundtrip::<VolumeAttachment>,
        validate: validate_attachment,
        columns: &[
            Column::name(),
            Column::new(
                "Attacher",
                "string",
                "attacher indicates the name of the volume driver that MUST handle this request. This is the name returned by GetPluginName().",
            ),
            Column::new(
                "PV",
                "string",
                "persistentVolumeName represents the name of the persistent volume to attach.",
            ),
            Column::new(
                "Node",
                "string",
                "nodeName represents the node that the volume should be attached to.",
            ),
            Column::new(
                "Attached",
                "boolean",
                "attached indicates the volume is successfully attached. This field must only be set by the entity completing the attach operation, i.e. the external-attacher.",
            ),
            Column::age(),
        ],
        cells: attachment_cells,
        ..PLAIN
    },
};

/// The CSIStorageCapacity kind.
pub const CSI_STORAGE_CAPACITY: Resource = Resource {
    group: GROUP,
    version: "v1",
    kind: "CSIStorageCapacity",
    plural: "csistoragecapacities",
    singular: "csistoragecapacity",
    short_names: &[],
    namespaced: true,
    has_status: false,
    behaviour: Behaviour {
        decode: roundtrip::<CSIStorageCapacity>,
        validate: validate_capacity,
        columns: &[
            Column::name(),
            Column::new(
                "StorageClassName",
                "string",
                "storageClassName represents the name of the StorageClass that the reported capacity applies to.",
            ),
            Column::new(
                "Capacity",
                "string",
                "capacity is the value reported by the CSI driver in its GetCapacityResponse for a GetCapacityRequest with topology and parameters that match the previous fields.",
            ),
        ],
        cells: capacity_cells,
        ..PLAIN
    },
};

/// The VolumeAttributesClass kind.
pub const VOLUME_ATTRIBUTES_CLASS: Resource = Resource {
    group: GROUP,
    version: "v1",
    kind: "VolumeAttributesClass",
    plural: "volumeattributesclasses",
    singular: "volumeattributesclass",
    short_names: &["vac"],
    namespaced: false,
    has_status: false,
    behaviour: Behaviour {
        decode: roundtrip::<VolumeAttributesClass>,
        validate: validate_attributes_class,
        columns: &[
            Column::name(),
            Column::new(
                "DriverName",
                "string",
                "Name of the CSI driver This field is immutable.",
            ),
            Column::age(),
        ],
        cells: attributes_class_cells,
        ..PLAIN
    },
};

fn validate_csi_node(object: &Value, old: Option<&Value>) -> Result<Vec<FieldError>> {
    let (node, mut errors) = decode_named::<CSINode>(object)?;
    let mut names = BTreeSet::new();
    for (i, driver) in node.spec.drivers.iter().enumerate() {
        let at = format!("spec.drivers[{i}]");
        check_subdomain(&format!("{at}.name"), &driver.name, &mut errors);
        if driver.node_id.is_empty() {
            errors.push(FieldError::required(format!("{at}.nodeID"), ""));
        } else if driver.node_id.len() > MAX_NODE_ID {
            errors.push(FieldError::invalid(
                format!("{at}.nodeID"),
                driver.node_id.as_str(),
                format!("must be {MAX_NODE_ID} characters or less"),
            ));
        }
        if let Some(count) = driver.allocatable.as_ref().and_then(|a| a.count)
            && count < 0
        {
            errors.push(FieldError::invalid(
                format!("{at}.allocatable.count"),
                count,
                "must be greater than or equal to 0",
            ));
        }
        if !names.insert(driver.name.as_str()) {
            errors.push(FieldError::duplicate(
                format!("{at}.name"),
                driver.name.as_str(),
            ));
        }
        let mut keys = BTreeSet::new();
        for key in driver.topology_keys.iter().flatten() {
            if !keys.insert(key.as_str()) {
                errors.push(FieldError::duplicate(at.clone(), key.as_str()));
            }
            check_qualified_name(&at, key, &mut errors);
        }
    }
    // A driver already registered keeps its entry as it is (allocatable included, as
    // without MutableCSINodeAllocatableCount); drivers may come and go.
    if let Some(old) = old {
        let old_drivers = old.pointer("/spec/drivers").and_then(Value::as_array);
        let new_drivers = object.pointer("/spec/drivers").and_then(Value::as_array);
        for before in old_drivers.into_iter().flatten() {
            for after in new_drivers.into_iter().flatten() {
                if before.get("name") == after.get("name") {
                    check_unchanged("spec.drivers", after, before, &mut errors);
                }
            }
        }
    }
    Ok(errors)
}

fn validate_attachment(object: &Value, old: Option<&Value>) -> Result<Vec<FieldError>> {
    let (attachment, mut errors) = decode_named::<VolumeAttachment>(object)?;
    let spec = &attachment.spec;
    if spec.attacher.is_empty() {
        errors.push(FieldError::required("spec.attacher", ""));
    } else {
        check_subdomain("spec.attacher", &spec.attacher, &mut errors);
    }
    match (
        &spec.source.persistent_volume_name,
        &spec.source.inline_volume_spec,
    ) {
        (None, None) => errors.push(FieldError::required(
            "spec.source",
            "must specify exactly one of inlineVolumeSpec and persistentVolumeName",
        )),
        (Some(_), Some(_)) => errors.push(FieldError::forbidden(
            "spec.source",
            "must specify exactly one of inlineVolumeSpec and persistentVolumeName",
        )),
        (Some(name), None) if name.is_empty() => errors.push(FieldError::required(
            "spec.source.persistentVolumeName",
            "must specify non empty persistentVolumeName",
        )),
        (Some(name), None) => {
            check_subdomain_value("spec.source.persistentVolumeName", name, &mut errors);
        }
        (None, Some(_)) => {}
    }
    check_subdomain_value("spec.nodeName", &spec.node_name, &mut errors);
    if let Some(status) = &attachment.status {
        let size: usize = status
            .attachment_metadata
            .iter()
            .flatten()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if size > MAX_METADATA_BYTES {
            errors.push(FieldError::invalid(
                "status.attachmentMetadata",
                size,
                format!("must have at most {MAX_METADATA_BYTES} bytes"),
            ));
        }
        check_volume_error(
            "status.attachError",
            status.attach_error.as_ref(),
            &mut errors,
        );
        check_volume_error(
            "status.detachError",
            status.detach_error.as_ref(),
            &mut errors,
        );
    }
    if let Some(old) = old {
        check_unchanged(
            "spec",
            object.get("spec").unwrap_or(&Value::Null),
            old.get("spec").unwrap_or(&Value::Null),
            &mut errors,
        );
    }
    Ok(errors)
}

/// A field that names another object: a DNS-1123 subdomain, where empty is invalid
/// (not "required", as for an object's own name).
fn check_subdomain_value(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    if value.is_empty() {
        errors.push(FieldError::invalid(field, "", SUBDOMAIN_MESSAGE));
    } else {
        check_subdomain(field, value, errors);
    }
}

fn check_volume_error(field: &str, error: Option<&VolumeError>, errors: &mut Vec<FieldError>) {
    let Some(error) = error else {
        return;
    };
    if error
        .message
        .as_ref()
        .is_some_and(|m| m.len() > MAX_ERROR_MESSAGE)
    {
        errors.push(FieldError::invalid(
            format!("{field}.message"),
            "",
            format!("may not be more than {MAX_ERROR_MESSAGE} bytes"),
        ));
    }
    if let Some(code) = error.error_code
        && code < 0
    {
        errors.push(FieldError::invalid(
            format!("{field}.errorCode"),
            code,
            format!("must be between 0 and {}, inclusive", i32::MAX),
        ));
    }
}

fn validate_capacity(object: &Value, old: Option<&Value>) -> Result<Vec<FieldError>> {
    let (capacity, mut errors) = decode_named::<CSIStorageCapacity>(object)?;
    if let Some(selector) = &capacity.node_topology {
        check_selector("nodeTopology", selector, &mut errors);
    }
    check_subdomain_value(
        "storageClassName",
        &capacity.storage_class_name,
        &mut errors,
    );
    for (field, quantity) in [
        ("capacity", &capacity.capacity),
        ("maximumVolumeSize", &capacity.maximum_volume_size),
    ] {
        if let Some(quantity) = quantity {
            check_nonnegative_quantity(field, &quantity.0, &mut errors);
        }
    }
    // The inputs of CSI GetCapacity are immutable.
    if let Some(old) = old {
        for field in ["nodeTopology", "storageClassName"] {
            check_unchanged(
                field,
                object.get(field).unwrap_or(&Value::Null),
                old.get(field).unwrap_or(&Value::Null),
                &mut errors,
            );
        }
    }
    Ok(errors)
}

fn validate_attributes_class(object: &Value, old: Option<&Value>) -> Result<Vec<FieldError>> {
    let (class, mut errors) = decode_named::<VolumeAttributesClass>(object)?;
    if class.driver_name.is_empty() {
        errors.push(FieldError::required("driverName", ""));
    } else {
        check_qualified_name("driverName", &class.driver_name.to_lowercase(), &mut errors);
    }
    let parameters = class.parameters.unwrap_or_default();
    if parameters.len() > MAX_PARAMETERS {
        errors.push(FieldError::invalid(
            "parameters",
            parameters.len(),
            format!("must have at most {MAX_PARAMETERS} items"),
        ));
    } else if parameters.is_empty() {
        errors.push(FieldError::required(
            "parameters",
            "must contain at least one key/value pair",
        ));
    }
    if parameters.keys().any(String::is_empty) {
        errors.push(FieldError::invalid(
            "parameters",
            "",
            "field can not be empty.",
        ));
    }
    let size: usize = parameters.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_METADATA_BYTES {
        errors.push(FieldError::invalid(
            "parameters",
            size,
            format!("must have at most {MAX_METADATA_BYTES} bytes"),
        ));
    }
    if let Some(old) = old {
        for field in ["driverName", "parameters"] {
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

fn csi_node_cells(object: &Value) -> Vec<Value> {
    let drivers = object
        .pointer("/spec/drivers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    vec![
        json!(meta::name(object)),
        json!(drivers),
        table::age(object),
    ]
}

fn attachment_cells(object: &Value) -> Vec<Value> {
    let attached = object
        .pointer("/status/attached")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    vec![
        json!(meta::name(object)),
        json!(text(object, "/spec/attacher")),
        json!(text(object, "/spec/source/persistentVolumeName")),
        json!(text(object, "/spec/nodeName")),
        json!(attached),
        table::age(object),
    ]
}

fn capacity_cells(object: &Value) -> Vec<Value> {
    let capacity = match text(object, "/capacity") {
        c if c.is_empty() => "<unset>".to_string(),
        c => c,
    };
    vec![
        json!(meta::name(object)),
        json!(text(object, "/storageClassName")),
        json!(capacity),
    ]
}

fn attributes_class_cells(object: &Value) -> Vec<Value> {
    vec![
        json!(meta::name(object)),
        json!(text(object, "/driverName")),
        table::age(object),
    ]
}

#[cfg(test)]
mod tests;
