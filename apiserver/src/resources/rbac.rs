//! rbac.authorization.k8s.io/v1: Role, ClusterRole, RoleBinding, ClusterRoleBinding,
//! with upstream's defaults (`pkg/apis/rbac/v1/defaults.go`) and validation
//! (`pkg/apis/rbac/validation`). What they grant is decided in `auth::rbac`; an
//! aggregationRule is stored but not acted on.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{PLAIN, roundtrip, typed};
use crate::error::{ApiError, Result};
use crate::meta;
use crate::registry::{Behaviour, Resource};
use crate::table::{self, Column};
use crate::validation::{FieldError, check_one_of, check_path_segment_name, check_subdomain};

/// The RBAC API group.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// The Role kind.
pub const ROLE: Resource = Resource {
    group: GROUP,
    version: "v1",
    kind: "Role",
    plural: "roles",
    singular: "role",
    short_names: &[],
    namespaced: true,
    has_status: false,
    behaviour: Behaviour {
        decode: roundtrip::<Role>,
        validate: validate_role,
        columns: ROLE_COLUMNS,
        cells: role_cells,
        ..PLAIN
    },
};

/// The ClusterRole kind.
pub const CLUSTER_ROLE: Resource = Resource {
    group: GROUP,
    version: "v1",
    kind: "ClusterRole",
    plural: "clusterroles",
    singular: "clusterrole",
    short_names: &[],
    namespaced: false,
    has_status: false,
    behaviour: Behaviour {
        decode: roundtrip::<ClusterRole>,
        validate: validate_cluster_role,
        columns: ROLE_COLUMNS,
        cells: role_cells,
        ..PLAIN
    },
};

/// The RoleBinding kind.
pub const ROLE_BINDING: Resource = Resource {
    group: GROUP,
    version: "v1",
    kind: "RoleBinding",
    plural: "rolebindings",
    singular: "rolebinding",
    short_names: &[],
    namespaced: true,
    has_status: false,
    behaviour: Behaviour {
        decode: roundtrip::<RoleBinding>,
        normalize: default_binding::<RoleBinding>,
        validate: validate_role_binding,
        columns: BINDING_COLUMNS,
        cells: binding_cells,
        ..PLAIN
    },
};

/// The ClusterRoleBinding kind.
pub const CLUSTER_ROLE_BINDING: Resource = Resource {
    group: GROUP,
    version: "v1",
    kind: "ClusterRoleBinding",
    plural: "clusterrolebindings",
    singular: "clusterrolebinding",
    short_names: &[],
    namespaced: false,
    has_status: false,
    behaviour: Behaviour {
        decode: roundtrip::<ClusterRoleBinding>,
        normalize: default_binding::<ClusterRoleBinding>,
        validate: validate_cluster_role_binding,
        columns: BINDING_COLUMNS,
        cells: binding_cells,
        ..PLAIN
    },
};

const ROLE_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new(
        "Created At",
        "date",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    ),
];

const BINDING_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new(
        "Role",
        "string",
        "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace.",
    ),
    Column::age(),
    Column::new("Users", "string", "Users in the binding").wide(),
    Column::new("Groups", "string", "Groups in the binding").wide(),
    Column::new(
        "ServiceAccounts",
        "string",
        "ServiceAccounts in the binding",
    )
    .wide(),
];

/// The parts of a binding that defaulting and validation look at.
trait Binding {
    fn role_ref(&mut self) -> &mut RoleRef;
    fn subjects(&mut self) -> &mut [Subject];
}

impl Binding for RoleBinding {
    fn role_ref(&mut self) -> &mut RoleRef {
        &mut self.role_ref
    }
    fn subjects(&mut self) -> &mut [Subject] {
        self.subjects.as_deref_mut().unwrap_or_default()
    }
}

impl Binding for ClusterRoleBinding {
    fn role_ref(&mut self) -> &mut RoleRef {
        &mut self.role_ref
    }
    fn subjects(&mut self) -> &mut [Subject] {
        self.subjects.as_deref_mut().unwrap_or_default()
    }
}

/// Upstream's defaults: the roleRef's API group, and the group of User and Group subjects.
fn default_binding<T: Binding + DeserializeOwned + Serialize>(object: Value) -> Result<Value> {
    let mut binding: T = typed(&object)?;
    let role_ref = binding.role_ref();
    if role_ref.api_group.as_deref().is_none_or(str::is_empty) {
        role_ref.api_group = Some(GROUP.into());
    }
    for subject in binding.subjects() {
        if subject.api_group.as_deref().is_none_or(str::is_empty)
            && matches!(subject.kind.as_str(), "User" | "Group")
        {
            subject.api_group = Some(GROUP.into());
        }
    }
    serde_json::to_value(binding).map_err(ApiError::storage)
}

fn validate_role(object: &Value, _: Option<&Value>) -> Result<Vec<FieldError>> {
    let role: Role = typed(object)?;
    let mut errors = Vec::new();
    check_path_segment_name("metadata.name", meta::name(object), &mut errors);
    check_rules(role.rules.as_deref().unwrap_or_default(), true, &mut errors);
    Ok(errors)
}

