//! The Kubernetes protobuf encoding (`application/vnd.kubernetes.protobuf`) of the
//! built-in kinds, as client-go's clients send and ask for it.
//!
//! A body is the 4-byte magic `k8s\0` followed by a runtime.Unknown message whose
//! typeMeta names apiVersion and kind and whose raw field holds the object's own
//! protobuf bytes (apimachinery's `pkg/runtime/serializer/protobuf`). The objects are
//! converted to and from the JSON form the store keeps by a schema generated from
//! k8s-pb's message definitions (`generate.py`), so there is one stored form and the
//! verbs stay the same code for both encodings. Custom kinds (the snapshot CRDs) have
//! no protobuf form, as upstream.

pub mod codec;
// Generated (generate.py): one line per field reads better than rustfmt's layout.
#[rustfmt::skip]
mod schema;
mod schema_types;

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::registry::Resource;

pub use codec::CodecError;

/// The protobuf media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The magic that starts every protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The media types a request body may have, in the order a 415 lists them.
const READABLE: &str = "application/json, application/vnd.kubernetes.protobuf";

/// How a request body is encoded, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json` (or none given).
    Json,
    /// `application/vnd.kubernetes.protobuf`.
    Protobuf,
}

impl BodyFormat {
    /// JSON when the header is absent (curl, older clients); 415 for anything unreadable.
    pub fn from_content_type(content_type: Option<&str>) -> Result<Self, ApiError> {
        let Some(content_type) = content_type else {
            return Ok(Self::Json);
        };
        match media(content_type) {
            "" | "application/json" | "*/*" => Ok(Self::Json),
            MEDIA_TYPE => Ok(Self::Protobuf),
            other => Err(unsupported(other)),
        }
    }
}

fn unsupported(media_type: &str) -> ApiError {
    ApiError::UnsupportedMediaType(format!(
        "the body of the request was in an unknown format - accepted media types include: {READABLE} (got {media_type:?})"
    ))
}

/// The media type without parameters, lowercased as HTTP compares it.
fn media(value: &str) -> &str {
    value.split(';').next().unwrap_or("").trim()
}

/// Whether the response should be protobuf: the first media type in Accept that the
/// server can answer is protobuf, without `as=` (Tables and metadata are JSON here).
pub fn wants_protobuf(accept: &str) -> bool {
    for offered in accept.split(',') {
        let media_type = media(offered);
        if offered.contains("as=") {
            return false;
        }
        match media_type {
            MEDIA_TYPE => return true,
            "application/json" | "*/*" | "application/*" => return false,
            _ => {}
        }
    }
    false
}

/// The upstream definition of a served built-in kind (`io.k8s.api.core.v1.Pod`).
fn definition(group: &str, version: &str, kind: &str) -> Option<usize> {
    let package = match group {
        "" => "core",
        "storage.k8s.io" => "storage",
        "coordination.k8s.io" => "coordination",
        "rbac.authorization.k8s.io" => "rbac",
        _ => return None,
    };
    let name = format!("io.k8s.api.{package}.{version}.{kind}");
    schema::ROOTS
        .iter()
        .find(|(root, _)| *root == name)
        .map(|(_, index)| *index)
}

const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";

fn meta_definition(name: &str) -> Option<usize> {
    schema::ROOTS
        .iter()
        .find(|(root, _)| *root == name)
        .map(|(_, index)| *index)
}

/// Whether the kind has a protobuf form (built-in kinds do; custom ones do not).
pub fn supports(resource: &Resource) -> bool {
    definition(resource.group, resource.version, resource.kind).is_some()
}

/// The envelope's parts: apiVersion, kind, and the object's bytes.
struct Envelope<'b> {
    api_version: String,
    kind: String,
    raw: &'b [u8],
}

fn open(body: &[u8]) -> Result<Envelope<'_>, ApiError> {
    let inner = body.strip_prefix(MAGIC).ok_or_else(|| {
        ApiError::bad_request("the protobuf body does not start with the k8s\\0 magic")
    })?;
    let unknown = codec::decode_unknown(inner).map_err(protobuf_error)?;
    if !unknown.content_encoding.is_empty() {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the protobuf body's contentEncoding {:?} is not supported",
            unknown.content_encoding
        )));
    }
    if !unknown.content_type.is_empty() && unknown.content_type != MEDIA_TYPE {
        return Err(unsupported(&unknown.content_type));
    }
    Ok(Envelope {
        api_version: unknown.api_version,
        kind: unknown.kind,
        raw: unknown.raw,
    })
}

