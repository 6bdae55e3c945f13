//! A VolumeSnapshot as a claim's data source, resolved as external-provisioner does:
//! the snapshot must be ready and bound, its VolumeSnapshotContent must point back at
//! it and belong to our driver, and the claim must ask for at least its restore size.
//! The snapshot API is a set of CRDs a cluster may lack, so it is read untyped.

use driver_contract::DRIVER_NAME;
use kube::api::{ApiResource, DynamicObject};
use kube::{Api, Client};
use serde_json::Value;

use super::request::SNAPSHOT_GROUP;

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: SNAPSHOT_GROUP.into(),
        version: "v1".into(),
        api_version: format!("{SNAPSHOT_GROUP}/v1"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The driver's handle for snapshot `namespace/name`, or why it cannot be used yet.
pub async fn resolve(
    client: &Client,
    namespace: &str,
    name: &str,
    requested: Option<u128>,
) -> Result<String, String> {
    let label = format!("{namespace}/{name}");
    let snapshots: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &resource("VolumeSnapshot", "volumesnapshots"),
    );
    let snapshot = fetch(&snapshots, name, &format!("snapshot {label}")).await?;
    let content_name = bound_content(&snapshot, &label)?;
    let contents: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &resource("VolumeSnapshotContent", "volumesnapshotcontents"),
    );
    let content = fetch(
        &contents,
        &content_name,
        &format!("VolumeSnapshotContent {content_name}"),
    )
    .await?;
    snapshot_handle(&snapshot, &content, &label, requested)
}

async fn fetch(api: &Api<DynamicObject>, name: &str, what: &str) -> Result<Value, String> {
    match api.get(name).await {
        Ok(object) => serde_json::to_value(object).map_err(|e| format!("{what}: {e}")),
        Err(kube::Error::Api(status)) if status.code == 404 && status.details.is_none() => {
            Err(format!(
                "{what}: the API server does not serve {SNAPSHOT_GROUP}/v1 (are the snapshot CRDs installed?)"
            ))
        }
        Err(kube::Error::Api(status)) if status.code == 404 => {
            Err(format!("{what} does not exist"))
        }
        Err(error) => Err(format!("getting {what}: {error}")),
    }
}

/// The content a ready snapshot is bound to.
fn bound_content(snapshot: &Value, label: &str) -> Result<String, String> {
    if snapshot.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(format!("snapshot {label} is being deleted"));
    }
    if snapshot.pointer("/status/readyToUse") != Some(&Value::Bool(true)) {
        return Err(format!("snapshot {label} is not ready to use"));
    }
    text(snapshot, "/status/boundVolumeSnapshotContentName")
        .map(str::to_string)
        .ok_or_else(|| format!("snapshot {label} is not bound to a VolumeSnapshotContent"))
}

/// The content's snapshot handle, once the content is shown to be this snapshot's
/// and ours, and the claim is large enough to restore it.
fn snapshot_handle(
    snapshot: &Value,
    content: &Value,
    label: &str,
    requested: Option<u128>,
) -> Result<String, String> {
    let content_name = text(content, "/metadata/name").unwrap_or_default();
    let reference_matches = ["name", "namespace"].iter().all(|field| {
        text(content, &format!("/spec/volumeSnapshotRef/{field}"))
            == text(snapshot, &format!("/metadata/{field}"))
    }) && text(content, "/spec/volumeSnapshotRef/uid")
        .is_none_or(|uid| Some(uid) == text(snapshot, "/metadata/uid"));
    if !reference_matches {
        return Err(format!(
            "VolumeSnapshotContent {content_name} is not bound to snapshot {label}"
        ));
    }
    let driver = text(content, "/spec/driver").unwrap_or_default();
    if driver != DRIVER_NAME {
        return Err(format!(
            "snapshot {label} was made by driver {driver:?}, not {DRIVER_NAME}"
        ));
    }
    let handle = text(content, "/status/snapshotHandle").ok_or_else(|| {
        format!("VolumeSnapshotContent {content_name} has no snapshot handle yet")
    })?;
    let restore_size = content
        .pointer("/status/restoreSize")
        .and_then(Value::as_u64)
        .map(u128::from);
    if let (Some(requested), Some(size)) = (requested, restore_size)
        && requested < size
    {
        return Err(format!(
            "requested volume size {requested} is less than the size {size} of the source snapshot {label}"
        ));
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

    #[test]
    fn only_a_ready_bound_snapshot_names_its_content() {
        let ready = snapshot(json!({"readyToUse": true, "boundVolumeSnapshotContentName": "c"}));
        assert_eq!(bound_content(&ready, "apps/s"), Ok("c".into()));
        for (status, why) in [
            (json!({"boundVolumeSnapshotContentName": "c"}), "not ready"),
            (
                json!({"readyToUse": false, "boundVolumeSnapshotContentName": "c"}),
                "not ready",
            ),
            (json!({"readyToUse": true}), "not bound"),
        ] {
            let error = bound_content(&snapshot(status), "apps/s").expect_err(why);
            assert!(error.contains(why), "{error}");
        }
        let mut deleting = ready.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert!(bound_content(&deleting, "apps/s").is_err_and(|e| e.contains("being deleted")));
    }

    #[test]
    fn the_handle_comes_from_a_content_of_ours_bound_to_this_snapshot() {
        let snap = snapshot(json!({}));
        let ready = json!({"snapshotHandle": "h1", "restoreSize": 1024});
        assert_eq!(
            snapshot_handle(
                &snap,
                &content(json!({}), ready.clone()),
                "apps/s",
                Some(1024)
            ),
            Ok("h1".into())
        );
        for (spec, status, requested, why) in [
            (
                json!({"volumeSnapshotRef": {"uid": "u2"}}),
                ready.clone(),
                None,
                "not bound",
            ),
            (
                json!({"volumeSnapshotRef": {"namespace": "other"}}),
                ready.clone(),
                None,
                "not bound",
            ),
            (
                json!({"driver": "hostpath.csi.k8s.io"}),
                ready.clone(),
                None,
                "made by driver",
            ),
            (
                json!({}),
                json!({"restoreSize": 1024}),
                None,
                "no snapshot handle",
            ),
            (
                json!({}),
                ready.clone(),
                Some(1023),
                "less than the size 1024",
            ),
        ] {
            let error =
                snapshot_handle(&snap, &content(spec, status), "apps/s", requested).expect_err(why);
            assert!(error.contains(why), "{error}");
        }
    }
}
