//! What a request asks to do, in the terms RBAC rules are written in, worked out
//! from the path as upstream's `RequestInfoFactory` does
//! (apiserver/pkg/endpoints/request/requestinfo.go).

use axum::http::Method;

use crate::selectors::FieldSelector;

/// A request as RBAC sees it: a verb on a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// get, list, watch, create, update, patch, delete, deletecollection; for a
    /// non-resource request, the HTTP method in lower case.
    pub verb: String,
    /// What the verb is applied to.
    pub target: Target,
}

/// What a request is about: a resource, or a path outside the resource API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A request under `/api/V/...` or `/apis/G/V/...`.
    Resource(ResourceRequest),
    /// Anything but `/api/V/...` and `/apis/G/V/...`: discovery, /version, /openapi.
    NonResource {
        /// The request's path.
        path: String,
    },
}

/// A request on a resource, in RBAC's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceRequest {
    /// The API group; "" for the core group.
    pub api_group: String,
    /// The resource's plural name.
    pub resource: String,
    /// The subresource (`status`), or "".
    pub subresource: String,
    /// Empty for cluster-scoped requests (and lists across namespaces).
    pub namespace: String,
    /// The object's name; empty for lists, collection deletes and creates.
    pub name: String,
}

/// Path segments after `namespaces/NAME` that are the namespace's own subresources.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

impl Attributes {
    /// The attributes of `method` on `path`. `watch` is the request's `watch`
    /// parameter and `field_selector` its `fieldSelector`, as the handlers read them.
    pub fn of(method: &Method, path: &str, watch: bool, field_selector: Option<&str>) -> Self {
        match resource_request(method, path, watch, field_selector) {
            Some((verb, request)) => Self {
                verb,
                target: Target::Resource(request),
            },
            None => Self {
                verb: method.as_str().to_ascii_lowercase(),
                target: Target::NonResource {
                    path: path.to_string(),
                },
            },
        }
    }
}

fn resource_request(
    method: &Method,
    path: &str,
    watch: bool,
    field_selector: Option<&str>,
) -> Option<(String, ResourceRequest)> {
    let trimmed = path.trim_matches('/');
    let parts: Vec<&str> = trimmed.split('/').collect();
    let (api_group, mut parts) = match parts.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
        _ => return None,
    };
    let mut verb = match parts {
        ["watch", rest @ ..] if !rest.is_empty() => {
            parts = rest;
            "watch"
        }
        _ => method_verb(method),
    };
    let mut request = ResourceRequest {
        api_group: api_group.to_string(),
        ..ResourceRequest::default()
    };
    if let ["namespaces", namespace, rest @ ..] = parts {
        request.namespace = namespace.to_string();
        if rest
            .first()
            .is_some_and(|s| !NAMESPACE_SUBRESOURCES.contains(s))
        {
            parts = rest;
        }
    }
    request.resource = parts[0].to_string();
    request.name = parts.get(1).unwrap_or(&"").to_string();
    request.subresource = parts.get(2).unwrap_or(&"").to_string();
    match verb {
        "get" if request.name.is_empty() => {
            verb = if watch { "watch" } else { "list" };
            if let Some(name) = field_selector.and_then(FieldSelector::pinned_name)
                && is_path_segment_name(&name)
            {
                request.name = name;
            }
        }
        // Upstream calls a watch of one named object `get`; here it is the watch it is.
        "get" if watch => verb = "watch",
        "delete" if request.name.is_empty() => verb = "deletecollection",
        _ => {}
    }
    Some((verb.to_string(), request))
}

fn method_verb(method: &Method) -> &'static str {
    match *method {
        Method::POST => "create",
        Method::GET | Method::HEAD => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    }
}

fn is_path_segment_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe(method: Method, path: &str, watch: bool, fields: Option<&str>) -> String {
        let attributes = Attributes::of(&method, path, watch, fields);
        match attributes.target {
            Target::Resource(r) => format!(
                "{} {}/{}/{} ns={} name={}",
                attributes.verb, r.api_group, r.resource, r.subresource, r.namespace, r.name
            ),
            Target::NonResource { path } => format!("{} url {path}", attributes.verb),
        }
    }

    #[test]
    fn requests_read_as_upstream_reads_them() {
        let cases = [
            (
                Method::GET,
                "/api/v1/persistentvolumes",
                false,
                None,
                "list /persistentvolumes/ ns= name=",
            ),
            (
                Method::GET,
                "/api/v1/persistentvolumes",
                true,
                None,
                "watch /persistentvolumes/ ns= name=",
            ),
            (
                Method::GET,
                "/api/v1/watch/persistentvolumes/pv1",
                false,
                None,
                "watch /persistentvolumes/ ns= name=pv1",
            ),
            (
                Method::GET,
                "/api/v1/persistentvolumes/pv1",
                true,
                None,
                "watch /persistentvolumes/ ns= name=pv1",
            ),
            (
                Method::GET,
                "/api/v1/persistentvolumes",
                false,
                Some("metadata.name=pv1"),
                "list /persistentvolumes/ ns= name=pv1",
            ),
            (
                Method::GET,
                "/api/v1/persistentvolumes",
                true,
                Some("status.phase=Bound,metadata.name==pv2"),
                "watch /persistentvolumes/ ns= name=pv2",
            ),
            (
                Method::GET,
                "/api/v1/persistentvolumes",
                false,
                Some("metadata.name!=pv1"),
                "list /persistentvolumes/ ns= name=",
            ),
            (
                Method::PUT,
                "/api/v1/persistentvolumes/pv1/status",
                false,
                None,
                "update /persistentvolumes/status ns= name=pv1",
            ),
            (
                Method::POST,
                "/api/v1/namespaces/ns1/persistentvolumeclaims",
                false,
                None,
                "create /persistentvolumeclaims/ ns=ns1 name=",
            ),
            (
                Method::PATCH,
                "/apis/storage.k8s.io/v1/storageclasses/fast",
                false,
                None,
                "patch storage.k8s.io/storageclasses/ ns= name=fast",
            ),
            (
                Method::DELETE,
                "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases",
                false,
                None,
                "deletecollection coordination.k8s.io/leases/ ns=kube-system name=",
            ),
            (
                Method::DELETE,
                "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l",
                false,
                None,
                "delete coordination.k8s.io/leases/ ns=kube-system name=l",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/ns1",
                false,
                None,
                "get /namespaces/ ns=ns1 name=ns1",
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/ns1/status",
                false,
                None,
                "update /namespaces/status ns=ns1 name=ns1",
            ),
            (
                Method::GET,
                "/api/v1/namespaces",
                false,
                None,
                "list /namespaces/ ns= name=",
            ),
            (Method::GET, "/api", false, None, "get url /api"),
            (Method::GET, "/api/v1", false, None, "get url /api/v1"),
            (
                Method::GET,
                "/apis/storage.k8s.io/v1",
                false,
                None,
                "get url /apis/storage.k8s.io/v1",
            ),
            (
                Method::GET,
                "/openapi/v3/apis/storage.k8s.io/v1",
                false,
                None,
                "get url /openapi/v3/apis/storage.k8s.io/v1",
            ),
            (Method::POST, "/version", false, None, "post url /version"),
        ];
        for (method, path, watch, fields, expected) in cases {
            assert_eq!(describe(method, path, watch, fields), expected, "{path}");
        }
    }
}
