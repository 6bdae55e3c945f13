//! Minimal OpenAPI documents. v3: enough for kubectl to learn that every kind's
//! PATCH takes `fieldValidation`, so it validates on the server. v2: an empty
//! document, which kubectl before 1.28 must download before `apply`; with no
//! schemas in it, kubectl falls back to its built-in types for patches.

use axum::extract::Path;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::discovery::KUBERNETES_MINOR;
use super::resources::json_response;
use crate::error::{ApiError, Result};
use crate::registry::{self, Resource};

/// Changes whenever the documents could: they are generated from the registry of this build.
const HASH: &str = env!("CARGO_PKG_VERSION");

fn group_versions() -> Vec<String> {
    let mut paths = vec!["api/v1".to_string()];
    paths.extend(
        registry::groups()
            .into_iter()
            .map(|(g, v)| format!("apis/{g}/{v}")),
    );
    paths
}

pub async fn index() -> Response {
    let paths: Map<String, Value> = group_versions()
        .into_iter()
        .map(|path| {
            let url = format!("/openapi/v3/{path}?hash={HASH}");
            (path, json!({"serverRelativeURL": url}))
        })
        .collect();
    json_response(StatusCode::OK, &json!({"paths": paths}))
}

pub async fn document(Path(path): Path<String>) -> Result<Response> {
    if !group_versions().contains(&path) {
        return Err(ApiError::NoSuchResource);
    }
    let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", version] => (String::new(), version.to_string()),
        ["apis", group, version] => (group.to_string(), version.to_string()),
        _ => return Err(ApiError::NoSuchResource),
    };
    let mut paths = Map::new();
    for resource in registry::all()
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        paths.insert(
            item_path(resource),
            json!({"patch": patch_operation(resource)}),
        );
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": format!("v1.{KUBERNETES_MINOR}.0")},
            "paths": paths,
            "components": {"schemas": {}},
        }),
    ))
}

/// The one protobuf message kubectl reads from /openapi/v2 (gnostic's
/// `openapi.v2.Document`), with only the fields that say what it is.
#[derive(Clone, PartialEq, prost::Message)]
struct DocumentV2 {
    #[prost(string, tag = "1")]
    swagger: String,
    #[prost(message, optional, tag = "2")]
    info: Option<InfoV2>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct InfoV2 {
    #[prost(string, tag = "1")]
    title: String,
    #[prost(string, tag = "2")]
    version: String,
}

pub async fn document_v2(headers: HeaderMap) -> Response {
    let accept = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let version = format!("v1.{KUBERNETES_MINOR}.0");
    if accept.contains("protobuf") {
        let document = DocumentV2 {
            swagger: "2.0".into(),
            info: Some(InfoV2 {
                title: "Kubernetes".into(),
                version,
            }),
        };
        return (
            StatusCode::OK,
            [(
                CONTENT_TYPE,
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            )],
            prost::Message::encode_to_vec(&document),
        )
            .into_response();
    }
    json_response(
        StatusCode::OK,
        &json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": version}, "paths": {}, "definitions": {}}),
    )
}

fn item_path(resource: &Resource) -> String {
    let root = if resource.group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{}/{}", resource.group, resource.version)
    };
    if resource.namespaced {
        format!(
            "{root}/namespaces/{{namespace}}/{}/{{name}}",
            resource.plural
        )
    } else {
        format!("{root}/{}/{{name}}", resource.plural)
    }
}

fn patch_operation(resource: &Resource) -> Value {
    json!({
        "operationId": format!("patch{}", resource.kind),
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": {"group": resource.group, "version": resource.version, "kind": resource.kind},
        "parameters": [
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
        ],
        "responses": {"200": {"description": "OK"}},
    })
}
