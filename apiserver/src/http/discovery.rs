//! Discovery documents and /version, generated from the registry.

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::resources::json_response;
use crate::error::{ApiError, Result};
use crate::registry::{self, Resource};

/// The Kubernetes release whose API this server follows.
pub const KUBERNETES_MINOR: &str = "33";
const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

pub async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "major": "1",
            "minor": KUBERNETES_MINOR,
            "gitVersion": format!("v1.{KUBERNETES_MINOR}.0-stowage.{}", env!("CARGO_PKG_VERSION")),
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": "none (Rust)",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        }),
    )
}

pub async fn core_versions(headers: HeaderMap) -> Response {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
        }),
    )
}

pub async fn core_resources() -> Response {
    json_response(StatusCode::OK, &resource_list("", "v1"))
}

pub async fn groups() -> Response {
    let groups: Vec<Value> = registry::groups()
        .into_iter()
        .map(|(group, version)| group_document(group, version))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
}

pub async fn group(Path(group): Path<String>) -> Result<Response> {
    let (name, version) = registry::groups()
        .into_iter()
        .find(|(g, _)| *g == group)
        .ok_or(ApiError::NoSuchResource)?;
    let mut document = group_document(name, version);
    document["kind"] = json!("APIGroup");
    document["apiVersion"] = json!("v1");
    Ok(json_response(StatusCode::OK, &document))
}

pub async fn group_resources(Path((group, version)): Path<(String, String)>) -> Result<Response> {
    if !registry::groups().contains(&(group.as_str(), version.as_str())) {
        return Err(ApiError::NoSuchResource);
    }
    Ok(json_response(
        StatusCode::OK,
        &resource_list(&group, &version),
    ))
}

fn group_document(group: &str, version: &str) -> Value {
    let group_version = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [group_version], "preferredVersion": group_version})
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for resource in registry::all()
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resources.push(describe(resource));
        if resource.has_status {
            resources.push(json!({
                "name": format!("{}/status", resource.plural),
                "singularName": "",
                "namespaced": resource.namespaced,
                "kind": resource.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

fn describe(resource: &Resource) -> Value {
    let mut document = json!({
        "name": resource.plural,
        "singularName": resource.singular,
        "namespaced": resource.namespaced,
        "kind": resource.kind,
        "verbs": VERBS,
    });
    if !resource.short_names.is_empty() {
        document["shortNames"] = json!(resource.short_names);
    }
    document
}
