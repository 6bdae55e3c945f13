//! Field errors as kube-apiserver words them, and the checks every kind shares.

use serde_json::{Value, json};
use stowage_common::quantity::Quantity;

/// One problem with one field, rendered as upstream's `field.Error`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The field's path (`spec.capacity`).
    pub field: String,
    kind: FieldErrorKind,
    detail: String,
}

#[derive(Debug, Clone, PartialEq)]
enum FieldErrorKind {
    Required,
    Invalid(Value),
    NotSupported(Value, Vec<String>),
    Forbidden,
    Duplicate(Value),
}

impl FieldError {
    /// `Required value`: the field is missing.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorKind::Required, detail)
    }

    /// `Invalid value`: the field's value is wrong as `detail` says.
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<Value>,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(field, FieldErrorKind::Invalid(value.into()), detail)
    }

    /// `Unsupported value`: the value is not one of `allowed`.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<Value>,
        allowed: &[&str],
    ) -> Self {
        let allowed = allowed.iter().map(|a| a.to_string()).collect();
        Self::new(
            field,
            FieldErrorKind::NotSupported(value.into(), allowed),
            "",
        )
    }

    /// `Forbidden`: the field may not be set, or changed, as `detail` says.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorKind::Forbidden, detail)
    }

    /// `Duplicate value`: the value is given twice.
    pub fn duplicate(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(field, FieldErrorKind::Duplicate(value.into()), "")
    }

    fn new(field: impl Into<String>, kind: FieldErrorKind, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind,
            detail: detail.into(),
        }
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid(_) => "FieldValueInvalid",
            FieldErrorKind::NotSupported(..) => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::Duplicate(_) => "FieldValueDuplicate",
        }
    }

    /// The text after `field: `, as `field.Error.ErrorBody` builds it.
    fn body(&self) -> String {
        let mut body = match &self.kind {
            FieldErrorKind::Required => "Required value".to_string(),
            FieldErrorKind::Forbidden => "Forbidden".to_string(),
            FieldErrorKind::Invalid(value) => format!("Invalid value: {}", render(value)),
            FieldErrorKind::Duplicate(value) => format!("Duplicate value: {}", render(value)),
            FieldErrorKind::NotSupported(value, allowed) => {
                let allowed: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
                format!(
                    "Unsupported value: {}: supported values: {}",
                    render(value),
                    allowed.join(", ")
                )
            }
        };
        if !self.detail.is_empty() {
            body = format!("{body}: {}", self.detail);
        }
        body
    }

    /// The error as a StatusCause of an Invalid Status's details.
    pub fn cause(&self) -> Value {
        json!({"reason": self.reason(), "message": self.body(), "field": self.field})
    }

    /// Several errors as upstream's aggregate prints them: bracketed when more than one.
    pub fn join(errors: &[FieldError]) -> String {
        let texts: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        match texts.as_slice() {
            [one] => one.clone(),
            _ => format!("[{}]", texts.join(", ")),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

fn render(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// A DNS-1123 subdomain: the name rule for most objects.
pub fn check_subdomain(field: &str, name: &str, errors: &mut Vec<FieldError>) {
    if name.is_empty() {
        errors.push(FieldError::required(
            field,
            "name or generateName is required",
        ));
    } else if !is_subdomain(name) {
        errors.push(FieldError::invalid(field, name, SUBDOMAIN_MESSAGE));
    }
}

/// Upstream's message for a name that is not a DNS subdomain.
pub const SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

/// Upstream's `IsDNS1123Subdomain`: at most 253 characters, and no length limit per
/// label (snapshot-controller names a group member `snapcontent-` and 64 hex digits).
fn is_subdomain(name: &str) -> bool {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
}

/// Upstream's `IsQualifiedName`: an optional DNS subdomain prefix and `/`, then a name
/// of at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric.
pub fn check_qualified_name(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    let (prefix, name) = match value.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, value),
    };
    let mut problem = |detail: &str| errors.push(FieldError::invalid(field, value, detail));
    if name.contains('/') {
        problem(
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
        );
        return;
    }
    match prefix {
        Some("") => problem("prefix part must be non-empty"),
        Some(prefix) if !is_subdomain(prefix) => {
            problem(&format!("prefix part {SUBDOMAIN_MESSAGE}"));
        }
        _ => {}
    }
    let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    if name.is_empty() {
        problem("name part must be non-empty");
    } else if name.len() > 63 {
        problem("name part must be no more than 63 characters");
    } else if !edge_ok(name.bytes().next())
        || !edge_ok(name.bytes().last())
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        problem(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        );
    }
}

