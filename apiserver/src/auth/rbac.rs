//! RBAC as upstream's authorizer evaluates it (plugin/pkg/auth/authorizer/rbac and
//! pkg/registry/rbac/validation/rule.go): a request is allowed when a rule of a role
//! bound to the identity allows it: cluster-wide through a ClusterRoleBinding, or in
//! the request's namespace through a RoleBinding there (to a Role of that namespace,
//! or a ClusterRole whose rules then apply in that namespace only). Rules only allow;
//! with none that matches, the request is refused.

use std::collections::HashMap;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use super::attributes::{Attributes, ResourceRequest, Target};
use super::authn::Identity;

/// Every role and binding, indexed for evaluation.
#[derive(Debug, Default)]
pub struct Policy {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    /// By (namespace, name).
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    cluster_bindings: Vec<Binding>,
    /// By namespace.
    bindings: HashMap<String, Vec<Binding>>,
}

#[derive(Debug)]
struct Binding {
    subjects: Vec<Subject>,
    role_ref: RoleRef,
}

/// What RBAC says of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A rule allows it.
    Allow,
    /// `reason` is upstream's: empty, or the roles that bindings name but that do not
    /// exist (`RBAC: clusterrole.rbac.authorization.k8s.io "x" not found`).
    Deny {
        /// Upstream's reason.
        reason: String,
    },
}

impl Policy {
    /// The policy of these roles and bindings.
    pub fn new(
        cluster_roles: Vec<ClusterRole>,
        roles: Vec<Role>,
        cluster_bindings: Vec<ClusterRoleBinding>,
        bindings: Vec<RoleBinding>,
    ) -> Self {
        let mut policy = Self::default();
        for role in cluster_roles {
            let name = role.metadata.name.unwrap_or_default();
            policy
                .cluster_roles
                .insert(name, role.rules.unwrap_or_default());
        }
        for role in roles {
            let key = (
                role.metadata.namespace.unwrap_or_default(),
                role.metadata.name.unwrap_or_default(),
            );
            policy.roles.insert(key, role.rules.unwrap_or_default());
        }
        for binding in cluster_bindings {
            policy.cluster_bindings.push(Binding {
                subjects: binding.subjects.unwrap_or_default(),
                role_ref: binding.role_ref,
            });
        }
        for binding in bindings {
            let namespace = binding.metadata.namespace.unwrap_or_default();
            policy.bindings.entry(namespace).or_default().push(Binding {
                subjects: binding.subjects.unwrap_or_default(),
                role_ref: binding.role_ref,
            });
        }
        policy
    }

    /// Whether a role bound to `identity` allows `request`.
    pub fn authorize(&self, identity: &Identity, request: &Attributes) -> Decision {
        let mut missing = Vec::new();
        if self.allowed_by(&self.cluster_bindings, "", identity, request, &mut missing) {
            return Decision::Allow;
        }
        if let Target::Resource(resource) = &request.target
            && let Some(bindings) = self.bindings.get(&resource.namespace)
            && !resource.namespace.is_empty()
            && self.allowed_by(
                bindings,
                &resource.namespace,
                identity,
                request,
                &mut missing,
            )
        {
            return Decision::Allow;
        }
        let reason = match missing.as_slice() {
            [] => String::new(),
            [one] => format!("RBAC: {one}"),
            many => {
                let many: Vec<String> = many.iter().map(MissingRole::to_string).collect();
                format!("RBAC: [{}]", many.join(", "))
            }
        };
        Decision::Deny { reason }
    }

