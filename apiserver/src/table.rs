//! Server-side printing: the meta.k8s.io/v1 Table that `kubectl get` asks for.

use serde_json::{Value, json};

use crate::error::{ApiError, Result};
use crate::meta;
use crate::registry::Resource;

/// One column of a kind's Table, as a columnDefinition.
pub struct Column {
    /// The header kubectl prints.
    pub name: &'static str,
    /// The OpenAPI type of its cells (`string`, `integer`, `boolean`, `date`).
    pub kind: &'static str,
    /// The OpenAPI format (`name` for the name column), else "".
    pub format: &'static str,
    /// What the column shows.
    pub description: &'static str,
    /// 0 shows by default; 1 only with `-o wide`.
    pub priority: u8,
}

impl Column {
    /// A column shown by default, without a format.
    pub const fn new(name: &'static str, kind: &'static str, description: &'static str) -> Self {
        Self {
            name,
            kind,
            format: "",
            description,
            priority: 0,
        }
    }

    /// The Name column every kind starts with.
    pub const fn name() -> Self {
        Self {
            name: "Name",
            kind: "string",
            format: "name",
            description: "Name must be unique within a namespace.",
            priority: 0,
        }
    }

    /// The Age column most kinds end with.
    pub const fn age() -> Self {
        Self::new(
            "Age",
            "string",
            "CreationTimestamp is a timestamp representing the server time when this object was created.",
        )
    }

    /// The column, shown only with `-o wide`.
    pub const fn wide(self) -> Self {
        Self {
            priority: 1,
            ..self
        }
    }
}

/// Whether the client asked for a Table (kubectl's Accept header does).
pub fn wanted(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// What each row of a Table carries (the `includeObject` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object: the cells only.
    None,
    /// A PartialObjectMetadata: upstream's default.
    #[default]
    Metadata,
    /// The whole object, which `kubectl get --sort-by` sorts by.
    Object,
}

impl IncludeObject {
    /// The `includeObject` parameter's value; unset means `Metadata`.
    pub fn parse(value: Option<&str>) -> Result<Self> {
        match value {
            None | Some("") | Some("Metadata") => Ok(Self::Metadata),
            Some("None") => Ok(Self::None),
            Some("Object") => Ok(Self::Object),
            Some(other) => Err(ApiError::bad_request(format!(
                "includeObject: Unsupported value: {other:?}: supported values: \"Metadata\", \"None\", \"Object\""
            ))),
        }
    }

    fn row_object(self, object: &Value) -> Value {
        match self {
            Self::None => Value::Null,
            Self::Metadata => json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object.get("metadata").cloned().unwrap_or(Value::Null),
            }),
            Self::Object => object.clone(),
        }
    }
}

/// A Table of `objects`, each row carrying what `include` asks for.
pub fn build(
    resource: &Resource,
    objects: &[Value],
    list_meta: Value,
    include: IncludeObject,
) -> Value {
    let columns: Vec<Value> = resource
        .behaviour
        .columns
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.kind, "format": c.format,
                   "description": c.description, "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut row = json!({"cells": (resource.behaviour.cells)(object)});
            let carried = include.row_object(object);
            if !carried.is_null() {
                row["object"] = carried;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// The age cell of an object.
pub fn age(object: &Value) -> Value {
    Value::String(meta::age(meta::string(object, "creationTimestamp")))
}

/// The scalar at `pointer` as a cell's text; "" when absent or not a scalar.
pub fn text(object: &Value, pointer: &str) -> String {
    match object.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// `ReadWriteOnce` -> `RWO`, as `kubectl get pv` abbreviates access modes.
pub fn access_modes(object: &Value, pointer: &str) -> String {
    let modes = object.pointer(pointer).and_then(Value::as_array);
    modes
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|mode| match mode {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The phase, or `Terminating` once deletion has begun.
pub fn phase(object: &Value) -> String {
    if meta::is_deleting(object) {
        "Terminating".into()
    } else {
        text(object, "/status/phase")
    }
}

/// An empty string becomes `<none>`, as kubectl shows unset values.
pub fn or_none(value: String) -> Value {
    if value.is_empty() {
        Value::String("<none>".into())
    } else {
        Value::String(value)
    }
}
