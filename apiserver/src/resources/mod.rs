//! The kinds served, one module per API group.

pub mod coordination;
pub mod core;
pub mod csi;
pub mod groupsnapshot;
pub mod rbac;
pub mod secret;
pub mod snapshot;
pub mod storage;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ApiError, Result};
use crate::meta;
use crate::registry::{Behaviour, Resource};
use crate::store::Reader;
use crate::table::{self, Column};
use crate::validation::{FieldError, check_subdomain};

/// Every served kind, in discovery's order.
pub static ALL: &[Resource] = &[
    core::PERSISTENT_VOLUME,
    core::PERSISTENT_VOLUME_CLAIM,
    core::EVENT,
    core::NODE,
    core::NAMESPACE,
    core::POD,
    secret::SECRET,
    storage::STORAGE_CLASS,
    storage::CSI_DRIVER,
    csi::CSI_NODE,
    csi::VOLUME_ATTACHMENT,
    csi::CSI_STORAGE_CAPACITY,
    csi::VOLUME_ATTRIBUTES_CLASS,
    coordination::LEASE,
    rbac::ROLE,
    rbac::CLUSTER_ROLE,
    rbac::ROLE_BINDING,
    rbac::CLUSTER_ROLE_BINDING,
    snapshot::VOLUME_SNAPSHOT,
    snapshot::VOLUME_SNAPSHOT_CONTENT,
    snapshot::VOLUME_SNAPSHOT_CLASS,
    groupsnapshot::VOLUME_GROUP_SNAPSHOT,
    groupsnapshot::VOLUME_GROUP_SNAPSHOT_CONTENT,
    groupsnapshot::VOLUME_GROUP_SNAPSHOT_CLASS,
];

/// Decodes into the upstream type, so a wrongly typed field is a 400 as upstream.
pub fn typed<T: DeserializeOwned>(object: &Value) -> Result<T> {
    T::deserialize(object).map_err(|e| ApiError::bad_request(format!("decoding body: {e}")))
}

/// Decodes into the upstream type and encodes again, which drops unknown fields.
pub fn roundtrip<T: DeserializeOwned + Serialize>(object: &Value) -> Result<Value> {
    let decoded: T = typed(object)?;
    serde_json::to_value(decoded).map_err(ApiError::storage)
}

/// Fields of `original` that the decoded form lost: what upstream calls unknown fields.
pub fn unknown_fields(original: &Value, decoded: &Value, path: &str, found: &mut Vec<String>) {
    match (original, decoded) {
        (Value::Object(given), Value::Object(kept)) => {
            for (field, value) in given {
                let at = if path.is_empty() {
                    field.clone()
                } else {
                    format!("{path}.{field}")
                };
                match kept.get(field) {
                    Some(inner) => unknown_fields(value, inner, &at, found),
                    None if value.is_null() => {}
                    None => found.push(at),
                }
            }
        }
        (Value::Array(given), Value::Array(kept)) => {
            for (i, (value, inner)) in given.iter().zip(kept).enumerate() {
                unknown_fields(value, inner, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

fn no_defaults(_: &mut Value, _: &dyn Reader) -> Result<()> {
    Ok(())
}

/// Only the name is checked: for kinds Stowage stores but does not interpret.
fn validate_name_only(object: &Value, _: Option<&Value>) -> Result<Vec<FieldError>> {
    Ok(name_errors(object))
}

/// Whether the object's name is a DNS subdomain, as most kinds' names must be.
fn name_errors(object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check_subdomain("metadata.name", meta::name(object), &mut errors);
    errors
}

/// Decodes `object` into its upstream type and checks its name: where the validation
/// of most kinds starts; the errors found so far come with the decoded object.
fn decode_named<T: DeserializeOwned>(object: &Value) -> Result<(T, Vec<FieldError>)> {
    Ok((typed(object)?, name_errors(object)))
}

/// The names of the fields `errors` (a validation's outcome) points at, in order.
#[cfg(test)]
fn error_fields(errors: Result<Vec<FieldError>>) -> Vec<String> {
    errors
        .expect("decodes")
        .into_iter()
        .map(|e| e.field)
        .collect()
}

const NAME_AGE: &[Column] = &[Column::name(), Column::age()];

fn name_age_cells(object: &Value) -> Vec<Value> {
    vec![Value::String(meta::name(object).into()), table::age(object)]
}

/// Behaviour of a kind with no defaults, name-only validation and NAME/AGE columns.
const PLAIN: Behaviour = Behaviour {
    decode: |object| Ok(object.clone()),
    normalize: Ok,
    prepare_create: no_defaults,
    validate: validate_name_only,
    columns: NAME_AGE,
    cells: name_age_cells,
    fields: &[],
};

/// Sets `object[path...] = value` when it is absent, creating objects on the way.
fn default_at(object: &mut Value, path: &[&str], value: Value) {
    let mut at = object;
    for (i, segment) in path.iter().enumerate() {
        if !at.is_object() {
            return;
        }
        let last = i + 1 == path.len();
        let entry = &mut at[*segment];
        if last {
            if entry.is_null() {
                *entry = value;
            }
            return;
        }
        if entry.is_null() {
            *entry = Value::Object(Default::default());
        }
        at = entry;
    }
}
