//! What the snapshotter and the group snapshotter share: an object (VolumeSnapshot,
//! VolumeGroupSnapshot) bound to a content (VolumeSnapshotContent,
//! VolumeGroupSnapshotContent) made from a class, as snapshot-controller binds them and
//! csi-snapshotter takes, checks and deletes the content. [`Kind`] is what differs
//! between the two; [`plan`] decides, this module writes.

pub mod plan;

use std::collections::HashMap;
use std::fmt::Debug;

use driver_contract::DRIVER_NAME;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::{Api, Client};
use serde_json::{Value, json};

use self::plan::{ContentSource, ContentStep, Source, Step};
use crate::snapshot::model::SnapshotRef;

/// Why one step failed; the object is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("no CSI endpoint configured")]
    NoCsi,
    #[error("{rpc} failed: {status}")]
    Csi {
        rpc: &'static str,
        status: tonic::Status,
    },
    #[error("the driver does not know snapshot {0}")]
    Unknown(String),
    #[error("{kind} {name} does not exist")]
    MissingClass { kind: &'static str, name: String },
}

impl StepError {
    /// What a failed call of `rpc` becomes.
    pub fn csi(rpc: &'static str) -> impl FnOnce(tonic::Status) -> Self {
        move |status| Self::Csi { rpc, status }
    }
}

/// A client of the driver's controller endpoint, built by `client`.
pub(crate) fn driver<C>(
    config: &crate::Config,
    client: impl FnOnce(tonic::transport::Channel) -> C,
) -> Result<C, StepError> {
    config.csi.clone().map(client).ok_or(StepError::NoCsi)
}

/// What differs between the snapshot kinds: their objects' fields, names and the
/// steps only one of them has.
pub trait Kind: Debug + Clone + PartialEq + Eq + Send + Sync + 'static {
    type Object: Clone + Send + Sync + 'static;
    type Content: Clone + Send + Sync + 'static;
    type Class;
    type Status: Debug + Clone + PartialEq + Eq + Default + serde::Serialize + Send;
    /// What snapshot-controller writes into a dynamic object's new content.
    type NewContent: Debug + Clone + PartialEq + Eq + Send;
    /// What a dynamic object is taken from: a volume handle, or a group's.
    type Volumes: Debug + Clone + PartialEq + Eq + Send;
    /// The driver's handles of what a content holds.
    type Handles: Debug + Clone + PartialEq + Eq + Send;
    /// Steps of this kind alone.
    type OwnStep: Debug + Clone + PartialEq + Eq + Send;
    /// What those steps are decided from.
    type Own: ?Sized;

    const CONTENT_KIND: &'static str;
    const CLASS_KIND: &'static str;
    /// The object, as an error message names it.
    const WHAT: &'static str;
    /// The annotation of the class used when an object names none.
    const DEFAULT_CLASS: &'static str;
    /// On an object while it is bound to its content.
    const FINALIZER: &'static str;
    /// On a content until the driver's data is deleted (or kept).
    const CONTENT_FINALIZER: &'static str;
    /// The content's reference to its object, in its spec.
    const REFERENCE_FIELD: &'static str;

    fn objects() -> ApiResource;
    fn contents() -> ApiResource;

    fn meta(object: &Self::Object) -> &ObjectMeta;
    /// Whether the object asks for a new snapshot (rather than naming a content).
    fn dynamic(object: &Self::Object) -> bool;
    fn named_content(object: &Self::Object) -> Option<&str>;
    fn bound_content(object: &Self::Object) -> Option<&str>;
    /// The error the object's status reports while not ready.
    fn reported_error(object: &Self::Object) -> Option<&str>;
    /// The content a dynamic object gets, named as snapshot-controller names it.
    fn content_name(object_uid: &str) -> String;
    /// The name the driver is asked to take it under, as csi-snapshotter derives it:
    /// the same on every retry, so the driver answers a retry with what it made.
    fn driver_name(object_uid: &str) -> String;
    fn new_content(name: String, volumes: &Self::Volumes, class: &Self::Class) -> Self::NewContent;
    /// The new content's object, bound to `object`.
    fn content_object(object: &Self::Object, new: &Self::NewContent) -> Value;
    /// A step of the kind's own before the content goes on deletion.
    fn before_deletion(object: &Self::Object, own: &Self::Own) -> Option<Step<Self>>;
    /// The step once the object and its content are bound to each other.
    fn bound_step(
        object: &Self::Object,
        content: &Self::Content,
        content_name: &str,
        own: &Self::Own,
    ) -> Step<Self>;
    fn without_error(status: Self::Status) -> Self::Status;

    fn content_meta(content: &Self::Content) -> &ObjectMeta;
    fn reference(content: &Self::Content) -> &SnapshotRef;
    fn content_driver(content: &Self::Content) -> &str;
    /// Whether the driver's data goes when the content does.
    fn deletes(content: &Self::Content) -> bool;
    /// What the driver is asked to delete when the content goes.
    fn handles_to_delete(content: &Self::Content) -> Option<Self::Handles>;
    /// Whether the driver's answer is recorded and ready.
    fn taken(content: &Self::Content) -> bool;
    fn content_source(content: &Self::Content) -> ContentSource<Self::Volumes, Self::Handles>;

    fn class_meta(class: &Self::Class) -> &ObjectMeta;
    fn class_driver(class: &Self::Class) -> &str;
}

