//! Requests on resources: get, list, watch, create, update, patch, delete.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};

use super::route::{self, Target};
use super::{AppState, body};
use super::{list_stream, watch};
use crate::admission;
use crate::auth::authn::Identity;
use crate::error::{ApiError, Result};
use crate::meta;
use crate::objects::{self, DeleteOptions, FieldValidation, Location};
use crate::patch::PatchType;
use crate::protobuf;
use crate::registry::Resource;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{Reader, WriteOp};
use crate::table;

/// The query parameters of every verb; each verb reads the ones it knows.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Params {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<usize>,
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub watch: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub allow_watch_bookmarks: Option<String>,
    pub send_initial_events: Option<String>,
    pub dry_run: Option<String>,
    pub propagation_policy: Option<String>,
    pub field_validation: Option<String>,
    pub include_object: Option<String>,
}

pub fn flag(value: &Option<String>) -> bool {
    matches!(value.as_deref(), Some("true" | "1"))
}

pub async fn handle(
    State(app): State<Arc<AppState>>,
    identity: Option<Extension<Arc<Identity>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = std::time::Instant::now();
    tracing::trace!(%method, path = uri.path(), "request begins");
    let user = identity
        .map(|Extension(i)| i.user.clone())
        .unwrap_or_default();
    let response = match serve(&app, &user, &method, &uri, &headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    tracing::debug!(%method, path = uri.path(), status = response.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    response
}

async fn serve(
    app: &Arc<AppState>,
    user: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let target = route::parse(uri.path())?;
    let params: Params = Query::try_from_uri(uri)
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let body = body::read_limited(headers, body, app.max_body).await?;
    let accept = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let wants_table = table::wanted(accept);
    let include = table::IncludeObject::parse(params.include_object.as_deref())?;
    let answer = Answer {
        protobuf: protobuf::wants_protobuf(accept) && protobuf::supports(target.resource),
    };
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let body_format = || protobuf::BodyFormat::from_content_type(content_type);
    let dry_run = params.dry_run.as_deref() == Some("All");
    let validation = FieldValidation::parse(params.field_validation.as_deref())?;
    // The authorizer took a `/watch/` path for a watch, whatever the method.
    if target.watch && method != Method::GET {
        return Err(ApiError::MethodNotAllowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        )));
    }
    match (method.clone(), &target.name) {
        (Method::GET, _) if target.watch || flag(&params.watch) => {
            watch::serve(app, user, &target, &params, answer.protobuf).await
        }
        (Method::GET, Some(name)) => {
            get(app, &target, name, wants_table.then_some(include), answer).await
        }
        (Method::GET, None) => {
            list(
                app,
                &target,
                &params,
                wants_table.then_some(include),
                answer,
            )
            .await
        }
        (Method::POST, None) => {
            let namespace = namespaced_only(&target)?;
            let mut object = read_object(body_format()?, target.resource, &body)?;
            let resource = target.resource;
            if app.storage_object_in_use_protection {
                admission::protect_storage_object(resource, &mut object);
            }
            let op: WriteOp = Box::new(move |reader: &dyn Reader| {
                objects::create(resource, &namespace, object, validation, reader)
            });
            written(app, op, dry_run, StatusCode::CREATED, answer).await
        }
        (Method::PUT, Some(name)) => {
            let location = location(&target, name);
            let object = read_object(body_format()?, target.resource, &body)?;
            let status = target.status;
            let op: WriteOp = Box::new(move |reader: &dyn Reader| {
                objects::update(&location, object, status, validation, reader)
            });
            written(app, op, dry_run, StatusCode::OK, answer).await
        }
        (Method::PATCH, Some(name)) => {
            let location = location(&target, name);
            let content_type = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let kind = PatchType::from_content_type(content_type)?;
            let status = target.status;
            let op: WriteOp = Box::new(move |reader: &dyn Reader| {
                objects::patch(&location, kind, &body, status, validation, reader)
            });
            written(app, op, dry_run, StatusCode::OK, answer).await
        }
        (Method::DELETE, Some(name)) if !target.status => {
            let location = location(&target, name);
            let options = delete_options(&params, content_type, &body)?;
            let op: WriteOp =
                Box::new(move |reader: &dyn Reader| objects::delete(&location, &options, reader));
            let object = run(app, op, dry_run).await?;
            // Upstream answers 200 with the object whether it went or only gained a
            // deletionTimestamp (202 is for a delete left to a garbage collector).
            answer.respond(StatusCode::OK, &object)
        }
        (method, _) => Err(ApiError::MethodNotAllowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        ))),
    }
}

fn location(target: &Target, name: &str) -> Location {
    Location {
        resource: target.resource,
        namespace: target.namespace.clone().unwrap_or_default(),
        name: name.to_string(),
    }
}

