//! A VolumeSnapshot as a claim's data source, resolved as external-provisioner does:
//! the snapshot must be ready and bound, its VolumeSnapshotContent must point back at
//! it and belong to our driver, and the claim must ask for at least its restore size.
//! The snapshot API is a set of CRDs a cluster may lack, so it is read untyped.

use std::fmt;

use driver_contract::DRIVER_NAME;
use kube::api::{ApiResource, DynamicObject};
use kube::{Api, Client};
use serde_json::Value;

use super::request::SNAPSHOT_GROUP;

/// A snapshot object a restore reads, as a message names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotObject {
    /// The claim's VolumeSnapshot, `namespace/name`.
    Snapshot(SnapshotName),
    /// The VolumeSnapshotContent a snapshot is bound to.
    Content(String),
}

impl fmt::Display for SnapshotObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Snapshot(name) => write!(f, "snapshot {name}"),
            Self::Content(name) => write!(f, "VolumeSnapshotContent {name}"),
        }
    }
}

/// A VolumeSnapshot's namespace and name, shown as `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotName {
    /// The claim's namespace, where the snapshot must be.
    pub namespace: String,
    /// The snapshot's name.
    pub name: String,
}

impl fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why a VolumeSnapshot cannot be restored from yet; every one is retried, since
/// the snapshot, its content or the claim may still change.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot kinds are not served: their CRDs are missing.
    #[error(
        "{0}: the API server does not serve {SNAPSHOT_GROUP}/v1 (are the snapshot CRDs installed?)"
    )]
    NotServed(SnapshotObject),
    /// The object is not there.
    #[error("{0} does not exist")]
    NotFound(SnapshotObject),
    /// Reading the object failed.
    #[error("getting {object}: {error}")]
    Get {
        /// What was read.
        object: SnapshotObject,
        /// The API's answer.
        error: kube::Error,
    },
    /// The object read is not one the code can look into.
    #[error("{object}: {error}")]
    Unreadable {
        /// What was read.
        object: SnapshotObject,
        /// Why it could not be turned into JSON.
        error: serde_json::Error,
    },
    /// The snapshot is being deleted.
    #[error("snapshot {0} is being deleted")]
    Deleting(SnapshotName),
    /// The snapshot is not ready to use.
    #[error("snapshot {0} is not ready to use")]
    NotReady(SnapshotName),
    /// The snapshot names no content.
    #[error("snapshot {0} is not bound to a VolumeSnapshotContent")]
    Unbound(SnapshotName),
    /// The content the snapshot names refers to another snapshot.
    #[error("VolumeSnapshotContent {content} is not bound to snapshot {snapshot}")]
    ContentOfAnother {
        /// The content's name.
        content: String,
        /// The snapshot that names it.
        snapshot: SnapshotName,
    },
    /// Another driver took the snapshot.
    #[error("snapshot {snapshot} was made by driver {driver:?}, not {DRIVER_NAME}")]
    ForeignDriver {
        /// The snapshot.
        snapshot: SnapshotName,
        /// The driver its content names.
        driver: String,
    },
    /// The driver has not answered for the content yet.
    #[error("VolumeSnapshotContent {0} has no snapshot handle yet")]
    NoHandle(String),
    /// The claim asks for less than the snapshot holds.
    #[error(
        "requested volume size {requested} is less than the size {size} of the source snapshot {snapshot}"
    )]
    TooSmall {
        /// The claim's request, in bytes.
        requested: u128,
        /// The snapshot's restore size, in bytes.
        size: u128,
        /// The snapshot.
        snapshot: SnapshotName,
    },
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: SNAPSHOT_GROUP.into(),
        version: "v1".into(),
        api_version: format!("{SNAPSHOT_GROUP}/v1"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The driver's handle for snapshot `name`, or why it cannot be used yet.
pub async fn resolve(
    client: &Client,
    name: SnapshotName,
    requested: Option<u128>,
) -> Result<String, SnapshotError> {
    let snapshots: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &name.namespace,
        &resource("VolumeSnapshot", "volumesnapshots"),
    );
    let snapshot = fetch(&snapshots, SnapshotObject::Snapshot(name.clone())).await?;
    let content_name = bound_content(&snapshot, &name)?;
    let contents: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &resource("VolumeSnapshotContent", "volumesnapshotcontents"),
    );
    let content = fetch(&contents, SnapshotObject::Content(content_name)).await?;
    snapshot_handle(&snapshot, &content, &name, requested)
}

