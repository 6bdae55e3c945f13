//! The three patch formats: JSON merge patch, JSON patch, strategic merge patch.

use serde_json::{Map, Value};

use crate::error::{ApiError, Result};

/// Operations one JSON patch may hold, as kube-apiserver allows.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// What one JSON patch may copy in all, in bytes of JSON: kube-apiserver's bound (its
/// request body limit). Without it each `copy` of the root doubles the object, so a
/// patch of a few hundred bytes asks for gigabytes.
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 3 << 20;

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

/// Applies `patch` to `target` in place; on an error `target` is left as it was.
pub fn apply(kind: PatchType, target: &mut Value, patch: &[u8]) -> Result<()> {
    match kind {
        PatchType::Json => {
            let operations: json_patch::Patch = serde_json::from_slice(patch)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            apply_json_patch(target, &operations)
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

/// Applies the operations to a copy, counting what `copy` operations duplicate, and
/// keeps the copy only when every operation applied. json-patch's own rollback is not
/// used: it failed to restore a value after a failed `move`, and it panics when a
/// rollback step fails.
fn apply_json_patch(target: &mut Value, operations: &[json_patch::PatchOperation]) -> Result<()> {
    if operations.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(ApiError::TooLarge {
            limit: MAX_JSON_PATCH_OPERATIONS,
        });
    }
    let mut patched = target.clone();
    let mut copied = 0usize;
    for (index, operation) in operations.iter().enumerate() {
        if let json_patch::PatchOperation::Copy(copy) = operation {
            let size = patched.pointer(copy.from.as_str()).map_or(0, json_size);
            copied = copied.saturating_add(size);
            if copied > MAX_JSON_PATCH_COPY_BYTES {
                return Err(ApiError::PatchFailed(format!(
                    "operation {index} would copy more than {MAX_JSON_PATCH_COPY_BYTES} bytes in all"
                )));
            }
        }
        json_patch::patch_unsafe(&mut patched, std::slice::from_ref(operation))
            .map_err(|e| ApiError::PatchFailed(format!("operation {index}: {e}")))?;
    }
    *target = patched;
    Ok(())
}

/// The length of `value` written as JSON, counted without writing it anywhere.
fn json_size(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        // Writing to a counter cannot fail; were it to, count as too large.
        Err(_) => usize::MAX,
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
    fn json_patch_copies_are_bounded() {
        // Each copy of the root into a new field doubles the object: 40 copies, 2^40 times it.
        let doubling: Vec<Value> = (0..40)
            .map(|i| json!({"op": "copy", "from": "", "path": format!("/b{i}")}))
            .collect();
        let target = json!({"a": "x".repeat(1024)});
        let result = patched(PatchType::Json, target, Value::Array(doubling));
        let error = result["error"].as_str().unwrap_or_default();
        assert!(error.contains("would copy more than"), "{result}");
    }

    #[test]
    fn json_patch_operations_are_bounded() {
        let many =
            vec![json!({"op": "test", "path": "", "value": {}}); MAX_JSON_PATCH_OPERATIONS + 1];
        let result = patched(PatchType::Json, json!({}), Value::Array(many));
        assert_eq!(
            result["error"],
            json!(format!(
                "Request entity too large: limit is {MAX_JSON_PATCH_OPERATIONS}"
            ))
        );
    }

    #[test]
    fn a_failed_json_patch_leaves_the_object_as_it_was() {
        // json-patch's rollback did not restore the moved label (a fuzzer found it).
        let mut target = json!({"metadata": {"labels": {"app": "web"}}});
        let before = target.clone();
        let patch =
            json!([{"op": "move", "from": "/metadata/labels/app", "path": "/missing/name"}]);
        let body = serde_json::to_vec(&patch).unwrap_or_default();
        assert!(apply(PatchType::Json, &mut target, &body).is_err());
        assert_eq!(target, before);
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