/// The namespace a create goes to; creating a namespaced kind needs one in the path.
fn namespaced_only(target: &Target) -> Result<String> {
    match (&target.namespace, target.resource.namespaced) {
        (Some(namespace), _) => Ok(namespace.clone()),
        (None, false) => Ok(String::new()),
        (None, true) => Err(ApiError::MethodNotAllowed(
            "the server does not allow this method on the requested resource".into(),
        )),
    }
}

/// How the response is encoded: protobuf when the client asked for it first and the
/// kind has a protobuf form, JSON otherwise (errors and Tables are always JSON).
#[derive(Debug, Clone, Copy)]
struct Answer {
    protobuf: bool,
}

impl Answer {
    fn respond(self, code: StatusCode, value: &Value) -> Result<Response> {
        if self.protobuf
            && let Some(encoded) = protobuf::encode(value)
        {
            let body = encoded?;
            return Ok((code, [(CONTENT_TYPE, protobuf::MEDIA_TYPE)], body).into_response());
        }
        Ok(json_response(code, value))
    }
}

/// The object in a create or update body, in the encoding its Content-Type names.
fn read_object(format: protobuf::BodyFormat, resource: &Resource, body: &[u8]) -> Result<Value> {
    match format {
        protobuf::BodyFormat::Json => parse_body(body),
        protobuf::BodyFormat::Protobuf => protobuf::decode_object(resource, body),
    }
}

fn parse_body(body: &[u8]) -> Result<Value> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("the body of the request is not valid JSON: {e}"))
    })?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ))
    }
}

async fn run(app: &AppState, op: WriteOp, dry_run: bool) -> Result<Value> {
    let objects = if dry_run {
        app.store.dry_run(op).await?
    } else {
        app.store.write(op).await?
    };
    objects
        .into_iter()
        .last()
        .ok_or_else(|| ApiError::storage("a write produced no object"))
}

async fn written(
    app: &AppState,
    op: WriteOp,
    dry_run: bool,
    code: StatusCode,
    answer: Answer,
) -> Result<Response> {
    let object = run(app, op, dry_run).await?;
    answer.respond(code, &object)
}

pub fn json_response(code: StatusCode, value: &Value) -> Response {
    (code, axum::Json(value)).into_response()
}

fn delete_options(
    params: &Params,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<DeleteOptions> {
    let mut options = DeleteOptions::default();
    let mut policy = params.propagation_policy.clone();
    if !body.iter().all(u8::is_ascii_whitespace) {
        let body: Value = match protobuf::BodyFormat::from_content_type(content_type)? {
            protobuf::BodyFormat::Json => serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?,
            protobuf::BodyFormat::Protobuf => protobuf::decode_delete_options(body)?,
        };
        options.precondition_uid = body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        options.precondition_resource_version = body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(p) = body.get("propagationPolicy").and_then(Value::as_str) {
            policy = Some(p.to_string());
        }
    }
    // There is no garbage collector here: with nothing owning these kinds'
    // dependents, every policy deletes the object itself the same way.
    match policy.as_deref() {
        None | Some("Orphan" | "Background" | "Foreground") => Ok(options),
        Some(other) => Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
        ))),
    }
}

async fn get(
    app: &AppState,
    target: &Target,
    name: &str,
    as_table: Option<table::IncludeObject>,
    answer: Answer,
) -> Result<Response> {
    let location = location(target, name);
    let key = location.key();
    let object = app
        .store
        .read(move |reader| reader.get(&key))
        .await?
        .ok_or_else(|| target.resource.not_found(name))?;
    if let Some(include) = as_table {
        let body = table::build(
            target.resource,
            std::slice::from_ref(&object),
            json!({}),
            include,
        );
        return Ok(json_response(StatusCode::OK, &body));
    }
    answer.respond(StatusCode::OK, &object)
}

/// Where a paged list resumes: the revision of its first page and the last key sent.
#[derive(serde::Serialize, Deserialize)]
struct Continue {
    revision: u64,
    after: String,
}

struct Page {
    items: Vec<Value>,
    revision: u64,
    next: Option<String>,
}