/// Starts a reflector over an untyped kind whose events poke `changes`.
pub(crate) fn reflect(
    client: &Client,
    resource: &ApiResource,
    changes: &crate::watch::Changes,
) -> Store<DynamicObject> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
    let what = format!("{} (are the snapshot CRDs installed?)", resource.kind);
    let writer = reflector::store::Writer::new(resource.clone());
    crate::watch::drive(writer, api, changes, &what)
}

pub(crate) fn parse_all<T: serde::de::DeserializeOwned>(store: &Store<DynamicObject>) -> Vec<T> {
    store
        .state()
        .iter()
        .filter_map(|object| crate::snapshot::model::parse(object))
        .collect()
}

pub(crate) fn api(
    client: &Client,
    resource: &ApiResource,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

/// The objects' uids by namespace and name, for their contents' references.
fn uids<K: Kind>(objects: &[K::Object]) -> HashMap<(String, String), String> {
    objects
        .iter()
        .filter_map(|o| {
            let m = K::meta(o);
            Some(((m.namespace.clone()?, m.name.clone()?), m.uid.clone()?))
        })
        .collect()
}

/// The uid of the object `content` refers to, as the cache has it.
fn referred_uid<'a, K: Kind>(
    content: &K::Content,
    uids: &'a HashMap<(String, String), String>,
) -> Option<&'a str> {
    let reference = K::reference(content);
    reference
        .namespace
        .clone()
        .zip(reference.name.clone())
        .and_then(|key| uids.get(&key))
        .map(String::as_str)
}

/// csi-snapshotter's next step for each content this instance holds (`mine`) that
/// has one, keyed `<prefix>/<content name>` for [`crate::steps::Steps`].
pub(crate) fn content_steps<'c, K: Kind>(
    objects: &[K::Object],
    contents: &'c [K::Content],
    mine: impl Fn(&K::Content) -> bool,
    prefix: &str,
) -> Vec<(String, &'c K::Content, ContentStep<K>)> {
    let uids = uids::<K>(objects);
    contents
        .iter()
        .filter(|content| mine(content))
        .filter_map(|content| {
            let step = plan::content_step::<K>(content, referred_uid::<K>(content, &uids));
            let name = K::content_meta(content).name.as_deref().unwrap_or_default();
            (step != ContentStep::Nothing).then(|| (format!("{prefix}/{name}"), content, step))
        })
        .collect()
}

/// The volume handle of a claim to snapshot: ours when Bound to a CSI volume of our
/// driver (`label` names the claim in the reasons).
pub(crate) fn claim_volume(
    claim: &PersistentVolumeClaim,
    label: &str,
    volumes: &Store<PersistentVolume>,
) -> Source<String> {
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    let volume = claim.spec.as_ref().and_then(|s| s.volume_name.clone());
    let (Some("Bound"), Some(volume)) = (phase, volume) else {
        return Source::Unusable(format!("claim {label} is not bound"));
    };
    let csi = volumes
        .get(&ObjectRef::new(&volume))
        .and_then(|pv| pv.spec.clone()?.csi);
    match csi {
        Some(csi) if csi.driver == DRIVER_NAME => Source::Ready(csi.volume_handle),
        Some(_) => Source::Foreign,
        None => Source::Unusable(format!(
            "volume {volume} of claim {label} is not a CSI volume"
        )),
    }
}

