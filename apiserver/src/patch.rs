//! The three patch formats: JSON merge patch, JSON patch, strategic merge patch.

use serde_json::{Map, Value};

use crate::error::{ApiError, Result};

/// Operations one JSON patch may hold, as kube-apiserver allows.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// What one JSON patch may copy in all, in bytes of JSON: kube-apiserver's bound (its
/// request body limit). Without it each `copy` of the root doubles the object, so a
/// patch of a few hundred bytes asks for gigabytes.
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 3 << 20;

/// A PATCH body's kind, by its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/json-patch+json` (RFC 6902, as evanphx/json-patch applies it).
    Json,
    /// `application/strategic-merge-patch+json`.
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
        let Some(operation) = as_kube_apiserver_applies(&patched, operation) else {
            continue;
        };
        json_patch::patch_unsafe(&mut patched, std::slice::from_ref(&operation))
            .map_err(|e| ApiError::PatchFailed(format!("operation {index}: {e}")))?;
    }
    *target = patched;
    Ok(())
}

/// kube-apiserver applies JSON patches with evanphx/json-patch v4, which differs from
/// RFC 6902 where clients rely on it (csi-snapshotter replaces `/status` of an object
/// that has none yet). Rewritten here, against the document as it is at this step:
/// - `replace` of a missing member of an existing object sets it (as `add` does);
/// - `test` of a missing member against `null` passes (a missing member is null there);
/// - a negative array index counts from the end (`-1` is the last element; for `add`,
///   `-1` appends), in every segment of `path` and `from`.
///
/// None means the operation has nothing to do.
fn as_kube_apiserver_applies(
    document: &Value,
    operation: &json_patch::PatchOperation,
) -> Option<json_patch::PatchOperation> {
    use json_patch::PatchOperation as Op;
    let mut operation = operation.clone();
    match &mut operation {
        Op::Add(add) => add.path = count_from_end(document, &add.path, true),
        Op::Remove(remove) => remove.path = count_from_end(document, &remove.path, false),
        Op::Replace(replace) => {
            replace.path = count_from_end(document, &replace.path, false);
            if let Some((parent, key)) = parent_of(document, &replace.path)
                && parent.as_object().is_some_and(|m| !m.contains_key(&key))
            {
                return Some(Op::Add(json_patch::AddOperation {
                    path: replace.path.clone(),
                    value: replace.value.clone(),
                }));
            }
        }
        Op::Move(moved) => {
            moved.from = count_from_end(document, &moved.from, false);
            moved.path = count_from_end(document, &moved.path, true);
        }
        Op::Copy(copy) => {
            copy.from = count_from_end(document, &copy.from, false);
            copy.path = count_from_end(document, &copy.path, true);
        }
        Op::Test(test) => {
            test.path = count_from_end(document, &test.path, false);
            if test.value.is_null()
                && let Some((parent, key)) = parent_of(document, &test.path)
                && parent.as_object().is_some_and(|m| !m.contains_key(&key))
            {
                return None;
            }
        }
    }
    Some(operation)
}

/// The container a pointer's last token is in, and that token; None for the root or a
/// parent that does not exist.
fn parent_of<'v>(
    document: &'v Value,
    path: &json_patch::jsonptr::Pointer,
) -> Option<(&'v Value, String)> {
    let (parent, last) = path.split_back()?;
    let container = document.pointer(parent.as_str())?;
    Some((container, last.decoded().into_owned()))
}

