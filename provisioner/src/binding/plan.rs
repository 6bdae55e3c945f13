//! The decisions a snapshot kind shares with the other (pure): snapshot-controller's
//! binding of a VolumeSnapshot or VolumeGroupSnapshot to its content, and
//! csi-snapshotter's life of that content. The kind's own parts come from [`Kind`].

use driver_contract::DRIVER_NAME;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::Kind;
use crate::snapshot::model::{SnapshotRef, deleting, has_finalizer};

/// Why no class serves an object; its message goes to the object's `status.error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassError {
    #[error("{kind} {name} does not exist")]
    Missing { kind: &'static str, name: String },
    #[error("no default {0} for {DRIVER_NAME}")]
    NoDefault(&'static str),
    #[error("more than one default {0} for {DRIVER_NAME}")]
    SeveralDefaults(&'static str),
}

/// What the source of a dynamic object resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source<V> {
    /// Its volumes (one, or a group's sorted), all ours.
    Ready(V),
    /// Not (yet) usable, and why.
    Unusable(String),
    /// Another driver's volume: not ours to snapshot.
    Foreign,
}

/// The next step for a VolumeSnapshot or VolumeGroupSnapshot (snapshot-controller's part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<K: Kind> {
    Nothing,
    AddFinalizer,
    RemoveFinalizer,
    /// Create the content for a dynamic object.
    CreateContent(K::NewContent),
    /// Fill in the uid of a pre-provisioned content's reference to this object.
    BindContent(String),
    /// Delete the bound content (policy Delete) before the object goes.
    DeleteContent(String),
    /// Write this status.
    Status(K::Status),
    /// Report why the object cannot be taken (status.error, not ready).
    Error(String),
    /// A step of this kind alone (a group's member snapshots).
    Own(K::OwnStep),
}

/// The next step for a content of our driver (csi-snapshotter's part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentStep<K: Kind> {
    Nothing,
    AddFinalizer,
    /// Ask the driver to take it under this name from these volumes; record the answer.
    Create {
        name: String,
        volumes: K::Volumes,
    },
    /// Look up a pre-provisioned one by its handles, and record the answer.
    Check(K::Handles),
    /// Delete it from the driver (when the policy is Delete and its handles are
    /// known), then let go.
    Release(Option<K::Handles>),
    /// The object it was bound to is gone (if the API server confirms): delete it.
    DeleteOrphan,
}

/// What a content says it is made from.
pub enum ContentSource<V, H> {
    /// Dynamic: the volumes to take.
    Volumes(V),
    /// Pre-provisioned: the driver's handles.
    Handles(H),
    Neither,
}

/// The class an object names, or our driver's default one.
pub fn our_class<'a, K: Kind>(
    named: Option<&str>,
    classes: &'a [K::Class],
) -> Result<&'a K::Class, ClassError> {
    if let Some(name) = named {
        return classes
            .iter()
            .find(|c| K::class_meta(c).name.as_deref() == Some(name))
            .ok_or_else(|| ClassError::Missing {
                kind: K::CLASS_KIND,
                name: name.to_string(),
            });
    }
    let defaults: Vec<&K::Class> = classes
        .iter()
        .filter(|c| K::class_driver(c) == DRIVER_NAME)
        .filter(|c| {
            K::class_meta(c)
                .annotations
                .as_ref()
                .and_then(|a| a.get(K::DEFAULT_CLASS))
                .is_some_and(|v| v == "true")
        })
        .collect();
    match defaults.as_slice() {
        [one] => Ok(one),
        [] => Err(ClassError::NoDefault(K::CLASS_KIND)),
        _ => Err(ClassError::SeveralDefaults(K::CLASS_KIND)),
    }
}

/// The content `object` binds to: the one it names, the one its status records, or
/// the one a dynamic object gets.
pub fn content_name_of<K: Kind>(object: &K::Object) -> String {
    K::named_content(object)
        .or_else(|| K::bound_content(object))
        .map_or_else(
            || K::content_name(K::meta(object).uid.as_deref().unwrap_or_default()),
            str::to_string,
        )
}

/// The next step for `object`, given its content (by the name it binds to), its class
/// and source when dynamic, and what the kind's own steps read (`own`).
pub fn step<K: Kind>(
    object: &K::Object,
    content: Option<&K::Content>,
    class: Result<&K::Class, ClassError>,
    source: &Source<K::Volumes>,
    own: &K::Own,
) -> Step<K> {
    match next_step(object, content, class, source, own) {
        // Already reported: writing it again would only wake the next pass.
        Step::Error(message) if K::reported_error(object) == Some(message.as_str()) => {
            Step::Nothing
        }
        step => step,
    }
}

