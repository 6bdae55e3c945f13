//! The verbs with kube-apiserver's semantics, as store operations: what create,
//! update, patch and delete do to an object, independent of HTTP.

use serde_json::{Value, json};

use crate::error::{ApiError, Result};
use crate::meta::{self, metadata_mut};
use crate::patch::{self, PatchType};
use crate::registry::{self, Resource};
use crate::store::{Mutation, Reader};
use crate::validation::FieldError;

/// Where an object lives: its resource, namespace ("" when cluster-scoped) and name.
#[derive(Debug, Clone)]
pub struct Location {
    /// The object's kind.
    pub resource: &'static Resource,
    /// Its namespace; "" for a cluster-scoped kind.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl Location {
    /// The object's store key.
    pub fn key(&self) -> String {
        self.resource.key(&self.namespace, &self.name)
    }

    fn current(&self, reader: &dyn Reader) -> Result<Value> {
        reader
            .get(&self.key())?
            .ok_or_else(|| self.resource.not_found(&self.name))
    }
}

/// What to do with fields the kind does not have (the `fieldValidation` parameter).
/// Unknown fields are always dropped, as upstream's decoder drops them; Strict
/// refuses the request instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Unknown fields refuse the request (400).
    Strict,
    /// Unknown fields are named in a Warning header.
    #[default]
    Warn,
    /// Unknown fields are dropped silently.
    Ignore,
}

