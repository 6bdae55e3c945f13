//! Table-driven checks of the evaluator, one rule of upstream's RBAC authorizer per row.

use axum::http::Method;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{Decision, Policy, rule_allows};
use crate::auth::attributes::{Attributes, ResourceRequest, Target};
use crate::auth::authn::{Authenticator, Identity, TokenFile};

fn decode<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap_or_else(|e| panic!("test object: {e}"))
}

/// A request on `group`/`resource` (`resource/subresource` for a subresource).
fn on(verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> Attributes {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    Attributes {
        verb: verb.into(),
        target: Target::Resource(ResourceRequest {
            api_group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }),
    }
}

fn url(verb: &str, path: &str) -> Attributes {
    Attributes {
        verb: verb.into(),
        target: Target::NonResource { path: path.into() },
    }
}

#[test]
fn rules_match_as_upstream_matches_them() {
    let pv_rule = json!({"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["get", "list", "watch", "create"]});
    let cases: Vec<(&str, Value, Attributes, bool)> = vec![
        (
            "a listed verb on a listed resource",
            pv_rule.clone(),
            on("create", "", "persistentvolumes", "", ""),
            true,
        ),
        (
            "a verb not listed",
            pv_rule.clone(),
            on("delete", "", "persistentvolumes", "", "pv1"),
            false,
        ),
        (
            "watch is its own verb",
            json!({"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["list"]}),
            on("watch", "", "persistentvolumes", "", ""),
            false,
        ),
        (
            "another group",
            pv_rule.clone(),
            on("get", "storage.k8s.io", "persistentvolumes", "", ""),
            false,
        ),
        (
            "a subresource is not its resource",
            pv_rule.clone(),
            on("get", "", "persistentvolumes/status", "", "pv1"),
            false,
        ),
        (
            "resource/subresource names the subresource",
            json!({"apiGroups": [""], "resources": ["persistentvolumes/status"], "verbs": ["update"]}),
            on("update", "", "persistentvolumes/status", "", "pv1"),
            true,
        ),
        (
            "resource/subresource is not the resource",
            json!({"apiGroups": [""], "resources": ["persistentvolumes/status"], "verbs": ["update"]}),
            on("update", "", "persistentvolumes", "", "pv1"),
            false,
        ),
        (
            "*/subresource covers every resource's",
            json!({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["patch"]}),
            on("patch", "", "persistentvolumeclaims/status", "ns", "c"),
            true,
        ),
        (
            "*/subresource is no other subresource",
            json!({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["patch"]}),
            on("patch", "", "namespaces/finalize", "ns", "ns"),
            false,
        ),
        (
            "* verbs, groups and resources",
            json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}),
            on("deletecollection", "coordination.k8s.io", "leases", "x", ""),
            true,
        ),
        (
            "resourceNames admit the named object",
            json!({"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "resourceNames": ["fast"], "verbs": ["get", "delete"]}),
            on("delete", "storage.k8s.io", "storageclasses", "", "fast"),
            true,
        ),
        (
            "resourceNames refuse other objects",
            json!({"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "resourceNames": ["fast"], "verbs": ["get"]}),
            on("get", "storage.k8s.io", "storageclasses", "", "slow"),
            false,
        ),
        (
            "resourceNames refuse an unnamed list",
            json!({"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "resourceNames": ["fast"], "verbs": ["list"]}),
            on("list", "storage.k8s.io", "storageclasses", "", ""),
            false,
        ),
        (
            "resource rules say nothing of URLs",
            json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}),
            url("get", "/version"),
            false,
        ),
        (
            "an exact URL",
            json!({"nonResourceURLs": ["/version"], "verbs": ["get"]}),
            url("get", "/version"),
            true,
        ),
        (
            "a URL prefix with *",
            json!({"nonResourceURLs": ["/apis/*"], "verbs": ["get"]}),
            url("get", "/apis/storage.k8s.io/v1"),
            true,
        ),
        (
            "the prefix needs its slash",
            json!({"nonResourceURLs": ["/apis/*"], "verbs": ["get"]}),
            url("get", "/apis"),
            false,
        ),
        (
            "* is every URL",
            json!({"nonResourceURLs": ["*"], "verbs": ["get"]}),
            url("get", "/openapi/v2"),
            true,
        ),
        (
            "URL rules need the verb too",
            json!({"nonResourceURLs": ["/healthz"], "verbs": ["get"]}),
            url("post", "/healthz"),
            false,
        ),
        (
            "URL rules say nothing of resources",
            json!({"nonResourceURLs": ["*"], "verbs": ["*"]}),
            on("get", "", "nodes", "", "n"),
            false,
        ),
    ];
    for (name, rule, request, allowed) in cases {
        let rule: PolicyRule = decode(rule);
        assert_eq!(rule_allows(&rule, &request), allowed, "{name}");
    }
}

/// The policy of `objects` (kinds as in YAML), as the store would hold it.
fn policy(objects: &[Value]) -> Policy {
    let of = |kind: &'static str| objects.iter().filter(move |o| o["kind"] == kind).cloned();
    Policy::new(
        of("ClusterRole").map(decode::<ClusterRole>).collect(),
        of("Role").map(decode::<Role>).collect(),
        of("ClusterRoleBinding")
            .map(decode::<ClusterRoleBinding>)
            .collect(),
        of("RoleBinding").map(decode::<RoleBinding>).collect(),
    )
}

/// An identity as the authenticator hands it out, with the implied groups.
fn signed_in(identity: Identity) -> Identity {
    let mut file = TokenFile::default();
    let token = file.ensure(identity);
    let authenticated = Authenticator::new(&file).authenticate(&token);
    authenticated
        .map(|i| (*i).clone())
        .unwrap_or_else(|| panic!("no identity"))
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"kind": "ClusterRole", "metadata": {"name": name}, "rules": rules})
}

fn role(namespace: &str, name: &str, rules: Value) -> Value {
    json!({"kind": "Role", "metadata": {"name": name, "namespace": namespace}, "rules": rules})
}

fn cluster_binding(role: &str, subjects: Value) -> Value {
    json!({"kind": "ClusterRoleBinding", "metadata": {"name": role},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
           "subjects": subjects})
}

fn binding(namespace: &str, kind: &str, role: &str, subjects: Value) -> Value {
    json!({"kind": "RoleBinding", "metadata": {"name": role, "namespace": namespace},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
           "subjects": subjects})
}

const ALLOWED: Option<&str> = None;

fn denied(reason: &'static str) -> Option<&'static str> {
    Some(reason)
}

/// One row: what it shows, the objects of the policy, who asks, what, and the
/// denial's reason (None when allowed).
type Case = (
    &'static str,
    Vec<Value>,
    Identity,
    Attributes,
    Option<&'static str>,
);

#[test]
fn bindings_grant_their_roles_to_their_subjects_where_upstream_says() {
    let read_pvs = json!([{"apiGroups": [""], "resources": ["persistentvolumes", "persistentvolumeclaims"], "verbs": ["get", "list"]}]);
    let leases = json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "update"]}]);
    let controller = || Identity::service_account("stowage-system", "stowage-controller");
    let alice = || Identity::new("alice", &["devs"]);
    let sa = |ns: &str| json!([{"kind": "ServiceAccount", "name": "stowage-controller", "namespace": ns}]);
    let group = |name: &str| json!([{"kind": "Group", "name": name}]);
    let user = |name: &str| json!([{"kind": "User", "name": name}]);
    // The reader ClusterRole bound cluster-wide to `subjects`.
    let readers = |subjects: Value| {
        vec![
            cluster_role("reader", read_pvs.clone()),
            cluster_binding("reader", subjects),
        ]
    };
    // The reader ClusterRole bound to alice in team-a.
    let alice_reads_team_a = || {
        vec![
            cluster_role("reader", read_pvs.clone()),
            binding("team-a", "ClusterRole", "reader", user("alice")),
        ]
    };
    // A leases Role in `namespace`, bound there to a ServiceAccount named without one.
    let leases_in = |namespace: &str| {
        vec![
            role(namespace, "leases", leases.clone()),
            binding(
                namespace,
                "Role",
                "leases",
                json!([{"kind": "ServiceAccount", "name": "stowage-controller"}]),
            ),
        ]
    };
    let lease =
        |verb: &str, namespace: &str| on(verb, "coordination.k8s.io", "leases", namespace, "l");
    let cases: Vec<Case> = vec![
        (
            "a ClusterRoleBinding grants cluster-wide",
            readers(sa("stowage-system")),
            controller(),
            on("list", "", "persistentvolumeclaims", "", ""),
            ALLOWED,
        ),
        (
            "and in every namespace",
            readers(sa("stowage-system")),
            controller(),
            on("get", "", "persistentvolumeclaims", "team-a", "c"),
            ALLOWED,
        ),
        (
            "a service account subject is that account only",
            readers(sa("other")),
            controller(),
            on("list", "", "persistentvolumes", "", ""),
            denied(""),
        ),
        (
            "a ClusterRole bound in a namespace applies in that namespace",
            alice_reads_team_a(),
            alice(),
            on("get", "", "persistentvolumeclaims", "team-a", "c"),
            ALLOWED,
        ),
        (
            "and not in another",
            alice_reads_team_a(),
            alice(),
            on("get", "", "persistentvolumeclaims", "team-b", "c"),
            denied(""),
        ),
        (
            "nor cluster-wide",
            alice_reads_team_a(),
            alice(),
            on("list", "", "persistentvolumeclaims", "", ""),
            denied(""),
        ),
        (
            "a Role is its namespace's",
            leases_in("stowage-system"),
            controller(),
            lease("update", "stowage-system"),
            ALLOWED,
        ),
        (
            "a service account without a namespace is the binding's namespace's",
            leases_in("kube-system"),
            controller(),
            lease("update", "kube-system"),
            denied(""),
        ),
        (
            "a binding names a Role of its own namespace",
            vec![
                role("elsewhere", "leases", leases.clone()),
                binding("stowage-system", "Role", "leases", sa("stowage-system")),
            ],
            controller(),
            lease("get", "stowage-system"),
            denied("RBAC: role.rbac.authorization.k8s.io \"leases\" not found"),
        ),
        (
            "a group subject is every member",
            readers(group("devs")),
            alice(),
            on("get", "", "persistentvolumes", "", "pv"),
            ALLOWED,
        ),
        (
            "service accounts are in system:serviceaccounts:NS",
            readers(group("system:serviceaccounts:stowage-system")),
            controller(),
            on("get", "", "persistentvolumes", "", "pv"),
            ALLOWED,
        ),
        (
            "everyone signed in is in system:authenticated",
            vec![
                cluster_role(
                    "discovery",
                    json!([{"nonResourceURLs": ["/api", "/api/*"], "verbs": ["get"]}]),
                ),
                cluster_binding("discovery", group("system:authenticated")),
            ],
            alice(),
            url("get", "/api/v1"),
            ALLOWED,
        ),
        (
            "a user subject is that user by name",
            readers(user("bob")),
            alice(),
            on("get", "", "persistentvolumes", "", "pv"),
            denied(""),
        ),
        (
            "rules of several bindings add up",
            vec![
                cluster_role("reader", read_pvs.clone()),
                cluster_role("leases", leases.clone()),
                cluster_binding("reader", sa("stowage-system")),
                cluster_binding("leases", sa("stowage-system")),
            ],
            controller(),
            lease("update", "x"),
            ALLOWED,
        ),
        (
            "missing roles are named in the reason",
            vec![
                cluster_binding("gone", sa("stowage-system")),
                binding("team-a", "ClusterRole", "also-gone", sa("stowage-system")),
            ],
            controller(),
            on("get", "", "persistentvolumes", "team-a", "x"),
            denied(
                "RBAC: [clusterrole.rbac.authorization.k8s.io \"gone\" not found, clusterrole.rbac.authorization.k8s.io \"also-gone\" not found]",
            ),
        ),
        (
            "nothing bound, nothing allowed",
            vec![],
            alice(),
            on("get", "", "persistentvolumes", "", "pv"),
            denied(""),
        ),
    ];
    for (name, objects, identity, request, expected) in cases {
        let decision = policy(&objects).authorize(&signed_in(identity), &request);
        let expected = match expected {
            None => Decision::Allow,
            Some(reason) => Decision::Deny {
                reason: reason.into(),
            },
        };
        assert_eq!(decision, expected, "{name}");
    }
}

#[test]
fn attributes_of_real_paths_meet_the_rules() {
    let objects = [
        cluster_role(
            "status",
            json!([{"apiGroups": [""], "resources": ["persistentvolumes/status"], "verbs": ["update"]}]),
        ),
        cluster_binding("status", json!([{"kind": "User", "name": "alice"}])),
    ];
    let alice = signed_in(Identity::new("alice", &[]));
    let allowed = |method: Method, path: &str| {
        policy(&objects).authorize(&alice, &Attributes::of(&method, path, false, None))
            == Decision::Allow
    };
    assert!(allowed(Method::PUT, "/api/v1/persistentvolumes/pv1/status"));
    assert!(!allowed(Method::PUT, "/api/v1/persistentvolumes/pv1"));
    assert!(!allowed(
        Method::PATCH,
        "/api/v1/persistentvolumes/pv1/status"
    ));
}