fn validate_cluster_role(object: &Value, _: Option<&Value>) -> Result<Vec<FieldError>> {
    let role: ClusterRole = typed(object)?;
    let mut errors = Vec::new();
    check_path_segment_name("metadata.name", meta::name(object), &mut errors);
    check_rules(
        role.rules.as_deref().unwrap_or_default(),
        false,
        &mut errors,
    );
    Ok(errors)
}

fn check_rules(rules: &[PolicyRule], namespaced: bool, errors: &mut Vec<FieldError>) {
    for (i, rule) in rules.iter().enumerate() {
        check_rule(rule, namespaced, &format!("rules[{i}]"), errors);
    }
}

fn check_rule(rule: &PolicyRule, namespaced: bool, at: &str, errors: &mut Vec<FieldError>) {
    let present = |list: &Option<Vec<String>>| list.as_ref().is_some_and(|l| !l.is_empty());
    if rule.verbs.is_empty() {
        errors.push(FieldError::required(
            format!("{at}.verbs"),
            "verbs must contain at least one value",
        ));
    }
    if present(&rule.non_resource_urls) {
        let urls = json!(rule.non_resource_urls);
        if namespaced {
            errors.push(FieldError::invalid(
                format!("{at}.nonResourceURLs"),
                urls.clone(),
                "namespaced rules cannot apply to non-resource URLs",
            ));
        }
        if present(&rule.api_groups) || present(&rule.resources) || present(&rule.resource_names) {
            errors.push(FieldError::invalid(
                format!("{at}.nonResourceURLs"),
                urls,
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        return;
    }
    if !present(&rule.api_groups) {
        errors.push(FieldError::required(
            format!("{at}.apiGroups"),
            "resource rules must supply at least one api group",
        ));
    }
    if !present(&rule.resources) {
        errors.push(FieldError::required(
            format!("{at}.resources"),
            "resource rules must supply at least one resource",
        ));
    }
    if present(&rule.resource_names) && rule.resources.as_ref().is_some_and(|r| r.len() > 1) {
        errors.push(FieldError::required(
            format!("{at}.resourceNames"),
            "resource names cannot apply to multiple resources",
        ));
    }
}

fn validate_role_binding(object: &Value, old: Option<&Value>) -> Result<Vec<FieldError>> {
    let binding: RoleBinding = typed(object)?;
    let subjects = binding.subjects.unwrap_or_default();
    let errors = check_binding(object, &binding.role_ref, &subjects, true, old);
    Ok(errors)
}

fn validate_cluster_role_binding(object: &Value, old: Option<&Value>) -> Result<Vec<FieldError>> {
    let binding: ClusterRoleBinding = typed(object)?;
    let subjects = binding.subjects.unwrap_or_default();
    let errors = check_binding(object, &binding.role_ref, &subjects, false, old);
    Ok(errors)
}

fn check_binding(
    object: &Value,
    role_ref: &RoleRef,
    subjects: &[Subject],
    namespaced: bool,
    old: Option<&Value>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check_path_segment_name("metadata.name", meta::name(object), &mut errors);
    check_role_ref(role_ref, namespaced, &mut errors);
    for (i, subject) in subjects.iter().enumerate() {
        check_subject(subject, namespaced, &format!("subjects[{i}]"), &mut errors);
    }
    // A binding grants what its role grants: changing the role would silently change
    // what every subject may do, so upstream makes the reference immutable.
    if let Some(old) = old
        && object.get("roleRef") != old.get("roleRef")
    {
        errors.push(FieldError::invalid(
            "roleRef",
            object.get("roleRef").cloned().unwrap_or(Value::Null),
            "cannot change roleRef",
        ));
    }
    errors
}

fn check_role_ref(role_ref: &RoleRef, namespaced: bool, errors: &mut Vec<FieldError>) {
    let group = role_ref.api_group.as_deref().unwrap_or("");
    check_one_of("roleRef.apiGroup", group, &[GROUP], errors);
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    check_one_of("roleRef.kind", &role_ref.kind, kinds, errors);
    if role_ref.name.is_empty() {
        errors.push(FieldError::required("roleRef.name", ""));
    } else {
        check_path_segment_name("roleRef.name", &role_ref.name, errors);
    }
}

fn check_subject(subject: &Subject, namespaced: bool, at: &str, errors: &mut Vec<FieldError>) {
    let group = subject.api_group.as_deref().unwrap_or("");
    if subject.name.is_empty() {
        errors.push(FieldError::required(format!("{at}.name"), ""));
    }
    match subject.kind.as_str() {
        "ServiceAccount" => {
            if !subject.name.is_empty() {
                check_subdomain(&format!("{at}.name"), &subject.name, errors);
            }
            if !group.is_empty() {
                errors.push(FieldError::not_supported(
                    format!("{at}.apiGroup"),
                    group,
                    &[""],
                ));
            }
            if !namespaced && subject.namespace.as_deref().is_none_or(str::is_empty) {
                errors.push(FieldError::required(format!("{at}.namespace"), ""));
            }
        }
        "User" | "Group" => check_one_of(&format!("{at}.apiGroup"), group, &[GROUP], errors),
        other => errors.push(FieldError::not_supported(
            format!("{at}.kind"),
            other,
            &["ServiceAccount", "User", "Group"],
        )),
    }
}

fn role_cells(object: &Value) -> Vec<Value> {
    vec![
        json!(meta::name(object)),
        json!(meta::string(object, "creationTimestamp")),
    ]
}

fn binding_cells(object: &Value) -> Vec<Value> {
    let role = format!(
        "{}/{}",
        table::text(object, "/roleRef/kind"),
        table::text(object, "/roleRef/name")
    );
    let subjects = object.get("subjects").and_then(Value::as_array);
    let named = |kind: &str| {
        let names: Vec<String> = subjects
            .into_iter()
            .flatten()
            .filter(|s| s["kind"] == kind)
            .map(|s| match s["namespace"].as_str() {
                Some(namespace) if kind == "ServiceAccount" => {
                    format!("{namespace}/{}", s["name"].as_str().unwrap_or(""))
                }
                _ => s["name"].as_str().unwrap_or("").to_string(),
            })
            .collect();
        json!(names.join(", "))
    };
    vec![
        json!(meta::name(object)),
        json!(role),
        table::age(object),
        named("User"),
        named("Group"),
        named("ServiceAccount"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(resource: &Resource, object: Value, old: Option<Value>) -> Vec<String> {
        let object = (resource.behaviour.decode)(&object).and_then(resource.behaviour.normalize);
        let object = object.unwrap_or_else(|e| panic!("decode: {e}"));
        (resource.behaviour.validate)(&object, old.as_ref())
            .unwrap_or_else(|e| panic!("validate: {e}"))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn rules_need_verbs_groups_and_resources_or_only_urls() {
        let role = json!({"metadata": {"name": "r", "namespace": "ns"}, "rules": [
            {"verbs": [], "apiGroups": [""], "resources": ["pods"]},
            {"verbs": ["get"]},
            {"verbs": ["get"], "nonResourceURLs": ["/healthz"]},
            {"verbs": ["get"], "apiGroups": [""], "resources": ["pods", "nodes"], "resourceNames": ["a"]},
        ]});
        assert_eq!(
            errors(&ROLE, role, None),
            [
                "rules[0].verbs: Required value: verbs must contain at least one value",
                "rules[1].apiGroups: Required value: resource rules must supply at least one api group",
                "rules[1].resources: Required value: resource rules must supply at least one resource",
                "rules[2].nonResourceURLs: Invalid value: [\"/healthz\"]: namespaced rules cannot apply to non-resource URLs",
                "rules[3].resourceNames: Required value: resource names cannot apply to multiple resources",
            ]
        );
        let cluster = json!({"metadata": {"name": "system:viewer"}, "rules": [
            {"verbs": ["get"], "nonResourceURLs": ["/healthz"]},
            {"verbs": ["get"], "nonResourceURLs": ["/x"], "resources": ["pods"]},
        ]});
        assert_eq!(
            errors(&CLUSTER_ROLE, cluster, None),
            [
                "rules[1].nonResourceURLs: Invalid value: [\"/x\"]: rules cannot apply to both regular resources and non-resource URLs"
            ],
            "colons are allowed in names, URL rules in cluster roles"
        );
    }

    #[test]
    fn bindings_default_groups_and_check_subjects_and_role_ref() {
        let binding = json!({"metadata": {"name": "b"},
        "roleRef": {"kind": "Role", "name": "x"},
        "subjects": [
            {"kind": "User", "name": "alice"},
            {"kind": "ServiceAccount", "name": "sa"},
            {"kind": "Robot", "name": "r2"},
            {"kind": "Group", "name": ""},
        ]});
        assert_eq!(
            errors(&CLUSTER_ROLE_BINDING, binding, None),
            [
                "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
                "subjects[1].namespace: Required value",
                "subjects[2].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\"",
                "subjects[3].name: Required value",
            ]
        );
        let defaulted = default_binding::<RoleBinding>(json!({"metadata": {"name": "b"},
            "roleRef": {"kind": "Role", "name": "x"},
            "subjects": [{"kind": "Group", "name": "g"}, {"kind": "ServiceAccount", "name": "sa"}]}))
        .unwrap_or_default();
        assert_eq!(defaulted["roleRef"]["apiGroup"], GROUP);
        assert_eq!(defaulted["subjects"][0]["apiGroup"], GROUP);
        assert!(defaulted["subjects"][1].get("apiGroup").is_none());
    }

    #[test]
    fn a_binding_keeps_its_role_ref() {
        let old = json!({"metadata": {"name": "b", "namespace": "ns"},
            "roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "x"}});
        let mut new = old.clone();
        new["roleRef"]["name"] = json!("y");
        assert_eq!(
            errors(&ROLE_BINDING, new, Some(old.clone())),
            [
                "roleRef: Invalid value: {\"apiGroup\":\"rbac.authorization.k8s.io\",\"kind\":\"Role\",\"name\":\"y\"}: cannot change roleRef"
            ]
        );
        assert!(errors(&ROLE_BINDING, old.clone(), Some(old)).is_empty());
    }
}
