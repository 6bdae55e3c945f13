//! The roles every cluster starts with, as kube-apiserver's bootstrap policy makes
//! them: `cluster-admin` for system:masters, discovery and /version for everyone
//! signed in. Created when absent at each start, so one deleted comes back then.

use serde_json::{Value, json};

use crate::error::Result;
use crate::objects::{self, FieldValidation};
use crate::registry::Resource;
use crate::resources::rbac::{CLUSTER_ROLE, CLUSTER_ROLE_BINDING, GROUP};
use crate::store::Store;

const DISCOVERY_URLS: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/openapi",
    "/openapi/*",
    "/readyz",
    "/version",
    "/version/",
];
const PUBLIC_INFO_URLS: &[&str] = &["/healthz", "/livez", "/readyz", "/version", "/version/"];

/// Creates upstream's default roles and bindings that the store does not hold yet.
pub async fn seed(store: &Store) -> Result<()> {
    let roles = [
        (
            "cluster-admin",
            json!([
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ]),
            vec!["system:masters"],
        ),
        (
            "system:discovery",
            json!([{"nonResourceURLs": DISCOVERY_URLS, "verbs": ["get"]}]),
            vec!["system:authenticated"],
        ),
        (
            "system:public-info-viewer",
            json!([{"nonResourceURLs": PUBLIC_INFO_URLS, "verbs": ["get"]}]),
            vec!["system:authenticated", "system:unauthenticated"],
        ),
    ];
    for (name, rules, groups) in roles {
        create_if_absent(store, &CLUSTER_ROLE, name, json!({"rules": rules})).await?;
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"apiGroup": GROUP, "kind": "Group", "name": g}))
            .collect();
        let binding = json!({
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": name},
            "subjects": subjects,
        });
        create_if_absent(store, &CLUSTER_ROLE_BINDING, name, binding).await?;
    }
    Ok(())
}

async fn create_if_absent(
    store: &Store,
    resource: &'static Resource,
    name: &str,
    mut object: Value,
) -> Result<()> {
    let key = resource.key("", name);
    if store
        .read(move |reader| Ok(reader.get(&key)?.is_some()))
        .await?
    {
        return Ok(());
    }
    object["metadata"] = json!({
        "name": name,
        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    });
    store
        .write(Box::new(move |reader| {
            objects::create(resource, "", object, FieldValidation::Strict, reader)
        }))
        .await?;
    Ok(())
}
