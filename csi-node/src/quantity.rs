//! Kubernetes resource quantities (`64Mi`, `1G`, `1.5Gi`, `500000`) as byte counts.

/// Parses a quantity into bytes, rounding a fraction up; `None` when malformed.
pub fn parse_bytes(text: &str) -> Option<u128> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut bytes = whole.checked_mul(multiplier)?;
    if !fraction.is_empty() {
        let digits = u32::try_from(fraction.len()).ok().filter(|d| *d <= 18)?;
        let scale = 10u128.pow(digits);
        let part = fraction.parse::<u128>().ok()?.checked_mul(multiplier)?;
        bytes = bytes.checked_add(part.div_ceil(scale))?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn quantities_parse_exactly() {
        assert_eq!(parse_bytes("64Mi"), Some(64 << 20));
        assert_eq!(parse_bytes("1G"), Some(1_000_000_000));
        assert_eq!(parse_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(parse_bytes("123"), Some(123));
        assert_eq!(parse_bytes("0.1"), Some(1), "fractions of a byte round up");
        assert_eq!(parse_bytes("800Ei"), Some(800u128 << 60));
        for bad in ["", "Mi", "12Q", "-1", "1.2.3", "1e3"] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
    }
}
