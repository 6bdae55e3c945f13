//! The three patch formats: JSON merge patch, JSON patch, strategic merge patch.

use serde_json::{Map, Value};

use crate::error::{ApiError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
}

impl PatchType {
    /// From the request's Content-Type; server-side apply is not served.
    pub fn from_content_type(content_type: &str) -> Result<Self> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
            ))),
        }
    }
}

/// Applies `patch` to `target` in place.
pub fn apply(kind: PatchType, target: &mut Value, patch: &[u8]) -> Result<()> {
    match kind {
        PatchType::Json => {
            let operations: json_patch::Patch = serde_json::from_slice(patch)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(target, &operations).map_err(|e| ApiError::PatchFailed(e.to_string()))
        }
        PatchType::Merge => {
            let patch = parse_object(patch)?;
            json_patch::merge(target, &patch);
            Ok(())
        }
        PatchType::Strategic => {
            let patch = parse_object(patch)?;
            strategic_merge(target, &patch);
            Ok(())
        }
    }
}

fn parse_object(body: &[u8]) -> Result<Value> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid patch body: {e}")))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(ApiError::bad_request("a merge patch must be a JSON object"))
    }
}

/// The merge key of a list field that upstream merges element by element.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "conditions" | "addresses" => Some("type"),
        "ownerReferences" => Some("uid"),
        "containers" | "initContainers" | "volumes" | "env" | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ports" => Some("containerPort"),
        _ => None,
    }
}

/// List fields of scalars that upstream merges as sets.
fn is_set_list(field: &str) -> bool {
    field == "finalizers"
}

/// Strategic merge patch as far as the served kinds need: merge patch semantics,
/// keyed list merging, set lists, and the `$patch`, `$deleteFromPrimitiveList`,
/// `$setElementOrder` and `$retainKeys` directives.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch.clone();
        replacement.remove("$patch");
        *target = Value::Object(replacement);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(object) = target.as_object_mut() else {
        return;
    };
    for (field, change) in patch {
        if field.starts_with("$setElementOrder/") || field == "$retainKeys" || field == "$patch" {
            continue;
        }
        if let Some(list) = field.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(removed)) =
                (object.get_mut(list), change.as_array())
            {
                items.retain(|item| !removed.contains(item));
            }
            continue;
        }
        match change {
            Value::Null => {
                object.remove(field);
            }
            Value::Object(inner)
                if inner.get("$patch").and_then(Value::as_str) == Some("delete") =>
            {
                object.remove(field);
            }
            Value::Object(_) => {
                strategic_merge(object.entry(field.clone()).or_insert(Value::Null), change);
            }
            Value::Array(items) => {
                let current = object.entry(field.clone()).or_insert(Value::Null);
                merge_list(field, current, items);
            }
            scalar => {
                object.insert(field.clone(), scalar.clone());
            }
        }
    }
}

fn merge_list(field: &str, current: &mut Value, patch: &[Value]) {
    if let Some(key) = merge_key(field) {
        let mut items = current.as_array().cloned().unwrap_or_default();
        for change in patch {
            let id = change.get(key);
            let position = items
                .iter()
                .position(|item| id.is_some() && item.get(key) == id);
            let deleting = change.get("$patch").and_then(Value::as_str) == Some("delete");
            match (position, deleting) {
                (Some(at), true) => {
                    items.remove(at);
                }
                (None, true) => {}
                (Some(at), false) => strategic_merge(&mut items[at], change),
                (None, false) => {
                    let mut fresh = Value::Null;
                    strategic_merge(&mut fresh, change);
                    items.push(fresh);
                }
            }
        }
        *current = Value::Array(items);
    } else if is_set_list(field) {
        let mut items = current.as_array().cloned().unwrap_or_default();
        for change in patch {
            if !items.contains(change) {
                items.push(change.clone());
            }
        }
        *current = Value::Array(items);
    } else {
        *current = Value::Array(patch.to_vec());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(kind: PatchType, mut target: Value, patch: Value) -> Value {
        let body = serde_json::to_vec(&patch).unwrap_or_default();
        match apply(kind, &mut target, &body) {
            Ok(()) => target,
            Err(e) => json!({"error": e.to_string()}),
        }
    }

    #[test]
    fn merge_patch_replaces_lists_and_deletes_nulls() {
        let target = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]}});
        let result = patched(
            PatchType::Merge,
            target,
            json!({"metadata": {"labels": {"a": null, "c": "3"}, "finalizers": ["y"]}}),
        );
        assert_eq!(
            result,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}, "finalizers": ["y"]}})
        );
    }

    #[test]
    fn json_patch_applies_operations_and_reports_failures() {
        let target = json!({"spec": {"accessModes": ["ReadWriteOnce"]}});
        let result = patched(
            PatchType::Json,
            target.clone(),
            json!([{"op": "add", "path": "/spec/accessModes/-", "value": "ReadOnlyMany"}]),
        );
        assert_eq!(
            result["spec"]["accessModes"],
            json!(["ReadWriteOnce", "ReadOnlyMany"])
        );
        let failed = patched(
            PatchType::Json,
            target,
            json!([{"op": "test", "path": "/spec/x", "value": 1}]),
        );
        assert!(failed.get("error").is_some());
    }

    #[test]
    fn strategic_merge_merges_keyed_lists_and_finalizer_sets() {
        let target = json!({
            "metadata": {"finalizers": ["a"]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Resizing", "status": "True"}]}
        });
        let result = patched(
            PatchType::Strategic,
            target,
            json!({
                "metadata": {"finalizers": ["b"]},
                "status": {"conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "Resizing", "$patch": "delete"},
                    {"type": "New", "status": "True"}
                ]}
            }),
        );
        assert_eq!(result["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(
            result["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "New", "status": "True"}])
        );
    }

    #[test]
    fn strategic_merge_directives() {
        let target = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"x": 1, "y": 2}});
        let result = patched(
            PatchType::Strategic,
            target,
            json!({
                "$setElementOrder/metadata": [],
                "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]},
                "spec": {"$patch": "replace", "z": 3}
            }),
        );
        assert_eq!(
            result,
            json!({"metadata": {"finalizers": ["b"]}, "spec": {"z": 3}})
        );
    }

    #[test]
    fn unknown_patch_media_type_is_unsupported() {
        assert!(PatchType::from_content_type("application/apply-patch+yaml").is_err());
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8").ok(),
            Some(PatchType::Merge)
        );
    }
}
