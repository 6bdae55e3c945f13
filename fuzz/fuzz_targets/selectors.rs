//! Label and field selectors (`apiserver::selectors`) as they arrive in a query string.
//!
//! Input: a header line, `label` or a resource's plural (`persistentvolumes`...), then
//! the selector text. Checks: no panic; memory proportional to the input; a label
//! selector treats absent labels as empty labels; a field selector's `exact_name`
//! names an object it can match.
#![no_main]

use apiserver::registry;
use apiserver::selectors::{FieldSelector, LabelSelector};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use stowage_fuzz::{assert_bounded, header, peak_allocation};

fuzz_target!(|data: &[u8]| {
    let (head, body) = header(data);
    let (Ok(head), Ok(text)) = (std::str::from_utf8(head), std::str::from_utf8(body)) else {
        return;
    };
    if head == "label" {
        label(text);
    } else if let Some(resource) = registry::all().iter().find(|r| r.plural == head) {
        field(text, resource);
    }
});

fn label(text: &str) {
    let (parsed, peak) = peak_allocation(|| LabelSelector::parse(text));
    assert_bounded(peak, text.len(), 96, 4096);
    let Ok(selector) = parsed else {
        return;
    };
    assert_eq!(selector.matches(None), selector.matches(Some(&Map::new())));
    // Labels taken from the selector's own words, so equality terms can hold.
    let labels: Map<String, Value> = text
        .split([',', ' ', '(', ')'])
        .filter_map(|term| term.split_once('='))
        .map(|(k, v)| (k.trim_matches('!').to_string(), json!(v)))
        .collect();
    let _ = selector.matches(Some(&labels));
}

fn field(text: &str, resource: &'static registry::Resource) {
    let (parsed, peak) = peak_allocation(|| FieldSelector::parse(text, resource));
    assert_bounded(peak, text.len(), 96, 4096);
    let Ok(selector) = parsed else {
        return;
    };
    let _ = selector.matches(resource, &json!({}));
    if let Some(name) = selector.exact_name() {
        let object = json!({"metadata": {"name": name}});
        assert_eq!(resource.field_value(&object, "metadata.name"), Some(name));
    }
}
