//! Reading and stamping object metadata.

use jiff::Timestamp;
use serde_json::{Map, Value};

/// The metadata map, if the object has one.
pub fn metadata(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata").and_then(Value::as_object)
}

/// The metadata map, created when absent or not an object.
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = Value::Object(Map::new());
    }
    match object.get_mut("metadata") {
        Some(Value::Object(map)) => map,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// A string field of the metadata; "" when absent.
pub fn string<'v>(object: &'v Value, field: &str) -> &'v str {
    metadata(object)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// metadata.name, or "".
pub fn name(object: &Value) -> &str {
    string(object, "name")
}

/// metadata.namespace, or "".
pub fn namespace(object: &Value) -> &str {
    string(object, "namespace")
}

/// metadata.resourceVersion, or "".
pub fn resource_version(object: &Value) -> &str {
    string(object, "resourceVersion")
}

/// metadata.finalizers (the strings among them).
pub fn finalizers(object: &Value) -> Vec<String> {
    metadata(object)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether metadata.deletionTimestamp is set: the object waits for its finalizers.
pub fn is_deleting(object: &Value) -> bool {
    metadata(object).is_some_and(|m| m.get("deletionTimestamp").is_some_and(|t| !t.is_null()))
}

/// metadata.labels, if the object has them.
pub fn labels(object: &Value) -> Option<&Map<String, Value>> {
    metadata(object)
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
}

/// Now, in the RFC 3339 form with whole seconds that Kubernetes uses.
pub fn now() -> String {
    whole_seconds(Timestamp::now())
}

/// A time truncated to its second, as Go's metav1.Time marshals it: never rounded up,
/// so a creationTimestamp is never later than the moment of creation.
pub fn whole_seconds(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A fresh metadata.uid (a v4 UUID).
pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Five characters from upstream's alphabet, which avoids vowels and look-alikes.
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// Time since an RFC 3339 timestamp, in kubectl's words (`45s`, `3m20s`, `5h`, `12d`).
pub fn age(timestamp: &str) -> String {
    let Ok(then) = timestamp.parse::<Timestamp>() else {
        return "<unknown>".to_string();
    };
    let seconds = Timestamp::now().as_second() - then.as_second();
    human_duration(seconds)
}

/// Upstream's `duration.HumanDuration`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let years = hours / 24 / 365;
        return match (hours / 24) % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_duration_matches_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(3600), "60m");
        assert_eq!(human_duration(5 * 3600 + 60), "5h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(40 * 86400), "40d");
    }

    #[test]
    fn timestamps_are_whole_seconds_in_utc() {
        let now = now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.ends_with('Z'));
    }

    #[test]
    fn timestamps_are_truncated_never_rounded_up() {
        for (at, expected) in [
            ("2024-05-01T10:20:30Z", "2024-05-01T10:20:30Z"),
            ("2024-05-01T10:20:30.499Z", "2024-05-01T10:20:30Z"),
            ("2024-05-01T10:20:30.999999999Z", "2024-05-01T10:20:30Z"),
            ("2024-12-31T23:59:59.9Z", "2024-12-31T23:59:59Z"),
        ] {
            let parsed: Timestamp = at.parse().expect("timestamp");
            assert_eq!(whole_seconds(parsed), expected, "{at}");
        }
    }

    #[test]
    fn generated_suffixes_use_the_upstream_alphabet() {
        let suffix = name_suffix();
        assert_eq!(suffix.len(), 5);
        assert!(
            suffix
                .chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
        );
    }
}
