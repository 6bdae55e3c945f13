//! Label and field selectors in the query-string syntax clients send.

use serde_json::{Map, Value};

use crate::error::{ApiError, Result};
use crate::registry::Resource;

#[derive(Debug, Clone, PartialEq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed `labelSelector`: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<LabelRequirement>);

impl LabelSelector {
    /// Parses upstream's syntax (`a=b,c!=d,e in (f,g),!h`); an error is a 400.
    pub fn parse(text: &str) -> Result<Self> {
        let mut requirements = Vec::new();
        for clause in split_top_level(text) {
            let clause = clause.trim();
            if clause.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(clause).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unable to parse requirement: found '{clause}', expected a label selector"
                ))
            })?);
        }
        Ok(Self(requirements))
    }

    /// Selects every object (an empty selector).
    pub fn is_everything(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            LabelRequirement::Equals(k, v) => get(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => get(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::DoesNotExist(k) => get(k).is_none(),
        })
    }
}

/// Splits on commas outside parentheses, so `a in (x,y),b` is two clauses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut clauses = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                clauses.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    clauses.push(&text[start..]);
    clauses
}

fn parse_requirement(clause: &str) -> Option<LabelRequirement> {
    if let Some(key) = clause.strip_prefix('!') {
        return valid_key(key.trim()).map(|k| LabelRequirement::DoesNotExist(k.into()));
    }
    for (operator, negated) in [(" notin ", true), (" in ", false)] {
        if let Some((key, values)) = clause.split_once(operator) {
            let values = values.trim().strip_prefix('(')?.strip_suffix(')')?;
            let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
            let key = valid_key(key.trim())?.to_string();
            return Some(if negated {
                LabelRequirement::NotIn(key, values)
            } else {
                LabelRequirement::In(key, values)
            });
        }
    }
    for (operator, kind) in [("!=", 0), ("==", 1), ("=", 1)] {
        if let Some((key, value)) = clause.split_once(operator) {
            let key = valid_key(key.trim())?.to_string();
            let value = value.trim().to_string();
            return Some(if kind == 0 {
                LabelRequirement::NotEquals(key, value)
            } else {
                LabelRequirement::Equals(key, value)
            });
        }
    }
    valid_key(clause).map(|k| LabelRequirement::Exists(k.into()))
}

fn valid_key(key: &str) -> Option<&str> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    ok.then_some(key)
}

/// A parsed `fieldSelector`: `label=value`, `label==value` or `label!=value` terms.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, String, bool)>);

impl FieldSelector {
    /// Parses and checks every label is one the resource supports, as upstream does.
    pub fn parse(text: &str, resource: &Resource) -> Result<Self> {
        let terms = Self::terms(text)?;
        if let Some((label, _, _)) = terms.iter().find(|(l, _, _)| !resource.supports_field(l)) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {label}"
            )));
        }
        Ok(Self(terms))
    }

    /// The terms as (label, value, equal), for any resource.
    fn terms(text: &str) -> Result<Vec<(String, String, bool)>> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (label, value, equal) = if let Some((l, v)) = term.split_once("!=") {
                (l, v, false)
            } else if let Some((l, v)) = term.split_once("==") {
                (l, v, true)
            } else if let Some((l, v)) = term.split_once('=') {
                (l, v, true)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                )));
            };
            terms.push((label.to_string(), value.to_string(), equal));
        }
        Ok(terms)
    }

    /// The name `text` pins with `metadata.name=`, read as [`parse`](Self::parse)
    /// reads it, so the authorizer and the list agree on which object is asked for.
    pub fn pinned_name(text: &str) -> Option<String> {
        Self::terms(text)
            .ok()?
            .into_iter()
            .find(|(label, _, equal)| label == "metadata.name" && *equal)
            .map(|(_, value, _)| value)
    }

    /// Selects every object (an empty selector).
    pub fn is_everything(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `object` of `resource` is selected.
    pub fn matches(&self, resource: &Resource, object: &Value) -> bool {
        self.0.iter().all(|(label, value, equal)| {
            (resource.field_value(object, label) == Some(value.as_str())) == *equal
        })
    }

    /// The name the selector pins with `metadata.name=`, which narrows a scan.
    pub fn exact_name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(label, _, equal)| label == "metadata.name" && *equal)
            .map(|(_, value, _)| value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn label_selectors_follow_the_upstream_grammar() {
        let set = labels(json!({"tier": "fast", "zone": "a"}));
        let cases = [
            ("", true),
            ("tier=fast", true),
            ("tier==fast", true),
            ("tier!=fast", false),
            ("tier in (slow,fast)", true),
            ("tier notin (slow,fast)", false),
            ("zone,tier", true),
            ("!zone", false),
            ("!missing", true),
            ("missing!=x", true),
            ("tier=fast,zone in (b)", false),
        ];
        for (selector, expected) in cases {
            let parsed = LabelSelector::parse(selector);
            assert_eq!(
                parsed.map(|s| s.matches(Some(&set))).ok(),
                Some(expected),
                "{selector}"
            );
        }
        assert!(LabelSelector::parse("a in x").is_err());
        assert!(LabelSelector::parse("=x").is_err());
    }

    #[test]
    fn field_selectors_reject_unknown_labels() {
        let pv = &crate::resources::core::PERSISTENT_VOLUME;
        assert!(FieldSelector::parse("spec.foo=bar", pv).is_err());
        let selector = FieldSelector::parse("metadata.name=pv1", pv).ok();
        assert_eq!(selector.as_ref().and_then(|s| s.exact_name()), Some("pv1"));
        let object = json!({"metadata": {"name": "pv1"}});
        assert!(selector.is_some_and(|s| s.matches(pv, &object)));
    }
}