fn protobuf_error(error: CodecError) -> ApiError {
    ApiError::bad_request(format!("decoding the protobuf body: {error}"))
}

/// Reads an object of `resource` from a protobuf body into its JSON form, with kind and
/// apiVersion from the envelope (checked against the resource as a JSON body's are).
pub fn decode_object(resource: &Resource, body: &[u8]) -> Result<Value, ApiError> {
    let index = definition(resource.group, resource.version, resource.kind).ok_or_else(|| {
        ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json ({} has no protobuf form)",
            resource.group_resource()
        ))
    })?;
    let envelope = open(body)?;
    let mut object = codec::decode(index, envelope.raw).map_err(protobuf_error)?;
    if !envelope.api_version.is_empty() {
        object.insert("apiVersion".into(), json!(envelope.api_version));
    }
    if !envelope.kind.is_empty() {
        object.insert("kind".into(), json!(envelope.kind));
    }
    Ok(Value::Object(object))
}

/// Reads a DeleteOptions body; client-go sends it in any group's version (and an envelope
/// without a kind means the kind the endpoint expects, as upstream's decoder defaults it).
pub fn decode_delete_options(body: &[u8]) -> Result<Value, ApiError> {
    let envelope = open(body)?;
    if !envelope.kind.is_empty() && envelope.kind != "DeleteOptions" {
        return Err(ApiError::bad_request(format!(
            "expected DeleteOptions, got {:?}",
            envelope.kind
        )));
    }
    let index = meta_definition(DELETE_OPTIONS)
        .ok_or_else(|| ApiError::storage("no DeleteOptions in the protobuf schema"))?;
    codec::decode(index, envelope.raw)
        .map(Value::Object)
        .map_err(protobuf_error)
}

/// Encodes an object (`kind` `FooList` for lists, or a `Status`) as a protobuf body, or
/// None when the kind has no protobuf form.
pub fn encode(value: &Value) -> Option<Result<Vec<u8>, ApiError>> {
    let object = value.as_object()?;
    let api_version = object.get("apiVersion")?.as_str()?;
    let kind = object.get("kind")?.as_str()?;
    let (group, version) = match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    };
    let index = match kind {
        "Status" => meta_definition(STATUS)?,
        _ => definition(group, version, kind)?,
    };
    Some(wrap(index, api_version, kind, object))
}

const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";

/// The Content-Type of a protobuf watch stream.
pub const WATCH_MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// One frame of a protobuf watch stream, as apimachinery's stream serializer writes it:
/// a 4-byte big-endian length, then a metav1.WatchEvent (type 1, object 2) written raw (no
/// magic, no envelope), whose object is a RawExtension holding the object's own protobuf
/// body (with magic and envelope).
pub fn encode_watch_event(event: &str, object: &Value) -> Result<Vec<u8>, ApiError> {
    let body = encode(object)
        .ok_or_else(|| ApiError::storage("a watched object of a kind without a protobuf form"))??;
    let mut message = Vec::new();
    codec::encode_watch_event(event, &body, &mut message);
    let length = u32::try_from(message.len())
        .map_err(|_| ApiError::storage("a watch event larger than 4 GiB"))?;
    let mut frame = length.to_be_bytes().to_vec();
    frame.extend(message);
    Ok(frame)
}

fn wrap(
    index: usize,
    api_version: &str,
    kind: &str,
    object: &Map<String, Value>,
) -> Result<Vec<u8>, ApiError> {
    let raw = codec::encode(index, object)
        .map_err(|e| ApiError::storage(format!("encoding {kind} as protobuf: {e}")))?;
    let mut body = MAGIC.to_vec();
    codec::encode_unknown(api_version, kind, &raw, &mut body);
    Ok(body)
}

#[cfg(test)]
mod tests;
