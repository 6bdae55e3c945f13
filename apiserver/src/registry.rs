//! The resources the server serves. A kind is added by describing it here and
//! giving it a `Behaviour` in `resources/`; the handlers are the same for all.

use serde_json::Value;

use crate::error::{ApiError, Result};
use crate::resources;
use crate::store::Reader;
use crate::table::Column;
use crate::validation::FieldError;

/// One served kind: its names, as discovery lists them, and its behaviour.
pub struct Resource {
    /// The API group; "" for the core group.
    pub group: &'static str,
    /// The API version served.
    pub version: &'static str,
    /// The kind (`PersistentVolume`).
    pub kind: &'static str,
    /// The resource name in paths (`persistentvolumes`).
    pub plural: &'static str,
    /// The singular name (`persistentvolume`).
    pub singular: &'static str,
    /// kubectl's short names (`pv`).
    pub short_names: &'static [&'static str],
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Has a /status subresource: the main endpoint ignores status, /status ignores the rest.
    pub has_status: bool,
    /// What this kind does differently from the others.
    pub behaviour: Behaviour,
}

/// What differs between kinds: defaulting, validation, printing, selectable fields.
pub struct Behaviour {
    /// Decodes into the upstream type and back: drops unknown fields as upstream's
    /// decoder does, and turns a wrongly typed field into a 400.
    pub decode: fn(&Value) -> Result<Value>,
    /// Rewrites a decoded object into its stored form, after the unknown-field check
    /// (a Secret's write-only `stringData` is merged into `data`).
    pub normalize: fn(Value) -> Result<Value>,
    /// Defaulting and admission at create, with read access to other objects.
    pub prepare_create: fn(&mut Value, &dyn Reader) -> Result<()>,
    /// Checks a new object (and, on update, the old one); decoding errors are 400s.
    pub validate: fn(&Value, Option<&Value>) -> Result<Vec<FieldError>>,
    /// `kubectl get` columns and the cells of one row.
    pub columns: &'static [Column],
    /// The cells of an object's row, one per column.
    pub cells: fn(&Value) -> Vec<Value>,
    /// Field selector labels beyond metadata.name and metadata.namespace, with the
    /// JSON pointer each reads.
    pub fields: &'static [(&'static str, &'static str)],
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.group_resource())
    }
}

impl Resource {
    /// `version` or `group/version`, as objects carry it.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural` or `plural.group`, as upstream names resources in messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The key prefix of this resource's objects, narrowed to a namespace when given.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        let group = self.store_group();
        match namespace {
            Some(ns) if self.namespaced => format!("{group}/{}/{ns}/", self.plural),
            _ => format!("{group}/{}/", self.plural),
        }
    }

    /// The store key of one object (`namespace` "" for a cluster-scoped kind).
    pub fn key(&self, namespace: &str, name: &str) -> String {
        format!("{}/{}/{namespace}/{name}", self.store_group(), self.plural)
    }

    /// The group as keys name it: `core` for the core group.
    fn store_group(&self) -> &'static str {
        if self.group.is_empty() {
            "core"
        } else {
            self.group
        }
    }

    /// The 404 for an object of this kind named `name`.
    pub fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(&self.group_resource(), name)
    }

    /// The value of a field-selector label for an object, or None if unsupported.
    pub fn field_value<'v>(&self, object: &'v Value, label: &str) -> Option<&'v str> {
        let pointer = match label {
            "metadata.name" => "/metadata/name",
            "metadata.namespace" => "/metadata/namespace",
            _ => self.behaviour.fields.iter().find(|(l, _)| *l == label)?.1,
        };
        Some(
            object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or(""),
        )
    }

    /// Whether `label` is a field selector this kind supports.
    pub fn supports_field(&self, label: &str) -> bool {
        matches!(label, "metadata.name" | "metadata.namespace")
            || self.behaviour.fields.iter().any(|(l, _)| *l == label)
    }
}

/// Every served resource.
pub fn all() -> &'static [Resource] {
    resources::ALL
}

/// The resource served at `group`/`version`/`plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    all()
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The Namespace resource.
pub fn namespaces() -> &'static Resource {
    &resources::core::NAMESPACE
}

/// The API groups (with versions) in the order discovery lists them.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for resource in all() {
        if !resource.group.is_empty() && !groups.contains(&(resource.group, resource.version)) {
            groups.push((resource.group, resource.version));
        }
    }
    groups
}