async fn list(
    app: &AppState,
    target: &Target,
    params: &Params,
    as_table: Option<table::IncludeObject>,
    answer: Answer,
) -> Result<Response> {
    let resource = target.resource;
    let labels = LabelSelector::parse(params.label_selector.as_deref().unwrap_or(""))?;
    let fields = FieldSelector::parse(params.field_selector.as_deref().unwrap_or(""), resource)?;
    let resume = params
        .continue_token
        .as_deref()
        .map(decode_continue)
        .transpose()?;
    let limit = params.limit.filter(|l| *l > 0);
    let prefix = resource.prefix(target.namespace.as_deref());
    let exact = params.resource_version_match.as_deref() == Some("Exact");
    let wanted_version = params.resource_version.clone();
    let check_exact = move |reader: &dyn Reader| {
        if exact && wanted_version.as_deref() != Some(&reader.revision().to_string()) {
            return Err(ApiError::Expired(format!(
                "too old resource version: {} ({})",
                wanted_version.unwrap_or_default(),
                reader.revision()
            )));
        }
        Ok(())
    };
    if as_table.is_none() && !answer.protobuf && labels.is_everything() && fields.is_everything() {
        if limit.is_none() {
            let listing = list_stream::Listing {
                resource,
                prefix,
                resume: resume.map(|token| (token.revision, token.after)),
                deadline: std::time::Instant::now() + list_stream::LIST_TIMEOUT,
            };
            return list_stream::respond(&app.store, listing, check_exact).await;
        }
        let page = app
            .store
            .read(move |reader| {
                check_exact(reader)?;
                scan_raw_page(reader, &prefix, resume, limit)
            })
            .await?;
        return raw_list_response(resource, page);
    }
    let page = app
        .store
        .read(move |reader| {
            check_exact(reader)?;
            scan_page(reader, resource, &prefix, resume, limit, &labels, &fields)
        })
        .await?;
    let mut list_meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(next) = page.next {
        list_meta["continue"] = json!(next);
    }
    if let Some(include) = as_table {
        return Ok(json_response(
            StatusCode::OK,
            &table::build(resource, &page.items, list_meta, include),
        ));
    }
    let body = json!({
        "kind": format!("{}List", resource.kind),
        "apiVersion": resource.api_version(),
        "metadata": list_meta,
        "items": page.items,
    });
    answer.respond(StatusCode::OK, &body)
}

/// One page of matching objects. A continued list reports the revision of its
/// first page, so a watch from there replays whatever changed in between.
fn scan_page(
    reader: &dyn Reader,
    resource: &Resource,
    prefix: &str,
    resume: Option<Continue>,
    limit: Option<usize>,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Result<Page> {
    let (revision, after) = match resume {
        Some(token) => (token.revision, Some(token.after)),
        None => (reader.revision(), None),
    };
    let mut items = Vec::new();
    let mut last_key = String::new();
    let mut more = false;
    reader.scan(prefix, after.as_deref(), &mut |key, object| {
        if !(labels.matches(meta::labels(&object)) && fields.matches(resource, &object)) {
            return true;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            more = true;
            return false;
        }
        last_key = key.to_string();
        items.push(object);
        true
    })?;
    let next = more.then(|| {
        encode_continue(&Continue {
            revision,
            after: last_key,
        })
    });
    Ok(Page {
        items,
        revision,
        next,
    })
}

/// A page of stored objects as their JSON bytes, comma-separated, in key order.
struct RawPage {
    items: Vec<u8>,
    revision: u64,
    next: Option<String>,
}

/// [`scan_page`] for a LIST without selectors: the stored bytes are the answer's
/// items as they are, so nothing is decoded or encoded again, and the page is held
/// as bytes, not as a tree of values several times their size.
fn scan_raw_page(
    reader: &dyn Reader,
    prefix: &str,
    resume: Option<Continue>,
    limit: Option<usize>,
) -> Result<RawPage> {
    let (revision, after) = match resume {
        Some(token) => (token.revision, Some(token.after)),
        None => (reader.revision(), None),
    };
    let mut items = Vec::new();
    let mut count = 0;
    let mut last_key = String::new();
    let mut more = false;
    reader.scan_raw(prefix, after.as_deref(), &mut |key, bytes| {
        if limit.is_some_and(|l| count >= l) {
            more = true;
            return false;
        }
        if count > 0 {
            items.push(b',');
        }
        items.extend_from_slice(bytes);
        count += 1;
        last_key = key.to_string();
        true
    })?;
    let next = more.then(|| {
        encode_continue(&Continue {
            revision,
            after: last_key,
        })
    });
    Ok(RawPage {
        items,
        revision,
        next,
    })
}

/// The list object around a raw page, sent as three pieces so the items are not copied.
fn raw_list_response(resource: &Resource, page: RawPage) -> Result<Response> {
    let head = list_stream::head(resource, page.revision, page.next)?;
    let pieces = [head, page.items, b"]}".to_vec()]
        .into_iter()
        .map(|piece| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(piece)));
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from_stream(futures_util::stream::iter(pieces)))
        .map_err(ApiError::storage)
}

fn encode_continue(token: &Continue) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(token).unwrap_or_default())
}

fn decode_continue(text: &str) -> Result<Continue> {
    URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| ApiError::bad_request("continue key is not valid"))
}
