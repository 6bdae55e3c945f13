//! Kubernetes resource quantities (`64Mi`, `1G`, `1.5Gi`, `1e3`, `500m`), kept exactly.
//!
//! A quantity is held as a count of nano-units in 128 bits, the finest precision
//! Kubernetes keeps, so `800Ei` and `1n` compare exactly with no i64 overflow.

use std::cmp::Ordering;
use std::fmt;

const NANOS_PER_UNIT: u128 = 1_000_000_000;
/// More significant digits than this do not fit in 128 bits.
const MAX_DIGITS: usize = 39;

/// Why a text is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// It does not have a quantity's form.
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Malformed,
    /// It is more than 128 bits of nano-units hold.
    #[error("quantity is too large")]
    TooLarge,
}

/// An exact signed quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Quantity {
    negative: bool,
    nanos: u128,
}

impl Quantity {
    /// Parses a Kubernetes quantity (`1Gi`, `500m`, `1e3`), exactly.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let (negative, rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(split);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(QuantityError::Malformed);
        }
        let digits = format!("{whole}{fraction}");
        let significant = digits.trim_start_matches('0');
        // Trailing zeros only scale: `1` and 37 zeros, then `n`, fits.
        let kept = significant.trim_end_matches('0');
        if kept.len() > MAX_DIGITS {
            return Err(QuantityError::TooLarge);
        }
        let mantissa: u128 = if kept.is_empty() {
            0
        } else {
            // Every byte is a digit, so the only failure left is overflow.
            kept.parse().map_err(|_| QuantityError::TooLarge)?
        };
        let (pow10, pow2) = suffix_scale(suffix)?;
        let shift = |n: usize| i64::try_from(n).map_err(|_| QuantityError::TooLarge);
        let pow10 =
            i64::from(pow10) + 9 - shift(fraction.len())? + shift(significant.len() - kept.len())?;
        let nanos = scale(mantissa, pow10, pow2)?;
        Ok(Quantity {
            negative: negative && nanos != 0,
            nanos,
        })
    }

    /// Whole bytes (or units), a fraction rounded up; zero for a negative quantity.
    pub fn bytes(&self) -> u128 {
        if self.negative {
            0
        } else {
            self.nanos.div_ceil(NANOS_PER_UNIT)
        }
    }

    /// The quantity of `bytes` units; `None` past 128 bits.
    pub fn from_bytes(bytes: u128) -> Option<Self> {
        Some(Quantity {
            negative: false,
            nanos: bytes.checked_mul(NANOS_PER_UNIT)?,
        })
    }

    /// Whether it is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// Whether it is zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.negative, other.negative) {
            (false, false) => self.nanos.cmp(&other.nanos),
            (true, true) => other.nanos.cmp(&self.nanos),
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
        }
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Renders whole units in the largest binary suffix that divides them, as `kubectl` shows
/// capacities, and a fraction exactly in `m`, `u` or `n`, as upstream's canonical form does;
/// so the text parses back to the same quantity.
impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.negative { "-" } else { "" };
        if !self.nanos.is_multiple_of(NANOS_PER_UNIT) {
            let (suffix, per) = [("m", 1_000_000), ("u", 1_000)]
                .into_iter()
                .find(|(_, per)| self.nanos.is_multiple_of(*per))
                .unwrap_or(("n", 1));
            return write!(f, "{sign}{}{suffix}", self.nanos / per);
        }
        let units = self.nanos / NANOS_PER_UNIT;
        for (suffix, shift) in [
            ("Ei", 60),
            ("Pi", 50),
            ("Ti", 40),
            ("Gi", 30),
            ("Mi", 20),
            ("Ki", 10),
        ] {
            if units != 0 && units.is_multiple_of(1u128 << shift) {
                return write!(f, "{sign}{}{suffix}", units >> shift);
            }
        }
        write!(f, "{sign}{units}")
    }
}

/// Parses a quantity into whole bytes, rounding a fraction up; `None` when malformed or negative.
pub fn parse_bytes(text: &str) -> Option<u128> {
    Quantity::parse(text.trim())
        .ok()
        .filter(|q| !q.is_negative())
        .map(|q| q.bytes())
}