impl FieldValidation {
    /// The `fieldValidation` parameter's value; unset means `Warn`.
    pub fn parse(value: Option<&str>) -> Result<Self> {
        match value {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some("Ignore") => Ok(Self::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

/// Options of a delete, from the query string or a DeleteOptions body.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// preconditions.uid: delete only the object with this uid.
    pub precondition_uid: Option<String>,
    /// preconditions.resourceVersion: delete only at this resourceVersion.
    pub precondition_resource_version: Option<String>,
}

/// Creates `object` under `resource` in `namespace`.
pub fn create(
    resource: &'static Resource,
    namespace: &str,
    object: Value,
    validation: FieldValidation,
    reader: &dyn Reader,
) -> Result<Vec<Mutation>> {
    let mut object = decode(resource, object, validation)?;
    place_in_namespace(resource, namespace, &mut object, reader)?;
    if !meta::resource_version(&object).is_empty() {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let generated =
        meta::name(&object).is_empty() && !meta::string(&object, "generateName").is_empty();
    if generated {
        let name = format!(
            "{}{}",
            meta::string(&object, "generateName"),
            meta::name_suffix()
        );
        metadata_mut(&mut object).insert("name".into(), json!(name));
    }
    let metadata = metadata_mut(&mut object);
    for field in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    ] {
        metadata.remove(field);
    }
    metadata.insert("uid".into(), json!(meta::new_uid()));
    metadata.insert("creationTimestamp".into(), json!(meta::now()));
    metadata.insert("generation".into(), json!(1));
    (resource.behaviour.prepare_create)(&mut object, reader)?;
    validate(resource, &object, None)?;
    let location = Location {
        resource,
        namespace: meta::namespace(&object).to_string(),
        name: meta::name(&object).to_string(),
    };
    if reader.get(&location.key())?.is_some() {
        return Err(ApiError::AlreadyExists {
            resource: resource.group_resource(),
            name: location.name,
        });
    }
    Ok(vec![Mutation::Put {
        key: location.key(),
        object,
    }])
}

/// Replaces the object (PUT), or only its status when `status` is set.
pub fn update(
    location: &Location,
    object: Value,
    status: bool,
    validation: FieldValidation,
    reader: &dyn Reader,
) -> Result<Vec<Mutation>> {
    let old = location.current(reader)?;
    let object = decode(location.resource, object, validation)?;
    finish_update(location, old, object, status)
}

/// Applies a patch to the object (or its status), then updates as PUT does.
pub fn patch(
    location: &Location,
    kind: PatchType,
    body: &[u8],
    status: bool,
    validation: FieldValidation,
    reader: &dyn Reader,
) -> Result<Vec<Mutation>> {
    let old = location.current(reader)?;
    let mut object = old.clone();
    patch::apply(kind, &mut object, body)?;
    if !object.is_object() {
        return Err(ApiError::bad_request(
            "the patch made the object something other than a JSON object",
        ));
    }
    let object = decode(location.resource, object, validation)?;
    finish_update(location, old, object, status)
}

/// Deletes the object, or marks it for deletion while finalizers hold it.
pub fn delete(
    location: &Location,
    options: &DeleteOptions,
    reader: &dyn Reader,
) -> Result<Vec<Mutation>> {
    let old = location.current(reader)?;
    check_preconditions(location, &old, options)?;
    let mut mutations = Vec::new();
    if std::ptr::eq(location.resource, registry::namespaces()) {
        mutations.extend(empty_namespace(&location.name, reader)?);
    }
    mutations.push(delete_or_mark(location.key(), old));
    Ok(mutations)
}

/// With finalizers the object only gains a deletionTimestamp; otherwise it goes.
fn delete_or_mark(key: String, mut object: Value) -> Mutation {
    if meta::finalizers(&object).is_empty() {
        return Mutation::Delete { key };
    }
    if meta::is_deleting(&object) {
        return Mutation::Keep(object);
    }
    let metadata = metadata_mut(&mut object);
    metadata.insert("deletionTimestamp".into(), json!(meta::now()));
    metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
    Mutation::Put { key, object }
}

/// Upstream's namespace controller, done at once: everything in it is deleted
/// (or marked, where finalizers hold it) together with the namespace.
fn empty_namespace(namespace: &str, reader: &dyn Reader) -> Result<Vec<Mutation>> {
    let mut mutations = Vec::new();
    for resource in registry::all().iter().filter(|r| r.namespaced) {
        let mut found = Vec::new();
        reader.scan(
            &resource.prefix(Some(namespace)),
            None,
            &mut |key, object| {
                found.push((key.to_string(), object));
                true
            },
        )?;
        mutations.extend(
            found
                .into_iter()
                .map(|(key, object)| delete_or_mark(key, object)),
        );
    }
    Ok(mutations)
}

fn check_preconditions(location: &Location, object: &Value, options: &DeleteOptions) -> Result<()> {
    let failed = |reason: String| ApiError::PreconditionFailed {
        resource: location.resource.group_resource(),
        name: location.name.clone(),
        reason,
    };
    if let Some(uid) = &options.precondition_uid
        && uid != meta::string(object, "uid")
    {
        return Err(failed(format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
            meta::string(object, "uid")
        )));
    }
    if let Some(version) = &options.precondition_resource_version
        && version != meta::resource_version(object)
    {
        return Err(failed(format!(
            "Precondition failed: ResourceVersion in precondition: {version}, ResourceVersion in object meta: {}",
            meta::resource_version(object)
        )));
    }
    Ok(())
}

/// The rules PUT and PATCH share: optimistic concurrency, immutable metadata,
/// status/spec separation, finalizers, validation, and no write when nothing changed.
fn finish_update(
    location: &Location,
    old: Value,
    mut new: Value,
    status: bool,
) -> Result<Vec<Mutation>> {
    let resource = location.resource;
    if meta::name(&new) != location.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({})",
            meta::name(&new),
            location.name
        )));
    }
    if resource.namespaced
        && !meta::namespace(&new).is_empty()
        && meta::namespace(&new) != location.namespace
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let version = meta::resource_version(&new);
    if !version.is_empty() && version != meta::resource_version(&old) {
        return Err(ApiError::Conflict {
            resource: resource.group_resource(),
            name: location.name.clone(),
        });
    }
    if status {
        let mut merged = old.clone();
        merged["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        new = merged;
    } else {
        if resource.has_status {
            new["status"] = old.get("status").cloned().unwrap_or(Value::Null);
        }
        keep_system_metadata(&old, &mut new, &location.namespace);
    }
    if let Some(map) = new.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    if meta::is_deleting(&old) {
        let before = meta::finalizers(&old);
        if meta::finalizers(&new).iter().any(|f| !before.contains(f)) {
            return Err(invalid(
                resource,
                &location.name,
                vec![FieldError::forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted",
                )],
            ));
        }
    }
    validate(resource, &new, Some(&old))?;
    if !status && new.get("spec") != old.get("spec") {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        metadata_mut(&mut new).insert("generation".into(), json!(generation + 1));
    }
    metadata_mut(&mut new).insert(
        "resourceVersion".into(),
        json!(meta::resource_version(&old)),
    );
    if meta::is_deleting(&new) && meta::finalizers(&new).is_empty() {
        return Ok(vec![Mutation::Delete {
            key: location.key(),
        }]);
    }
    if new == old {
        return Ok(vec![Mutation::Keep(old)]);
    }
    Ok(vec![Mutation::Put {
        key: location.key(),
        object: new,
    }])
}

