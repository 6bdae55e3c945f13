//! The crate's error type and the one place that turns it into a metav1.Status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::validation::FieldError;

/// Every failure a request can meet, each with the reason and code kube-apiserver
/// gives for it, so clients (kube-rs, kubectl) react as they do upstream.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The object does not exist (404).
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        /// `plural` or `plural.group`.
        resource: String,
        /// The object's name.
        name: String,
    },
    /// A create of a name that is taken (409).
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        /// `plural` or `plural.group`.
        resource: String,
        /// The object's name.
        name: String,
    },
    /// A write against a stale resourceVersion (409).
    #[error(
        "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict {
        /// `plural` or `plural.group`.
        resource: String,
        /// The object's name.
        name: String,
    },
    /// A delete's preconditions (uid, resourceVersion) do not hold (409).
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {reason}")]
    PreconditionFailed {
        /// `plural` or `plural.group`.
        resource: String,
        /// The object's name.
        name: String,
        /// Which precondition failed, in upstream's words.
        reason: String,
    },
    /// The object fails validation (422).
    #[error("{kind} \"{name}\" is invalid: {}", FieldError::join(.causes))]
    Invalid {
        /// The object's kind.
        kind: String,
        /// The object's name.
        name: String,
        /// One error per field.
        causes: Vec<FieldError>,
    },
    /// The request is malformed (400): its body, a parameter, a selector.
    #[error("{0}")]
    BadRequest(String),
    /// A JSON patch whose operations cannot be applied (a failed `test`, a missing path).
    #[error("the patch could not be applied: {0}")]
    PatchFailed(String),
    /// No known bearer token (401).
    #[error("Unauthorized")]
    Unauthorized,
    /// RBAC refused the request; `message` is upstream's wording (`auth::forbidden`).
    #[error("{message}")]
    Forbidden {
        /// The API group of the request.
        group: String,
        /// The resource of the request.
        resource: String,
        /// The object's name, or "".
        name: String,
        /// Upstream's message.
        message: String,
    },
    /// More of something at once than one identity may have (watches).
    #[error("Too many requests, please try again later.")]
    TooManyRequests {
        /// When to try again, as the Retry-After header and the Status say.
        retry_after_seconds: u64,
    },
    /// A watch or continue token from further back than the history kept (410).
    #[error("{0}")]
    Expired(String),
    /// The verb is not served on this path (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The body's Content-Type is not one this kind is served in (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body is larger than the server takes (413).
    #[error("Request entity too large: limit is {limit}")]
    TooLarge {
        /// The largest body accepted, in bytes.
        limit: usize,
    },
    /// The path names no served resource (404).
    #[error("the server could not find the requested resource")]
    NoSuchResource,
    /// The store failed (500).
    #[error("storage failure: {0}")]
    Storage(String),
    /// The server is stopping (503).
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// The crate's result.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    /// The 404 of `resource` (`plural[.group]`) named `name`.
    pub fn not_found(resource: &str, name: &str) -> Self {
        Self::NotFound {
            resource: resource.to_string(),
            name: name.to_string(),
        }
    }

    /// A 400 saying `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    /// A 500 for a failure of the store (or of what serves it).
    pub fn storage(error: impl std::fmt::Display) -> Self {
        Self::Storage(error.to_string())
    }

    /// Reason and HTTP code as upstream; exhaustive, so a new variant must choose.
    fn reason_and_code(&self) -> (&'static str, StatusCode) {
        match self {
            Self::NotFound { .. } | Self::NoSuchResource => ("NotFound", StatusCode::NOT_FOUND),
            Self::AlreadyExists { .. } => ("AlreadyExists", StatusCode::CONFLICT),
            Self::Conflict { .. } | Self::PreconditionFailed { .. } => {
                ("Conflict", StatusCode::CONFLICT)
            }
            Self::Invalid { .. } | Self::PatchFailed(_) => {
                ("Invalid", StatusCode::UNPROCESSABLE_ENTITY)
            }
            Self::BadRequest(_) => ("BadRequest", StatusCode::BAD_REQUEST),
            Self::Unauthorized => ("Unauthorized", StatusCode::UNAUTHORIZED),
            Self::Forbidden { .. } => ("Forbidden", StatusCode::FORBIDDEN),
            Self::TooManyRequests { .. } => ("TooManyRequests", StatusCode::TOO_MANY_REQUESTS),
            Self::Expired(_) => ("Expired", StatusCode::GONE),
            Self::MethodNotAllowed(_) => ("MethodNotAllowed", StatusCode::METHOD_NOT_ALLOWED),
            Self::UnsupportedMediaType(_) => {
                ("UnsupportedMediaType", StatusCode::UNSUPPORTED_MEDIA_TYPE)
            }
            Self::TooLarge { .. } => ("RequestEntityTooLarge", StatusCode::PAYLOAD_TOO_LARGE),
            Self::Storage(_) => ("InternalError", StatusCode::INTERNAL_SERVER_ERROR),
            Self::ShuttingDown => ("ServiceUnavailable", StatusCode::SERVICE_UNAVAILABLE),
        }
    }

    /// The HTTP status code of the answer.
    pub fn code(&self) -> StatusCode {
        self.reason_and_code().1
    }

    /// The metav1.Status object for this error.
    pub fn status(&self) -> Value {
        let (reason, code) = self.reason_and_code();
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code.as_u16(),
        });
        if let Some(details) = self.details() {
            status["details"] = details;
        }
        status
    }

    fn details(&self) -> Option<Value> {
        let (group_resource, name) = match self {
            Self::NotFound { resource, name }
            | Self::AlreadyExists { resource, name }
            | Self::Conflict { resource, name }
            | Self::PreconditionFailed { resource, name, .. } => (resource.as_str(), name),
            Self::Invalid { kind, name, causes } => {
                let causes: Vec<Value> = causes.iter().map(FieldError::cause).collect();
                return Some(json!({"name": name, "kind": kind, "causes": causes}));
            }
            Self::Forbidden {
                group,
                resource,
                name,
                ..
            } => {
                let mut details = json!({});
                for (field, value) in [("name", name), ("group", group), ("kind", resource)] {
                    if !value.is_empty() {
                        details[field] = json!(value);
                    }
                }
                return Some(details);
            }
            Self::TooManyRequests {
                retry_after_seconds,
            } => return Some(json!({"retryAfterSeconds": retry_after_seconds})),
            _ => return None,
        };
        let (resource, group) = group_resource
            .split_once('.')
            .unwrap_or((group_resource, ""));
        let mut details = json!({"name": name, "kind": resource});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        Some(details)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Storage(message) = &self {
            tracing::error!(%message, "storage failure");
        }
        let mut response = (self.code(), axum::Json(self.status())).into_response();
        if let Self::TooManyRequests {
            retry_after_seconds,
        } = self
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, retry_after_seconds.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_status_names_the_resource_as_upstream() {
        let status = ApiError::not_found("storageclasses.storage.k8s.io", "fast").status();
        assert_eq!(status["code"], 404);
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(
            status["message"],
            "storageclasses.storage.k8s.io \"fast\" not found"
        );
        assert_eq!(status["details"]["kind"], "storageclasses");
        assert_eq!(status["details"]["group"], "storage.k8s.io");
    }

    #[test]
    fn invalid_status_lists_each_cause() {
        let error = ApiError::Invalid {
            kind: "PersistentVolume".into(),
            name: "pv1".into(),
            causes: vec![
                FieldError::required("spec.capacity", ""),
                FieldError::not_supported("spec.volumeMode", "Disk", &["Block", "Filesystem"]),
            ],
        };
        let status = error.status();
        assert_eq!(status["code"], 422);
        assert_eq!(
            status["message"],
            "PersistentVolume \"pv1\" is invalid: [spec.capacity: Required value, spec.volumeMode: Unsupported value: \"Disk\": supported values: \"Block\", \"Filesystem\"]"
        );
        assert_eq!(
            status["details"]["causes"][0]["reason"],
            "FieldValueRequired"
        );
        assert_eq!(status["details"]["causes"][1]["field"], "spec.volumeMode");
    }
}
