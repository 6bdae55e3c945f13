//! Resource paths: `/api/v1/...` and `/apis/GROUP/VERSION/...`, cluster-wide
//! or under `namespaces/NS/`, with an optional name and `status` subresource.

use crate::error::{ApiError, Result};
use crate::registry::{self, Resource};

#[derive(Debug)]
pub struct Target {
    pub resource: &'static Resource,
    /// Set for namespaced paths; None lists across all namespaces.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub status: bool,
    /// The legacy `/watch/` path prefix.
    pub watch: bool,
}

pub fn parse(path: &str) -> Result<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, mut rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::NoSuchResource),
    };
    let watch = rest.first() == Some(&"watch");
    if watch {
        rest = &rest[1..];
    }
    let (namespace, rest) = match rest {
        ["namespaces", namespace, plural, tail @ ..] if !is_namespace_subresource(plural, tail) => {
            (Some(namespace.to_string()), [&[*plural][..], tail].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return Err(ApiError::NoSuchResource),
    };
    let resource = registry::find(group, version, plural).ok_or(ApiError::NoSuchResource)?;
    if namespace.is_some() && !resource.namespaced {
        return Err(ApiError::NoSuchResource);
    }
    let status = match subresource {
        None => false,
        Some("status") if resource.has_status => true,
        Some(_) => return Err(ApiError::NoSuchResource),
    };
    if name.is_some_and(|n| n.is_empty()) {
        return Err(ApiError::NoSuchResource);
    }
    Ok(Target {
        resource,
        namespace,
        name: name.map(str::to_string),
        status,
        watch,
    })
}

/// `namespaces/NAME/status` is the namespace's own subresource, not a kind.
fn is_namespace_subresource(segment: &str, tail: &[&str]) -> bool {
    tail.is_empty() && matches!(segment, "status" | "finalize")
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn describe(path: &str) -> String {
        match parse(path) {
            Ok(t) => format!(
                "{} ns={:?} name={:?} status={} watch={}",
                t.resource.plural, t.namespace, t.name, t.status, t.watch
            ),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn paths_resolve_as_upstream_lays_them_out() {
        assert_eq!(
            describe("/api/v1/persistentvolumes"),
            "persistentvolumes ns=None name=None status=false watch=false"
        );
        assert_eq!(
            describe("/api/v1/persistentvolumes/pv1/status"),
            "persistentvolumes ns=None name=Some(\"pv1\") status=true watch=false"
        );
        assert_eq!(
            describe("/api/v1/namespaces/default/persistentvolumeclaims/c1"),
            "persistentvolumeclaims ns=Some(\"default\") name=Some(\"c1\") status=false watch=false"
        );
        assert_eq!(
            describe("/api/v1/namespaces/default"),
            "namespaces ns=None name=Some(\"default\") status=false watch=false"
        );
        assert_eq!(
            describe("/api/v1/namespaces/default/status"),
            "namespaces ns=None name=Some(\"default\") status=true watch=false"
        );
        assert_eq!(
            describe("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"),
            "leases ns=Some(\"kube-system\") name=None status=false watch=false"
        );
        assert_eq!(
            describe("/api/v1/watch/persistentvolumes"),
            "persistentvolumes ns=None name=None status=false watch=true"
        );
    }

    #[test]
    fn unknown_and_misplaced_resources_are_not_found() {
        for path in [
            "/api/v1/configmaps",
            "/api/v2/persistentvolumes",
            "/api/v1/namespaces/default/persistentvolumes",
            "/apis/storage.k8s.io/v1/storageclasses/fast/status",
            "/api/v1/persistentvolumes/pv1/status/extra",
            "/other",
        ] {
            assert!(describe(path).starts_with("error"), "{path}");
        }
    }
}
