//! The API server's protobuf decoder (`apiserver::protobuf`): client-go's
//! `application/vnd.kubernetes.protobuf` bodies, the k8s\0 magic and runtime.Unknown
//! envelope, then the object's message read through the schema into its JSON form.
//!
//! Input: a header line, a resource's plural (`persistentvolumeclaims`...) or
//! `deleteoptions`, then the request body as sent (magic included). Checks: no panic;
//! memory proportional to the input; the bare envelope decoder agrees with the object
//! decoder on what it accepts; whatever decodes re-encodes (as the answer to a GET
//! would be), as a watch frame too, and reads back as the same object.
#![no_main]

use apiserver::protobuf::{self, codec};
use apiserver::registry::{self, Resource};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use stowage_fuzz::{assert_bounded, header, peak_allocation};

const MAGIC: &[u8] = b"k8s\0";

fuzz_target!(|data: &[u8]| {
    let (head, body) = header(data);
    envelope(body);
    if head == b"deleteoptions" {
        let (decoded, peak) = peak_allocation(|| protobuf::decode_delete_options(body));
        assert_bounded(peak, body.len(), 64, 1 << 16);
        if let Ok(options) = decoded {
            assert!(options.is_object(), "DeleteOptions decoded as {options}");
        }
        return;
    }
    let Some(resource) = registry::all()
        .iter()
        .find(|r| r.plural.as_bytes() == head && protobuf::supports(r))
    else {
        return;
    };
    let (decoded, peak) = peak_allocation(|| protobuf::decode_object(resource, body));
    assert_bounded(peak, body.len(), 64, 1 << 16);
    if let Ok(object) = decoded {
        reencodes(resource, object);
    }
});

/// The envelope alone: no panic, and its parts lie within the body.
fn envelope(body: &[u8]) {
    let Some(inner) = body.strip_prefix(MAGIC) else {
        return;
    };
    if let Ok(unknown) = codec::decode_unknown(inner) {
        assert!(unknown.raw.len() <= inner.len());
        assert!(unknown.api_version.len() + unknown.kind.len() <= inner.len());
    }
}

/// An object read from a body is written as a GET's answer and a watch event would
/// write it, and that body reads back as the same object.
fn reencodes(resource: &Resource, mut object: Value) {
    // A client's envelope may leave these empty; the server's answers always carry them.
    object["apiVersion"] = json!(resource.api_version());
    object["kind"] = json!(resource.kind);
    let encoded = match protobuf::encode(&object) {
        Some(Ok(bytes)) => bytes,
        Some(Err(e)) => panic!("a decoded {} does not encode: {e}: {object}", resource.kind),
        None => panic!("{} decodes but has no protobuf form", resource.kind),
    };
    if let Err(e) = protobuf::encode_watch_event("MODIFIED", &object) {
        panic!("a decoded {} is no watch event: {e}", resource.kind);
    }
    match protobuf::decode_object(resource, &encoded) {
        Ok(again) => assert_eq!(again, object, "{} changed on a round trip", resource.kind),
        Err(e) => panic!(
            "an encoded {} does not decode: {e}: {object}",
            resource.kind
        ),
    }
}
