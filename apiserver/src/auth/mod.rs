//! Who may do what: the identity a bearer token stands for (`authn`), what a request
//! asks (`attributes`), and whether RBAC allows it (`rbac`, over the store's roles and
//! bindings as `policy` keeps them; `bootstrap` seeds upstream's default roles).

pub mod attributes;
pub mod authn;
pub mod bootstrap;
mod policy;
pub mod rbac;

use attributes::{Attributes, Target};
use authn::Identity;
use policy::PolicyCache;
use rbac::Decision;

use crate::error::{ApiError, Result};
use crate::store::Store;

/// Decides every authenticated request.
pub struct Authorizer {
    policy: PolicyCache,
}

impl Authorizer {
    /// An authorizer over the roles and bindings in `store`.
    pub async fn open(store: Store) -> Result<Self> {
        Ok(Self {
            policy: PolicyCache::open(store).await?,
        })
    }

    /// Ok when `identity` may make `request`; otherwise the 403 to answer. Members of
    /// system:masters are allowed without looking, as upstream's privileged group is.
    pub async fn authorize(&self, identity: &Identity, request: &Attributes) -> Result<()> {
        if identity.is_master() {
            return Ok(());
        }
        match self.policy.current().await?.authorize(identity, request) {
            Decision::Allow => Ok(()),
            Decision::Deny { reason } => Err(forbidden(identity, request, &reason)),
        }
    }
}

/// The refusal as kube-apiserver words it (`responsewriters.ForbiddenStatusError`).
pub fn forbidden(identity: &Identity, request: &Attributes, reason: &str) -> ApiError {
    let user = &identity.user;
    let verb = &request.verb;
    let (resource, group, name, denial) = match &request.target {
        Target::NonResource { path } => (
            String::new(),
            String::new(),
            String::new(),
            format!("User {user:?} cannot {verb} path {path:?}"),
        ),
        Target::Resource(r) => {
            let scope = if r.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {:?}", r.namespace)
            };
            let mut asked = r.resource.clone();
            if !r.subresource.is_empty() {
                asked = format!("{asked}/{}", r.subresource);
            }
            let denial = format!(
                "User {user:?} cannot {verb} resource {asked:?} in API group {:?} {scope}",
                r.api_group
            );
            (
                r.resource.clone(),
                r.api_group.clone(),
                r.name.clone(),
                denial,
            )
        }
    };
    let denial = if reason.is_empty() {
        denial
    } else {
        format!("{denial}: {reason}")
    };
    let qualified = if group.is_empty() {
        resource.clone()
    } else {
        format!("{resource}.{group}")
    };
    let message = match (qualified.is_empty(), name.is_empty()) {
        (true, _) => format!("forbidden: {denial}"),
        (false, true) => format!("{qualified} is forbidden: {denial}"),
        (false, false) => format!("{qualified} {name:?} is forbidden: {denial}"),
    };
    ApiError::Forbidden {
        group,
        resource,
        name,
        message,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Method;
    use serde_json::json;

    use super::*;

    fn status(method: Method, path: &str, reason: &str) -> serde_json::Value {
        let request = Attributes::of(&method, path, false, None);
        let mut status = forbidden(&Identity::new("NAME", &[]), &request, reason).status();
        status["metadata"] = json!({});
        status
    }

    /// The cases of upstream's responsewriters TestForbidden, through real paths.
    #[test]
    fn refusals_are_worded_as_upstream_words_them() {
        assert_eq!(
            status(Method::GET, "/whatever", ""),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "forbidden: User \"NAME\" cannot get path \"/whatever\"",
                   "reason": "Forbidden", "details": {}, "code": 403})
        );
        assert_eq!(
            status(Method::GET, "/api/v1/pod", "")["message"],
            "pod is forbidden: User \"NAME\" cannot list resource \"pod\" in API group \"\" at the cluster scope"
        );
        let named = status(Method::GET, "/api/v1/pod/mypod", "");
        assert_eq!(
            named["message"],
            "pod \"mypod\" is forbidden: User \"NAME\" cannot get resource \"pod\" in API group \"\" at the cluster scope"
        );
        assert_eq!(named["details"], json!({"name": "mypod", "kind": "pod"}));
        let grouped = status(
            Method::GET,
            "/apis/v2/v1/namespaces/test/pod/p/quota",
            "RBAC: x",
        );
        assert_eq!(
            grouped["message"],
            "pod.v2 \"p\" is forbidden: User \"NAME\" cannot get resource \"pod/quota\" in API group \"v2\" in the namespace \"test\": RBAC: x"
        );
        assert_eq!(
            grouped["details"],
            json!({"name": "p", "group": "v2", "kind": "pod"})
        );
    }
}