async fn fetch(api: &Api<DynamicObject>, object: SnapshotObject) -> Result<Value, SnapshotError> {
    let name = match &object {
        SnapshotObject::Snapshot(name) => &name.name,
        SnapshotObject::Content(name) => name,
    };
    read(api.get(name).await, object)
}

/// What a GET of `object` answered: its JSON, or why not. A 404 without details is
/// the API server's for a resource it does not serve; with them, the object's.
fn read(
    answer: kube::Result<DynamicObject>,
    object: SnapshotObject,
) -> Result<Value, SnapshotError> {
    match answer {
        Ok(found) => {
            serde_json::to_value(found).map_err(|error| SnapshotError::Unreadable { object, error })
        }
        Err(kube::Error::Api(status)) if status.code == 404 && status.details.is_none() => {
            Err(SnapshotError::NotServed(object))
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Err(SnapshotError::NotFound(object)),
        Err(error) => Err(SnapshotError::Get { object, error }),
    }
}

/// The content a ready snapshot is bound to.
fn bound_content(snapshot: &Value, name: &SnapshotName) -> Result<String, SnapshotError> {
    if snapshot.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(SnapshotError::Deleting(name.clone()));
    }
    if snapshot.pointer("/status/readyToUse") != Some(&Value::Bool(true)) {
        return Err(SnapshotError::NotReady(name.clone()));
    }
    text(snapshot, "/status/boundVolumeSnapshotContentName")
        .map(str::to_string)
        .ok_or_else(|| SnapshotError::Unbound(name.clone()))
}

/// The content's snapshot handle, once the content is shown to be this snapshot's
/// and ours, and the claim is large enough to restore it.
fn snapshot_handle(
    snapshot: &Value,
    content: &Value,
    name: &SnapshotName,
    requested: Option<u128>,
) -> Result<String, SnapshotError> {
    let content_name = text(content, "/metadata/name").unwrap_or_default();
    let reference_matches = ["name", "namespace"].iter().all(|field| {
        text(content, &format!("/spec/volumeSnapshotRef/{field}"))
            == text(snapshot, &format!("/metadata/{field}"))
    }) && text(content, "/spec/volumeSnapshotRef/uid")
        .is_none_or(|uid| Some(uid) == text(snapshot, "/metadata/uid"));
    if !reference_matches {
        return Err(SnapshotError::ContentOfAnother {
            content: content_name.to_string(),
            snapshot: name.clone(),
        });
    }
    let driver = text(content, "/spec/driver").unwrap_or_default();
    if driver != DRIVER_NAME {
        return Err(SnapshotError::ForeignDriver {
            snapshot: name.clone(),
            driver: driver.to_string(),
        });
    }
    let handle = text(content, "/status/snapshotHandle")
        .ok_or_else(|| SnapshotError::NoHandle(content_name.to_string()))?;
    let restore_size = content
        .pointer("/status/restoreSize")
        .and_then(Value::as_u64)
        .map(u128::from);
    if let (Some(requested), Some(size)) = (requested, restore_size)
        && requested < size
    {
        return Err(SnapshotError::TooSmall {
            requested,
            size,
            snapshot: name.clone(),
        });
    }
    Ok(handle.to_string())
}