    /// Whether a binding among `bindings` (of `namespace`, "" for cluster bindings)
    /// grants the request; roles they name that do not exist go to `missing`.
    fn allowed_by(
        &self,
        bindings: &[Binding],
        namespace: &str,
        identity: &Identity,
        request: &Attributes,
        missing: &mut Vec<MissingRole>,
    ) -> bool {
        let bound = bindings.iter().filter(|b| {
            b.subjects
                .iter()
                .any(|s| applies_to(s, identity, namespace))
        });
        for binding in bound {
            match self.rules_of(&binding.role_ref, namespace) {
                Ok(rules) if rules.iter().any(|r| rule_allows(r, request)) => return true,
                Ok(_) => {}
                Err(not_found) if !missing.contains(&not_found) => missing.push(not_found),
                Err(_) => {}
            }
        }
        false
    }

    /// The rules a binding in `namespace` ("" for a ClusterRoleBinding) grants.
    fn rules_of(&self, role: &RoleRef, namespace: &str) -> Result<&[PolicyRule], MissingRole> {
        let found = match role.kind.as_str() {
            "ClusterRole" => self.cluster_roles.get(&role.name),
            "Role" if !namespace.is_empty() => {
                self.roles.get(&(namespace.to_string(), role.name.clone()))
            }
            _ => None,
        };
        found.map(Vec::as_slice).ok_or_else(|| MissingRole {
            kind: role.kind.to_lowercase(),
            name: role.name.clone(),
        })
    }
}

/// A role a binding names that does not exist (or, a Role named by a
/// ClusterRoleBinding, cannot be found); upstream puts these in a denial's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}.rbac.authorization.k8s.io {name:?} not found")]
struct MissingRole {
    /// `clusterrole` or `role` (the roleRef's kind, lower-case).
    kind: String,
    /// The roleRef's name.
    name: String,
}

/// Whether `subject` of a binding in `namespace` ("" for cluster bindings) is `identity`.
/// A ServiceAccount subject without a namespace means one in the binding's namespace.
pub fn applies_to(subject: &Subject, identity: &Identity, namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => identity.user == subject.name,
        "Group" => identity.groups.contains(&subject.name),
        "ServiceAccount" => {
            let account_namespace = subject
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(namespace);
            !account_namespace.is_empty()
                && identity.user == Identity::service_account(account_namespace, &subject.name).user
        }
        _ => false,
    }
}

/// Whether one rule allows the request.
pub fn rule_allows(rule: &PolicyRule, request: &Attributes) -> bool {
    if !has_or_star(&rule.verbs, &request.verb) {
        return false;
    }
    match &request.target {
        Target::Resource(resource) => resource_rule_allows(rule, resource),
        Target::NonResource { path } => rule
            .non_resource_urls
            .iter()
            .flatten()
            .any(|url| url_matches(url, path)),
    }
}

fn resource_rule_allows(rule: &PolicyRule, request: &ResourceRequest) -> bool {
    let groups = rule.api_groups.as_deref().unwrap_or_default();
    let resources = rule.resources.as_deref().unwrap_or_default();
    let names = rule.resource_names.as_deref().unwrap_or_default();
    has_or_star(groups, &request.api_group)
        && resources
            .iter()
            .any(|r| resource_matches(r, &request.resource, &request.subresource))
        && (names.is_empty() || names.contains(&request.name))
}

fn has_or_star(list: &[String], wanted: &str) -> bool {
    list.iter().any(|item| item == "*" || item == wanted)
}

/// `*`, the resource (`resource/subresource` for a subresource), or `*/subresource`.
fn resource_matches(rule: &str, resource: &str, subresource: &str) -> bool {
    if rule == "*" {
        return true;
    }
    if subresource.is_empty() {
        return rule == resource;
    }
    rule.strip_prefix("*/") == Some(subresource)
        || rule
            .strip_prefix(resource)
            .and_then(|r| r.strip_prefix('/'))
            == Some(subresource)
}

/// An exact path, `*`, or a prefix ending in `*`.
fn url_matches(rule: &str, path: &str) -> bool {
    rule == "*"
        || rule == path
        || (rule.ends_with('*') && path.starts_with(rule.trim_end_matches('*')))
}

#[cfg(test)]
mod tests;