fn next_step<K: Kind>(
    object: &K::Object,
    content: Option<&K::Content>,
    class: Result<&K::Class, ClassError>,
    source: &Source<K::Volumes>,
    own: &K::Own,
) -> Step<K> {
    let meta = K::meta(object);
    let uid = meta.uid.clone().unwrap_or_default();
    if deleting(meta) {
        let bound = content.filter(|c| refers_to::<K>(c, meta));
        return K::before_deletion(object, own).unwrap_or_else(|| deletion_step(meta, bound));
    }
    let dynamic = K::dynamic(object);
    if dynamic {
        // Another driver's class or volume: its own snapshotter's business.
        match &class {
            Ok(c) if K::class_driver(c) != DRIVER_NAME => return Step::Nothing,
            _ if *source == Source::Foreign => return Step::Nothing,
            _ => {}
        }
    }
    if !has_finalizer(meta, K::FINALIZER) {
        return Step::AddFinalizer;
    }
    let Some(content) = content else {
        if !dynamic {
            let name = K::named_content(object).unwrap_or_default();
            return Step::Error(format!("{} {name} does not exist", K::CONTENT_KIND));
        }
        return match (class, source) {
            (Err(why), _) => Step::Error(why.to_string()),
            (_, Source::Unusable(why)) => Step::Error(why.clone()),
            (Ok(_), Source::Foreign) => Step::Nothing,
            (Ok(class), Source::Ready(volumes)) => {
                Step::CreateContent(K::new_content(K::content_name(&uid), volumes, class))
            }
        };
    };
    let content_name = K::content_meta(content).name.clone().unwrap_or_default();
    if !refers_to::<K>(content, meta) {
        return Step::Error(format!(
            "{} {content_name} is bound to another {}",
            K::CONTENT_KIND,
            K::WHAT
        ));
    }
    if K::reference(content).uid.is_none() {
        return Step::BindContent(content_name);
    }
    K::bound_step(object, content, &content_name, own)
}

/// As snapshot-controller: a Delete content goes first, and the finalizer only once
/// that content is gone.
fn deletion_step<K: Kind>(meta: &ObjectMeta, bound: Option<&K::Content>) -> Step<K> {
    match bound {
        Some(c) if K::deletes(c) && !deleting(K::content_meta(c)) => {
            Step::DeleteContent(K::content_meta(c).name.clone().unwrap_or_default())
        }
        Some(c) if K::deletes(c) => Step::Nothing,
        _ if has_finalizer(meta, K::FINALIZER) => Step::RemoveFinalizer,
        _ => Step::Nothing,
    }
}

/// Whether `content` names the object (the uid may be unset on a pre-provisioned one).
fn refers_to<K: Kind>(content: &K::Content, object: &ObjectMeta) -> bool {
    let reference: &SnapshotRef = K::reference(content);
    reference.name == object.name
        && reference.namespace == object.namespace
        && reference
            .uid
            .as_ref()
            .is_none_or(|uid| Some(uid) == object.uid.as_ref())
}

/// The status to write, or nothing when the object's status already says it (its
/// error aside, which a write of the status clears).
pub fn status_step<K: Kind>(current: Option<&K::Status>, wanted: K::Status) -> Step<K> {
    let current = K::without_error(current.cloned().unwrap_or_default());
    if current == wanted {
        Step::Nothing
    } else {
        Step::Status(wanted)
    }
}

/// The next step for `content`; `object_uid` is the uid of the object its reference
/// names, `None` when the cache has no such object.
pub fn content_step<K: Kind>(content: &K::Content, object_uid: Option<&str>) -> ContentStep<K> {
    let meta = K::content_meta(content);
    if K::content_driver(content) != DRIVER_NAME {
        return ContentStep::Nothing;
    }
    if deleting(meta) {
        if !has_finalizer(meta, K::CONTENT_FINALIZER) {
            return ContentStep::Nothing;
        }
        return ContentStep::Release(K::handles_to_delete(content));
    }
    let reference = K::reference(content);
    if let Some(uid) = &reference.uid
        && object_uid != Some(uid.as_str())
    {
        return if K::deletes(content) {
            ContentStep::DeleteOrphan
        } else {
            ContentStep::Nothing
        };
    }
    if !has_finalizer(meta, K::CONTENT_FINALIZER) {
        return ContentStep::AddFinalizer;
    }
    if K::taken(content) {
        return ContentStep::Nothing;
    }
    match K::content_source(content) {
        ContentSource::Volumes(volumes) => match &reference.uid {
            Some(uid) => ContentStep::Create {
                name: K::driver_name(uid),
                volumes,
            },
            // Dynamic contents are made bound; one without a uid waits for it.
            None => ContentStep::Nothing,
        },
        ContentSource::Handles(handles) => ContentStep::Check(handles),
        ContentSource::Neither => ContentStep::Nothing,
    }
}