/// Writes one of snapshot-controller's steps for `object` that both kinds take; the
/// kind's own steps are its controller's.
pub(crate) async fn write_step<K: Kind>(
    client: &Client,
    object: &K::Object,
    step: &Step<K>,
) -> Result<(), StepError> {
    let meta = K::meta(object);
    let name = meta.name.clone().unwrap_or_default();
    let objects = api(client, &K::objects(), meta.namespace.as_deref());
    let contents = api(client, &K::contents(), None);
    match step {
        Step::Nothing | Step::Own(_) => {}
        Step::AddFinalizer => set_finalizer(&objects, meta, K::FINALIZER, true).await?,
        Step::RemoveFinalizer => set_finalizer(&objects, meta, K::FINALIZER, false).await?,
        Step::CreateContent(new) => {
            let content = to_object(K::content_object(object, new))?;
            create_or_keep(&contents, &content).await?;
        }
        Step::BindContent(content) => {
            let patch = json!({"spec": {K::REFERENCE_FIELD: {"uid": meta.uid}}});
            contents
                .patch(content, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
        }
        Step::DeleteContent(content) => {
            ignore_missing(contents.delete(content, &DeleteParams::default()).await)?;
        }
        Step::Status(status) => write_status(&objects, &name, json!(status)).await?,
        Step::Error(message) => write_error(&objects, &name, message).await?,
    }
    Ok(())
}

/// Writes one of csi-snapshotter's steps for `content` that involve no driver call;
/// a release is the finalizer's removal, after the kind's delete call.
pub(crate) async fn write_content_step<K: Kind>(
    client: &Client,
    content: &K::Content,
    step: &ContentStep<K>,
) -> Result<(), StepError> {
    let meta = K::content_meta(content);
    let name = meta.name.clone().unwrap_or_default();
    let contents = api(client, &K::contents(), None);
    match step {
        ContentStep::Nothing | ContentStep::Create { .. } | ContentStep::Check(_) => {}
        ContentStep::AddFinalizer => {
            set_finalizer(&contents, meta, K::CONTENT_FINALIZER, true).await?;
        }
        ContentStep::Release(_) => {
            set_finalizer(&contents, meta, K::CONTENT_FINALIZER, false).await?;
        }
        ContentStep::DeleteOrphan => {
            // The cache may lag behind an object just made: ask the API server.
            let reference = K::reference(content);
            let objects = api(client, &K::objects(), reference.namespace.as_deref());
            let live = objects
                .get_opt(reference.name.as_deref().unwrap_or_default())
                .await?;
            if live.is_none_or(|o| o.metadata.uid != reference.uid) {
                ignore_missing(contents.delete(&name, &DeleteParams::default()).await)?;
            }
        }
    }
    Ok(())
}

/// Writes `status` (clearing an earlier error).
pub(crate) async fn write_status(
    api: &Api<DynamicObject>,
    name: &str,
    status: Value,
) -> kube::Result<()> {
    let patch = with_null_error(json!({"status": status}));
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

/// Writes `message` as the status's error, not ready.
pub(crate) async fn write_error(
    api: &Api<DynamicObject>,
    name: &str,
    message: &str,
) -> kube::Result<()> {
    let patch = json!({"status": {
        "readyToUse": false,
        "error": {"message": message, "time": now()},
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

/// A merge patch of a status that clears an earlier error.
pub(crate) fn with_null_error(mut patch: Value) -> Value {
    if let Some(status) = patch.get_mut("status").and_then(|s| s.as_object_mut()) {
        status.insert("error".into(), Value::Null);
    }
    patch
}

pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub(crate) fn ignore_missing<T>(result: kube::Result<T>) -> kube::Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

pub(crate) fn to_object(value: Value) -> Result<DynamicObject, StepError> {
    serde_json::from_value(value).map_err(|e| StepError::Kube(kube::Error::SerdeError(e)))
}

/// Creates `object`; one an earlier pass made (not yet in the cache) is kept.
pub(crate) async fn create_or_keep(
    api: &Api<DynamicObject>,
    object: &DynamicObject,
) -> Result<(), StepError> {
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Adds or removes `finalizer`, guarded by the resourceVersion the decision saw.
pub(crate) async fn set_finalizer(
    api: &Api<DynamicObject>,
    meta: &ObjectMeta,
    finalizer: &str,
    present: bool,
) -> kube::Result<()> {
    let mut finalizers: Vec<String> = meta
        .finalizers
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f != finalizer)
        .collect();
    if present {
        finalizers.push(finalizer.to_string());
    }
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": meta.resource_version,
    }});
    let name = meta.name.as_deref().unwrap_or_default();
    ignore_missing(
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await,
    )
}