/// Metadata only the server sets survives whatever the client sent.
fn keep_system_metadata(old: &Value, new: &mut Value, namespace: &str) {
    let metadata = metadata_mut(new);
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old.pointer(&format!("/metadata/{field}")) {
            Some(value) => metadata.insert(field.into(), value.clone()),
            None => metadata.remove(field),
        };
    }
    if !namespace.is_empty() {
        metadata.insert("namespace".into(), json!(namespace));
    }
}

/// Checks the kind, then decodes as upstream: unknown fields dropped, or refused under Strict.
fn decode(resource: &Resource, mut object: Value, validation: FieldValidation) -> Result<Value> {
    check_kind(resource, &mut object)?;
    let decoded = (resource.behaviour.decode)(&object)?;
    if validation == FieldValidation::Strict {
        let mut unknown = Vec::new();
        crate::resources::unknown_fields(&object, &decoded, "", &mut unknown);
        if !unknown.is_empty() {
            let fields: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field {f:?}"))
                .collect();
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                fields.join(", ")
            )));
        }
    }
    (resource.behaviour.normalize)(decoded)
}

/// Fills `kind` and `apiVersion`, refusing a body of another kind.
fn check_kind(resource: &Resource, object: &mut Value) -> Result<()> {
    let Some(map) = object.as_object_mut() else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    let api_version = resource.api_version();
    let kind_ok = map
        .get("kind")
        .and_then(Value::as_str)
        .is_none_or(|k| k.is_empty() || k == resource.kind);
    let version_ok = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .is_none_or(|v| v.is_empty() || v == api_version);
    if !kind_ok || !version_ok {
        return Err(ApiError::bad_request(format!(
            "the body is a {} {}, not a {api_version} {}",
            map.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
            map.get("kind").and_then(Value::as_str).unwrap_or(""),
            resource.kind
        )));
    }
    map.insert("kind".into(), json!(resource.kind));
    map.insert("apiVersion".into(), json!(api_version));
    Ok(())
}

/// Sets the object's namespace from the URL (a mismatch is a 400) and checks the
/// namespace exists, as the NamespaceLifecycle admission plugin does.
fn place_in_namespace(
    resource: &Resource,
    namespace: &str,
    object: &mut Value,
    reader: &dyn Reader,
) -> Result<()> {
    if !resource.namespaced {
        metadata_mut(object).remove("namespace");
        return Ok(());
    }
    let given = meta::namespace(object);
    if !given.is_empty() && given != namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let namespaces = registry::namespaces();
    if reader.get(&namespaces.key("", namespace))?.is_none() {
        return Err(namespaces.not_found(namespace));
    }
    metadata_mut(object).insert("namespace".into(), json!(namespace));
    Ok(())
}

fn validate(resource: &Resource, object: &Value, old: Option<&Value>) -> Result<()> {
    let errors = (resource.behaviour.validate)(object, old)?;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid(resource, meta::name(object), errors))
    }
}

fn invalid(resource: &Resource, name: &str, causes: Vec<FieldError>) -> ApiError {
    ApiError::Invalid {
        kind: resource.kind.to_string(),
        name: name.to_string(),
        causes,
    }
}
