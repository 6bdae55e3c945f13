//! core/v1 Secret: the credentials a StorageClass may name for the driver. Kept apart
//! from `core.rs` because it is the one kind whose values must never be echoed: the
//! table shows only the type and the number of keys, and errors name keys, not values.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};

use super::{PLAIN, decode_named, roundtrip, typed};
use crate::error::{ApiError, Result};
use crate::meta;
use crate::registry::{Behaviour, Resource};
use crate::table::{self, Column, text};
use crate::validation::FieldError;

/// Upstream's limit on the whole of a Secret's data.
const MAX_DATA_BYTES: usize = 1 << 20;

/// The Secret kind.
pub const SECRET: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Secret",
    plural: "secrets",
    singular: "secret",
    short_names: &[],
    namespaced: true,
    has_status: false,
    behaviour: Behaviour {
        decode: roundtrip::<Secret>,
        normalize: merge_string_data,
        validate: validate_secret,
        columns: &[
            Column::name(),
            Column::new("Type", "string", "The type of the secret"),
            Column::new("Data", "string", "The number of entries in the data"),
            Column::age(),
        ],
        cells: secret_cells,
        fields: &[("type", "/type")],
        ..PLAIN
    },
};

/// `stringData` is write-only: its entries replace those of `data`, as upstream
/// converts it; the type defaults to Opaque.
fn merge_string_data(object: Value) -> Result<Value> {
    let mut secret: Secret = typed(&object)?;
    if let Some(strings) = secret.string_data.take() {
        let data = secret.data.get_or_insert_default();
        for (key, value) in strings {
            data.insert(key, ByteString(value.into_bytes()));
        }
    }
    secret.type_.get_or_insert_with(|| "Opaque".into());
    serde_json::to_value(secret).map_err(ApiError::storage)
}

fn validate_secret(object: &Value, old: Option<&Value>) -> Result<Vec<FieldError>> {
    let (secret, mut errors) = decode_named::<Secret>(object)?;
    let data = secret.data.unwrap_or_default();
    for key in data.keys() {
        let valid = !key.is_empty()
            && key.len() <= 253
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            errors.push(FieldError::invalid(
                format!("data[{key}]"),
                key.as_str(),
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            ));
        }
    }
    let size: usize = data.iter().map(|(k, v)| k.len() + v.0.len()).sum();
    if size > MAX_DATA_BYTES {
        errors.push(FieldError::forbidden(
            "data",
            format!("Too long: may not be more than {MAX_DATA_BYTES} bytes"),
        ));
    }
    if let Some(old) = old
        && object.get("type") != old.get("type")
    {
        errors.push(FieldError::invalid(
            "type",
            object.get("type").cloned().unwrap_or(Value::Null),
            "field is immutable",
        ));
    }
    Ok(errors)
}

fn secret_cells(object: &Value) -> Vec<Value> {
    let entries = object
        .get("data")
        .and_then(Value::as_object)
        .map_or(0, |d| d.len());
    vec![
        json!(meta::name(object)),
        json!(text(object, "/type")),
        json!(entries),
        table::age(object),
    ]
}