fn text<'v>(object: &'v Value, pointer: &str) -> Option<&'v str> {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot(status: Value) -> Value {
        json!({"metadata": {"name": "s", "namespace": "apps", "uid": "u1"}, "status": status})
    }

    fn content(spec: Value, status: Value) -> Value {
        let mut object = json!({
            "metadata": {"name": "c"},
            "spec": {"driver": DRIVER_NAME,
                     "volumeSnapshotRef": {"name": "s", "namespace": "apps", "uid": "u1"}},
            "status": status,
        });
        json_patch::merge(&mut object, &json!({"spec": spec}));
        object
    }

    fn apps_s() -> SnapshotName {
        SnapshotName {
            namespace: "apps".into(),
            name: "s".into(),
        }
    }

    #[test]
    fn only_a_ready_bound_snapshot_names_its_content() {
        let ready = snapshot(json!({"readyToUse": true, "boundVolumeSnapshotContentName": "c"}));
        assert_eq!(bound_content(&ready, &apps_s()).ok(), Some("c".into()));
        let mut deleting = ready.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let cases = [
            (
                "no readyToUse",
                snapshot(json!({"boundVolumeSnapshotContentName": "c"})),
                "snapshot apps/s is not ready to use",
            ),
            (
                "readyToUse false",
                snapshot(json!({"readyToUse": false, "boundVolumeSnapshotContentName": "c"})),
                "snapshot apps/s is not ready to use",
            ),
            (
                "no content",
                snapshot(json!({"readyToUse": true})),
                "snapshot apps/s is not bound to a VolumeSnapshotContent",
            ),
            (
                "being deleted",
                deleting,
                "snapshot apps/s is being deleted",
            ),
        ];
        for (what, object, message) in cases {
            let error = bound_content(&object, &apps_s()).expect_err(what);
            assert_eq!(error.to_string(), message, "{what}");
        }
    }

    #[test]
    fn the_handle_comes_from_a_content_of_ours_bound_to_this_snapshot() {
        let snap = snapshot(json!({}));
        let ready = json!({"snapshotHandle": "h1", "restoreSize": 1024});
        let handle = snapshot_handle(
            &snap,
            &content(json!({}), ready.clone()),
            &apps_s(),
            Some(1024),
        );
        assert_eq!(handle.ok(), Some("h1".into()));
        let cases = [
            (
                json!({"volumeSnapshotRef": {"uid": "u2"}}),
                ready.clone(),
                None,
                "VolumeSnapshotContent c is not bound to snapshot apps/s",
            ),
            (
                json!({"volumeSnapshotRef": {"namespace": "other"}}),
                ready.clone(),
                None,
                "VolumeSnapshotContent c is not bound to snapshot apps/s",
            ),
            (
                json!({"driver": "hostpath.csi.k8s.io"}),
                ready.clone(),
                None,
                "snapshot apps/s was made by driver \"hostpath.csi.k8s.io\", not csi.stowage.io",
            ),
            (
                json!({}),
                json!({"restoreSize": 1024}),
                None,
                "VolumeSnapshotContent c has no snapshot handle yet",
            ),
            (
                json!({}),
                ready.clone(),
                Some(1023),
                "requested volume size 1023 is less than the size 1024 of the source snapshot apps/s",
            ),
        ];
        for (spec, status, requested, message) in cases {
            let error = snapshot_handle(&snap, &content(spec, status), &apps_s(), requested)
                .expect_err(message);
            assert_eq!(error.to_string(), message);
        }
    }

    fn answer(status: Value) -> kube::Result<DynamicObject> {
        Err(kube::Error::Api(Box::new(
            serde_json::from_value(status).expect("status"),
        )))
    }

    #[test]
    fn a_get_s_failure_is_told_apart_by_its_status() {
        let snap = || SnapshotObject::Snapshot(apps_s());
        let not_served = read(answer(json!({"code": 404, "reason": "NotFound"})), snap());
        assert!(
            matches!(not_served, Err(SnapshotError::NotServed(_))),
            "{not_served:?}"
        );
        let missing = json!({"code": 404, "reason": "NotFound",
                             "details": {"name": "s", "kind": "volumesnapshots"}});
        let missing = read(answer(missing), snap());
        assert!(
            matches!(missing, Err(SnapshotError::NotFound(_))),
            "{missing:?}"
        );
        let failed = read(answer(json!({"code": 500, "message": "etcd"})), snap());
        assert!(
            matches!(failed, Err(SnapshotError::Get { .. })),
            "{failed:?}"
        );
        let found: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "s", "namespace": "apps"},
        }))
        .expect("object");
        let value = read(Ok(found), snap()).expect("read");
        assert_eq!(text(&value, "/metadata/name"), Some("s"));
    }

    #[test]
    fn a_missing_object_is_named_as_the_claim_s_event_says() {
        let cases = [
            (
                SnapshotError::NotFound(SnapshotObject::Snapshot(apps_s())),
                "snapshot apps/s does not exist",
            ),
            (
                SnapshotError::NotFound(SnapshotObject::Content("c".into())),
                "VolumeSnapshotContent c does not exist",
            ),
            (
                SnapshotError::NotServed(SnapshotObject::Snapshot(apps_s())),
                "snapshot apps/s: the API server does not serve snapshot.storage.k8s.io/v1 (are the snapshot CRDs installed?)",
            ),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
    }
}