/// `path` with each negative index into an array turned into the index it counts from
/// the end; an index that reaches before the start is left for the patch to refuse.
fn count_from_end(
    document: &Value,
    path: &json_patch::jsonptr::Pointer,
    adding: bool,
) -> json_patch::jsonptr::PointerBuf {
    let mut tokens: Vec<String> = path.tokens().map(|t| t.decoded().into_owned()).collect();
    let count = tokens.len();
    let mut at = Some(document);
    for (i, token) in tokens.iter_mut().enumerate() {
        let Some(here) = at else {
            break;
        };
        if let (Value::Array(items), Ok(index)) = (here, token.parse::<i64>())
            && index < 0
        {
            let last = i + 1 == count;
            let size = items.len() as i64 + i64::from(last && adding);
            if index >= -size {
                *token = (index + size).to_string();
            }
        }
        at = match here {
            Value::Object(map) => map.get(token.as_str()),
            Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
    }
    json_patch::jsonptr::PointerBuf::from_tokens(
        tokens
            .iter()
            .map(|t| json_patch::jsonptr::Token::new(t.as_str())),
    )
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

    /// kube-apiserver's JSON patch library (evanphx/json-patch v4): cases from its own
    /// tests (patch_test.go's Cases, BadCases and TestCases), and what the CSI sidecars
    /// send. None: the patch is refused.
    #[test]
    fn json_patch_as_kube_apiserver_applies_it() {
        let cases: Vec<(&str, Value, Value, Option<Value>)> = vec![
            // What csi-snapshotter and snapshot-controller send to objects without the field.
            (
                "replace of a missing member adds it",
                json!({"metadata": {"name": "s"}}),
                json!([{"op": "replace", "path": "/metadata/annotations", "value": {"a": "b"}}]),
                Some(json!({"metadata": {"name": "s", "annotations": {"a": "b"}}})),
            ),
            (
                "replace of a missing status adds it",
                json!({"spec": {}}),
                json!([{"op": "replace", "path": "/status", "value": {"readyToUse": false}}]),
                Some(json!({"spec": {}, "status": {"readyToUse": false}})),
            ),
            (
                "replace under a missing parent is refused",
                json!({"name": {"foo": "bat", "qux": "bum"}}),
                json!([{"op": "replace", "path": "/foo/bar", "value": "baz"}]),
                None,
            ),
            (
                "replace past the end of a list is refused",
                json!({"foo": ["bar", "baz"]}),
                json!([{"op": "replace", "path": "/foo/2", "value": "bum"}]),
                None,
            ),
            (
                "replace of an existing member",
                json!({"baz": "qux", "foo": "bar"}),
                json!([{"op": "replace", "path": "/baz", "value": "boo"}]),
                Some(json!({"baz": "boo", "foo": "bar"})),
            ),
            (
                "replace in a nested list",
                json!({"foo": ["bar", "qux", "baz"]}),
                json!([{"op": "replace", "path": "/foo/1", "value": "bum"}]),
                Some(json!({"foo": ["bar", "bum", "baz"]})),
            ),
            (
                "add at -1 appends",
                json!({"foo": ["bar", "baz"]}),
                json!([{"op": "add", "path": "/foo/-1", "value": "qux"}]),
                Some(json!({"foo": ["bar", "baz", "qux"]})),
            ),
            (
                "add before the start is refused",
                json!({"foo": ["bar", "baz"]}),
                json!([{"op": "add", "path": "/foo/-4", "value": "bum"}]),
                None,
            ),
            (
                "remove of -1 takes the last",
                json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
                json!([{"op": "remove", "path": "/metadata/finalizers/-1"}]),
                Some(json!({"metadata": {"finalizers": ["a", "b"]}})),
            ),
            (
                "replace of -2 counts from the end",
                json!({"foo": ["a", "b", "c"]}),
                json!([{"op": "replace", "path": "/foo/-2", "value": "x"}]),
                Some(json!({"foo": ["a", "x", "c"]})),
            ),
            (
                "remove of -1 from an empty list is refused",
                json!({"foo": []}),
                json!([{"op": "remove", "path": "/foo/-1"}]),
                None,
            ),
            (
                "remove of -2 from one element is refused",
                json!({"foo": ["bar"]}),
                json!([{"op": "remove", "path": "/foo/-2"}]),
                None,
            ),
            (
                "remove of - is refused",
                json!({"foo": []}),
                json!([{"op": "remove", "path": "/foo/-"}]),
                None,
            ),
            (
                "remove of a missing member is refused",
                json!({"a": {"b": {"d": 1}}}),
                json!([{"op": "remove", "path": "/a/b/c"}]),
                None,
            ),
            (
                "add under a missing parent is refused",
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/baz/bat", "value": "qux"}]),
                None,
            ),
            (
                "move of a missing member is refused",
                json!({"a": {"b": {"d": 1}}}),
                json!([{"op": "move", "from": "/a/b/c", "path": "/a/b/e"}]),
                None,
            ),
            (
                "move between objects",
                json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}),
                json!([{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}]),
                Some(json!({"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}})),
            ),
            (
                "copy within lists",
                json!({"foo": ["bar", "qux", "baz"], "bar": ["qux", "baz"]}),
                json!([{"op": "copy", "from": "/foo/0", "path": "/bar/0"}]),
                Some(json!({"foo": ["bar", "qux", "baz"], "bar": ["bar", "qux", "baz"]})),
            ),
            (
                "tests that hold let the patch apply",
                json!({"baz": "qux", "foo": ["a", 2, "c"]}),
                json!([
                    {"op": "test", "path": "/baz", "value": "qux"},
                    {"op": "test", "path": "/foo/1", "value": 2},
                    {"op": "add", "path": "/ok", "value": true}
                ]),
                Some(json!({"baz": "qux", "foo": ["a", 2, "c"], "ok": true})),
            ),
            (
                "a failed test refuses the patch",
                json!({"baz": "qux", "foo": ["a", 2, "c"]}),
                json!([{"op": "test", "path": "/foo/1", "value": "c"}]),
                None,
            ),
            (
                "a missing member tests as null",
                json!({"baz": "qux"}),
                json!([
                    {"op": "test", "path": "/foo", "value": null},
                    {"op": "add", "path": "/foo", "value": 1}
                ]),
                Some(json!({"baz": "qux", "foo": 1})),
            ),
            (
                "a null member tests as null",
                json!({"foo": null}),
                json!([{"op": "test", "path": "/foo", "value": null}]),
                Some(json!({"foo": null})),
            ),
            (
                "an empty object is not null",
                json!({"foo": {}}),
                json!([{"op": "test", "path": "/foo", "value": null}]),
                None,
            ),
            (
                "a missing member is not 42",
                json!({"baz": "qux"}),
                json!([{"op": "test", "path": "/foo", "value": 42}]),
                None,
            ),
            (
                "escaped pointers",
                json!({"baz/foo": "qux"}),
                json!([{"op": "test", "path": "/baz~1foo", "value": "qux"}]),
                Some(json!({"baz/foo": "qux"})),
            ),
        ];
        for (what, target, patch, expected) in cases {
            let result = patched(PatchType::Json, target, patch);
            match expected {
                Some(expected) => assert_eq!(result, expected, "{what}"),
                None => assert!(result.get("error").is_some(), "{what}: {result}"),
            }
        }
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
