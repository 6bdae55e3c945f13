//! Kubernetes quantities (`stowage_common::quantity`): parse, format, parse again.
//!
//! Checks: no panic; a parsed quantity formats to a short string that parses back to
//! the same quantity; whole bytes survive `from_bytes` and formatting; `parse_bytes`
//! agrees with `parse`; memory stays proportional to the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage_common::quantity::{Quantity, parse_bytes};
use stowage_fuzz::{assert_bounded, peak_allocation};

/// The longest text `Display` can write: 39 digits of nano-units, a sign, a suffix.
const MAX_FORMATTED: usize = 42;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (parsed, peak) = peak_allocation(|| Quantity::parse(text));
    assert_bounded(peak, text.len(), 2, 256);
    assert_eq!(
        parse_bytes(text),
        Quantity::parse(text.trim())
            .ok()
            .filter(|q| !q.is_negative())
            .map(|q| q.bytes())
    );
    let Ok(quantity) = parsed else {
        return;
    };
    let formatted = quantity.to_string();
    assert!(
        formatted.len() <= MAX_FORMATTED,
        "{text:?} formats as {formatted:?}"
    );
    assert_eq!(
        Quantity::parse(&formatted),
        Ok(quantity),
        "{text:?} formats as {formatted:?}"
    );
    if let Some(whole) = Quantity::from_bytes(quantity.bytes()) {
        assert!(whole >= quantity || quantity.is_negative());
        assert_eq!(parse_bytes(&whole.to_string()), Some(quantity.bytes()));
    }
});
