//! Object decoding, defaulting and validation of every served kind, through the verbs
//! the HTTP handlers call (`apiserver::objects::create` and `update`).
//!
//! Input: a header line with the resource's plural (`persistentvolumeclaims`...), then
//! the request body. Checks: no panic; memory proportional to the input; an object the
//! server accepted and stored, written back unchanged (a client's GET then PUT), is
//! accepted again and writes nothing, both on the object and on its status.
#![no_main]

use std::collections::BTreeMap;

use apiserver::error::Result;
use apiserver::objects::{self, FieldValidation, Location};
use apiserver::registry::{self, Resource};
use apiserver::store::{Mutation, Reader, Visit};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use stowage_fuzz::{assert_bounded, header, peak_allocation};

/// The store as a map: enough for the verbs, which only read through `Reader`.
#[derive(Default)]
struct Objects(BTreeMap<String, Value>);

impl Reader for Objects {
    fn get(&self, key: &str) -> Result<Option<Value>> {
        Ok(self.0.get(key).cloned())
    }

    fn scan(&self, prefix: &str, after: Option<&str>, visit: Visit<'_>) -> Result<()> {
        for (key, object) in self.0.range(prefix.to_string()..) {
            if !key.starts_with(prefix) {
                break;
            }
            if after.is_some_and(|a| key.as_str() <= a) {
                continue;
            }
            if !visit(key, object.clone()) {
                break;
            }
        }
        Ok(())
    }

    fn revision(&self) -> u64 {
        1
    }
}

fuzz_target!(|data: &[u8]| {
    let (plural, body) = header(data);
    let Some(resource) = registry::all()
        .iter()
        .find(|r| r.plural.as_bytes() == plural)
    else {
        return;
    };
    let Ok(object) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let mut store = Objects::default();
    let namespaces = registry::namespaces();
    store.0.insert(
        namespaces.key("", "default"),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
    );
    let namespace = if resource.namespaced { "default" } else { "" };
    let (created, peak) = peak_allocation(|| {
        for validation in [FieldValidation::Strict, FieldValidation::Warn] {
            let _ = objects::create(resource, namespace, object.clone(), validation, &store);
        }
        objects::create(resource, namespace, object, FieldValidation::Ignore, &store)
    });
    assert_bounded(peak, data.len(), 512, 1 << 20);
    let Ok(mutations) = created else {
        return;
    };
    let [Mutation::Put { key, object }] = mutations.as_slice() else {
        panic!("create gave {mutations:?}");
    };
    // As the store keeps it: stamped with a revision, through its JSON bytes.
    let mut stored = object.clone();
    stored["metadata"]["resourceVersion"] = json!("1");
    let bytes = serde_json::to_vec(&stored).unwrap_or_default();
    let Ok(stored) = serde_json::from_slice::<Value>(&bytes) else {
        panic!("a stored object does not read back: {bytes:?}");
    };
    store.0.insert(key.clone(), stored.clone());
    written_back_unchanged(resource, &store, &stored);
});

fn written_back_unchanged(resource: &'static Resource, store: &Objects, stored: &Value) {
    let location = Location {
        resource,
        namespace: stored["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        name: stored["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    };
    let statuses: &[bool] = if resource.has_status {
        &[false, true]
    } else {
        &[false]
    };
    for &status in statuses {
        match objects::update(
            &location,
            stored.clone(),
            status,
            FieldValidation::Strict,
            store,
        ) {
            Ok(mutations) => assert!(
                matches!(mutations.as_slice(), [Mutation::Keep(_)]),
                "an unchanged write (status: {status}) wrote {mutations:?}"
            ),
            Err(e) => panic!("an unchanged write (status: {status}) was refused: {e}"),
        }
    }
}