/// The power of ten and power of two a suffix multiplies by.
fn suffix_scale(suffix: &str) -> Result<(i32, u32), QuantityError> {
    let binary = match suffix {
        "Ki" => Some(10),
        "Mi" => Some(20),
        "Gi" => Some(30),
        "Ti" => Some(40),
        "Pi" => Some(50),
        "Ei" => Some(60),
        _ => None,
    };
    if let Some(pow2) = binary {
        return Ok((0, pow2));
    }
    let decimal = match suffix {
        "" => Some(0),
        "n" => Some(-9),
        "u" => Some(-6),
        "m" => Some(-3),
        "k" => Some(3),
        "M" => Some(6),
        "G" => Some(9),
        "T" => Some(12),
        "P" => Some(15),
        "E" => Some(18),
        _ => None,
    };
    if let Some(pow10) = decimal {
        return Ok((pow10, 0));
    }
    let exponent = suffix
        .strip_prefix(['e', 'E'])
        .filter(|e| {
            e.trim_start_matches(['+', '-'])
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .ok_or(QuantityError::Malformed)?;
    let pow10: i32 = exponent.parse().map_err(|_| QuantityError::Malformed)?;
    if !(-100..=100).contains(&pow10) {
        return Err(QuantityError::TooLarge);
    }
    Ok((pow10, 0))
}

/// `mantissa * 10^pow10 * 2^pow2`, rounded up to a whole number.
fn scale(mantissa: u128, pow10: i64, pow2: u32) -> Result<u128, QuantityError> {
    let binary = mantissa
        .checked_mul(1u128 << pow2)
        .ok_or(QuantityError::TooLarge)?;
    if mantissa == 0 {
        return Ok(0);
    }
    let power = |exponent: u64| {
        u32::try_from(exponent)
            .ok()
            .and_then(|e| 10u128.checked_pow(e))
    };
    if pow10 >= 0 {
        let factor = power(pow10.unsigned_abs()).ok_or(QuantityError::TooLarge)?;
        return binary.checked_mul(factor).ok_or(QuantityError::TooLarge);
    }
    match power(pow10.unsigned_abs()) {
        Some(divisor) => Ok(binary.div_ceil(divisor)),
        None => Ok(1),
    }
}

#[cfg(test)]
mod tests {
    use super::{Quantity, QuantityError, parse_bytes};

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn quantities_parse_exactly() {
        assert_eq!(parse_bytes("64Mi"), Some(64 << 20));
        assert_eq!(parse_bytes("1G"), Some(1_000_000_000));
        assert_eq!(parse_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(parse_bytes("123"), Some(123));
        assert_eq!(parse_bytes("0.1"), Some(1), "fractions of a byte round up");
        assert_eq!(parse_bytes("800Ei"), Some(800u128 << 60));
        assert_eq!(parse_bytes("1e3"), Some(1000));
        assert_eq!(parse_bytes("2E6"), Some(2_000_000));
        assert_eq!(parse_bytes("1E"), Some(1_000_000_000_000_000_000));
        assert_eq!(parse_bytes("1500m"), Some(2));
        for bad in ["", "Mi", "12Q", "-1", "1.2.3", ".", "1e", "1Ki2", "e3"] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn quantities_compare_exactly_across_forms() {
        assert_eq!(q("1Gi"), q("1073741824"));
        assert_eq!(q("1k"), q("1e3"));
        assert!(q("1.2") < q("1.5"), "fractions are not lost to rounding");
        assert!(q("800Ei") > q("799Ei"));
        assert!(q("-1") < q("0"));
        assert_eq!(q("-0"), q("0"));
        assert!(q("1n") > q("0"));
    }

    #[test]
    fn quantities_display_in_binary_units() {
        assert_eq!(q("1073741824").to_string(), "1Gi");
        assert_eq!(q("800Ei").to_string(), "800Ei");
        assert_eq!(q("1G").to_string(), "1000000000");
        assert_eq!(q("1500m").to_string(), "1500m");
        assert_eq!(q("1.5").to_string(), "1500m");
    }

    #[test]
    fn fractions_display_exactly_and_parse_back() {
        // A fuzzer found "1n" shown as "1m", and fractions too long to parse back.
        for (text, shown) in [
            ("1n", "1n"),
            ("250u", "250u"),
            ("1.0000015", "1000001500n"),
            ("-0.5u", "-500n"),
            (
                "1234567890123456789012345678.9",
                "1234567890123456789012345678900m",
            ),
            (
                "340282366920938463463374607431768211455n",
                "340282366920938463463374607431768211455n",
            ),
        ] {
            let quantity = q(text);
            assert_eq!(quantity.to_string(), shown, "{text}");
            assert_eq!(q(shown), quantity, "{text}");
        }
    }

    #[test]
    fn only_what_does_not_fit_is_too_large() {
        assert_eq!(q(&format!("1{}n", "0".repeat(37))), q("1e28"));
        assert_eq!(
            Quantity::parse("340282366920938463463374607431768211456n"),
            Err(QuantityError::TooLarge)
        );
        assert_eq!(
            Quantity::parse("1234567890123456789012345678901234567890"),
            Err(QuantityError::TooLarge)
        );
        assert_eq!(
            parse_bytes("0.000000000000000000000000000000000000000001"),
            Some(1)
        );
    }
}