/// A quantity that must parse and not be negative.
pub fn check_nonnegative_quantity(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    match Quantity::parse(value) {
        Err(e) => errors.push(FieldError::invalid(field, value, e.to_string())),
        Ok(q) if q.is_negative() => errors.push(FieldError::invalid(
            field,
            value,
            "must be greater than or equal to 0",
        )),
        Ok(_) => {}
    }
}

/// Upstream's `path.IsValidPathSegmentName`: the name rule of RBAC objects, which
/// allows `system:` names.
pub fn check_path_segment_name(field: &str, name: &str, errors: &mut Vec<FieldError>) {
    if name.is_empty() {
        errors.push(FieldError::required(
            field,
            "name or generateName is required",
        ));
        return;
    }
    if name == "." || name == ".." {
        errors.push(FieldError::invalid(
            field,
            name,
            format!("may not be '{name}'"),
        ));
    }
    for forbidden in ["/", "%"] {
        if name.contains(forbidden) {
            errors.push(FieldError::invalid(
                field,
                name,
                format!("may not contain '{forbidden}'"),
            ));
        }
    }
}

/// A DNS-1123 label: the name rule for namespaces.
pub fn check_label_name(field: &str, name: &str, errors: &mut Vec<FieldError>) {
    check_subdomain(field, name, errors);
    if name.contains('.') || name.len() > 63 {
        errors.push(FieldError::invalid(
            field,
            name,
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
        ));
    }
}

/// A quantity that must parse and be greater than zero.
pub fn check_positive_quantity(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    match Quantity::parse(value) {
        Err(e) => errors.push(FieldError::invalid(field, value, e.to_string())),
        Ok(q) if q.is_negative() || q.is_zero() => errors.push(FieldError::invalid(
            field,
            value,
            "must be greater than zero",
        )),
        Ok(_) => {}
    }
}

/// A value that must be one of a fixed set.
pub fn check_one_of(field: &str, value: &str, allowed: &[&str], errors: &mut Vec<FieldError>) {
    if !allowed.contains(&value) {
        errors.push(FieldError::not_supported(field, value, allowed));
    }
}

/// A field that may not change after creation.
pub fn check_unchanged(field: &str, new: &Value, old: &Value, errors: &mut Vec<FieldError>) {
    if new != old {
        errors.push(FieldError::invalid(
            field,
            new.clone(),
            "field is immutable",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains_as_upstream_reads_them() {
        let member = format!("snapcontent-{}", "0123456789abcdef".repeat(4));
        let too_long = "n".repeat(254);
        for (name, valid) in [
            (member.as_str(), true),
            ("a.b-c.d", true),
            (too_long.as_str(), false),
            ("a..b", false),
            ("Name", false),
            ("-a", false),
            ("a.-b", false),
        ] {
            assert_eq!(is_subdomain(name), valid, "{name}");
        }
    }

    #[test]
    fn qualified_names_as_upstream_reads_them() {
        let long = "n".repeat(64);
        let long_prefix = format!("{}/name", "p".repeat(254));
        for (value, valid) in [
            ("topology.stowage.io/node", true),
            ("MyName", true),
            ("my.name", true),
            ("123-abc", true),
            ("example.com/My_Name-1", true),
            ("csi.stowage.io", true),
            ("", false),
            ("-bad", false),
            ("bad-", false),
            ("has space", false),
            ("a/b/c", false),
            ("/name", false),
            ("prefix/", false),
            ("Upper.Case/name", false),
            (long.as_str(), false),
            (long_prefix.as_str(), false),
        ] {
            let mut errors = Vec::new();
            check_qualified_name("key", value, &mut errors);
            assert_eq!(errors.is_empty(), valid, "{value:?}: {errors:?}");
        }
    }

    #[test]
    fn nonnegative_quantities() {
        for (value, valid) in [("0", true), ("10Gi", true), ("-1", false), ("x", false)] {
            let mut errors = Vec::new();
            check_nonnegative_quantity("capacity", value, &mut errors);
            assert_eq!(errors.is_empty(), valid, "{value:?}");
        }
    }
}
