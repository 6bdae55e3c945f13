//! Merge, JSON and strategic merge patches (`apiserver::patch`), as PATCH bodies.
//!
//! Input: a header line naming the patch type (`merge`, `json`, `strategic`), a line
//! with the target object as JSON, then the patch body. Checks: no panic; the patched
//! object and the memory used stay proportional to the input (a JSON patch's copies
//! within their allowance); a merge patch applied twice changes nothing the second time.
#![no_main]

use apiserver::patch::{self, MAX_JSON_PATCH_COPY_BYTES, PatchType};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use stowage_fuzz::{assert_bounded, header, peak_allocation};

fuzz_target!(|data: &[u8]| {
    let (kind, rest) = header(data);
    let kind = match kind {
        b"merge" => PatchType::Merge,
        b"json" => PatchType::Json,
        b"strategic" => PatchType::Strategic,
        _ => return,
    };
    let (target, body) = header(rest);
    let Ok(target) = serde_json::from_slice::<Value>(target) else {
        return;
    };
    let mut patched = target.clone();
    let (applied, peak) = peak_allocation(|| patch::apply(kind, &mut patched, body));
    // Copies are the one way a JSON patch outgrows its body; they have an allowance.
    let allowance = if kind == PatchType::Json {
        MAX_JSON_PATCH_COPY_BYTES
    } else {
        0
    };
    assert_bounded(peak, data.len(), 256, 64 * 1024 + 64 * allowance);
    if applied.is_err() {
        assert_eq!(
            patched, target,
            "a failed patch leaves the object as it was"
        );
        return;
    }
    // Numbers may be written longer than they were read (`1e15` is `1000000000000000.0`).
    let size = serde_json::to_vec(&patched).map_or(0, |v| v.len());
    assert!(
        size <= 20 * data.len() + allowance,
        "{size} bytes after a patch of {} bytes",
        data.len()
    );
    if kind == PatchType::Merge {
        let mut twice = patched.clone();
        assert!(patch::apply(kind, &mut twice, body).is_ok());
        assert_eq!(twice, patched, "a merge patch is idempotent");
    }
});
