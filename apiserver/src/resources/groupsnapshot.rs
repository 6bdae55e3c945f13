//! groupsnapshot.storage.k8s.io/v1: VolumeGroupSnapshot, VolumeGroupSnapshotContent and
//! VolumeGroupSnapshotClass, as a cluster serves them once external-snapshotter v8's CRDs
//! are installed (v8 reads and writes v1; the CRDs' deprecated v1beta1 and v1beta2 are
//! not served). The types follow the CRDs' v1 schemas, so decoding prunes unknown fields
//! as a structural schema does, and the checks are the CRDs' CEL rules.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::snapshot::{
    self, SnapshotClass, SnapshotError, check_driver_and_policy, class_cells, class_columns,
};
use super::{PLAIN, decode_named, roundtrip};
use crate::error::Result;
use crate::meta;
use crate::registry::{Behaviour, Resource};
use crate::table::{self, Column, or_none, text};
use crate::validation::{FieldError, check_unchanged};

const GROUP: &str = "groupsnapshot.storage.k8s.io";

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct VolumeGroupSnapshot {
    #[serde(skip_serializing_if = "Option::is_none")]
    api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    metadata: ObjectMeta,
    spec: GroupSnapshotSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<GroupSnapshotStatus>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupSnapshotSpec {
    source: GroupSnapshotSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_group_snapshot_class_name: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupSnapshotSource {
    #[serde(skip_serializing_if = "Option::is_none")]
    selector: Option<LabelSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_group_snapshot_content_name: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupSnapshotStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    bound_volume_group_snapshot_content_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    creation_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ready_to_use: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<SnapshotError>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct VolumeGroupSnapshotContent {
    #[serde(skip_serializing_if = "Option::is_none")]
    api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    metadata: ObjectMeta,
    spec: ContentSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<ContentStatus>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct ContentSpec {
    deletion_policy: String,
    driver: String,
    source: ContentSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_group_snapshot_class_name: Option<String>,
    volume_group_snapshot_ref: ObjectReference,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct ContentSource {
    #[serde(skip_serializing_if = "Option::is_none")]
    group_snapshot_handles: Option<GroupSnapshotHandles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_handles: Option<Vec<String>>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupSnapshotHandles {
    volume_group_snapshot_handle: String,
    volume_snapshot_handles: Vec<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct ContentStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    creation_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ready_to_use: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_group_snapshot_handle: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_snapshot_info_list: Option<Vec<SnapshotInfo>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<SnapshotError>,
}

/// One member as the content's status lists it: times in ns, sizes in bytes.
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    creation_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ready_to_use: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restore_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_handle: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_handle: Option<String>,
}

/// The snapshot's and its content's ReadyToUse column, as the CRDs print it.
const READY_TO_USE: Column = Column::new(
    "ReadyToUse",
    "boolean",
    "Indicates if all the individual snapshots in the group are ready to be used to restore a group of volumes.",
);

/// The VolumeGroupSnapshot kind.
pub const VOLUME_GROUP_SNAPSHOT: Resource = Resource {
    group: GROUP,
    version: "v1",
    kind: "VolumeGroupSnapshot",
    plural: "volumegroupsnapshots",
    singular: "volumegroupsnapshot",
    short_names: &["vgs"],
    namespaced: true,
    has_status: true,
    behaviour: Behaviour {
        decode: roundtrip::<VolumeGroupSnapshot>,
        validate: validate_group_snapshot,
        columns: &[
            Column::name(),
            READY_TO_USE,
            Column::new(
                "VolumeGroupSnapshotClass",
                "string",
                "The name of the VolumeGroupSnapshotClass requested by the VolumeGroupSnapshot.",
            ),
            Column::new(
                "VolumeGroupSnapshotContent",
                "string",
                "Name of the VolumeGroupSnapshotContent object to which the VolumeGroupSnapshot object intends to bind to.",
            ),
            Column::new(
                "CreationTime",
                "date",
                "Timestamp when the point-in-time group snapshot was taken by the underlying storage system.",
            ),
            Column::age(),
        ],
        cells: group_snapshot_cells,
        ..PLAIN
    },
};

/// The VolumeGroupSnapshotContent kind.
pub const VOLUME_GROUP_SNAPSHOT_CONTENT: Resource = Resource {
    group: GROUP,
    version: "v1",
    kind: "VolumeGroupSnapshotContent",
    plural: "volumegroupsnapshotcontents",
    singular: "volumegroupsnapshotcontent",
    short_names: &["vgsc", "vgscs"],
    namespaced: false,
    has_status: true,
    behaviour: Behaviour {
        decode: roundtrip::<VolumeGroupSnapshotContent>,
        validate: validate_content,
        columns: &[
            Column::name(),
            READY_TO_USE,
            Column::new(
                "DeletionPolicy",
                "string",
                "Determines whether this VolumeGroupSnapshotContent and its physical group snapshot on the underlying storage system should be deleted when its bound VolumeGroupSnapshot is deleted.",
            ),
            Column::new(
                "Driver",
                "string",
                "Name of the CSI driver used to create the physical group snapshot on the underlying storage system.",
            ),
            Column::new(
                "VolumeGroupSnapshotClass",
                "string",
                "Name of the VolumeGroupSnapshotClass from which this group snapshot was (or will be) created.",
            ),
            Column::new(
                "VolumeGroupSnapshotNamespace",
                "string",
                "Namespace of the VolumeGroupSnapshot object to which this VolumeGroupSnapshotContent object is bound.",
            ),
            Column::new(
                "VolumeGroupSnapshot",
                "string",
                "Name of the VolumeGroupSnapshot object to which this VolumeGroupSnapshotContent object is bound.",
            ),
            Column::age(),
        ],
        cells: content_cells,
        ..PLAIN
    },
};

/// The VolumeGroupSnapshotClass kind.
pub const VOLUME_GROUP_SNAPSHOT_CLASS: Resource = Resource {
    group: GROUP,
    version: "v1",
    kind: "VolumeGroupSnapshotClass",
    plural: "volumegroupsnapshotclasses",
    singular: "volumegroupsnapshotclass",
    short_names: &["vgsclass", "vgsclasses"],
    namespaced: false,
    has_status: false,
    behaviour: Behaviour {
        decode: roundtrip::<SnapshotClass>,
        validate: validate_class,
        columns: &class_columns(
            "Determines whether a VolumeGroupSnapshotContent created through the VolumeGroupSnapshotClass should be deleted when its bound VolumeGroupSnapshot is deleted.",
        ),
        cells: class_cells,
        ..PLAIN
    },
};

/// The CRDs' rules for a source of two alternatives: exactly one is set, each is
/// immutable, and neither may be removed once set.
fn check_source(
    object: &Value,
    old: Option<&Value>,
    fields: [&str; 2],
    errors: &mut Vec<FieldError>,
) {
    let source = &object["spec"]["source"];
    let set = |v: &Value, f: &str| !v[f].is_null();
    if set(source, fields[0]) == set(source, fields[1]) {
        errors.push(FieldError::invalid(
            "spec.source",
            Value::Null,
            format!("exactly one of {} and {} must be set", fields[0], fields[1]),
        ));
    }
    let Some(old) = old else { return };
    let old_source = &old["spec"]["source"];
    for field in fields {
        if !set(old_source, field) {
            continue;
        }
        if set(source, field) {
            check_unchanged(
                &format!("spec.source.{field}"),
                &source[field],
                &old_source[field],
                errors,
            );
        } else {
            errors.push(FieldError::invalid(
                "spec.source",
                Value::Null,
                format!("{field} is required once set"),
            ));
        }
    }
}

/// A field the CRDs make immutable once set (`self == oldSelf` on an optional field).
fn check_unchanged_once_set(
    field: &str,
    pointer: &str,
    object: &Value,
    old: Option<&Value>,
    errors: &mut Vec<FieldError>,
) {
    let Some(before) = old.and_then(|old| old.pointer(pointer)) else {
        return;
    };
    if let Some(now) = object.pointer(pointer) {
        check_unchanged(field, now, before, errors);
    }
}

fn validate_group_snapshot(object: &Value, old: Option<&Value>) -> Result<Vec<FieldError>> {
    let (snapshot, mut errors) = decode_named::<VolumeGroupSnapshot>(object)?;
    check_source(
        object,
        old,
        ["selector", "volumeGroupSnapshotContentName"],
        &mut errors,
    );
    if snapshot.spec.volume_group_snapshot_class_name.as_deref() == Some("") {
        errors.push(FieldError::invalid(
            "spec.volumeGroupSnapshotClassName",
            "",
            "volumeGroupSnapshotClassName must not be the empty string when set",
        ));
    }
    check_unchanged_once_set(
        "status.boundVolumeGroupSnapshotContentName",
        "/status/boundVolumeGroupSnapshotContentName",
        object,
        old,
        &mut errors,
    );
    Ok(errors)
}

fn validate_content(object: &Value, old: Option<&Value>) -> Result<Vec<FieldError>> {
    let (content, mut errors) = decode_named::<VolumeGroupSnapshotContent>(object)?;
    let spec = &content.spec;
    check_driver_and_policy("spec.", &spec.driver, &spec.deletion_policy, &mut errors);
    check_source(
        object,
        old,
        ["volumeHandles", "groupSnapshotHandles"],
        &mut errors,
    );
    let reference = &spec.volume_group_snapshot_ref;
    if reference.name.is_none() || reference.namespace.is_none() {
        errors.push(FieldError::required(
            "spec.volumeGroupSnapshotRef",
            "both volumeGroupSnapshotRef.name and volumeGroupSnapshotRef.namespace must be set",
        ));
    }
    for (field, pointer) in [
        ("spec.driver", "/spec/driver"),
        (
            "spec.volumeGroupSnapshotClassName",
            "/spec/volumeGroupSnapshotClassName",
        ),
        (
            "spec.volumeGroupSnapshotRef.name",
            "/spec/volumeGroupSnapshotRef/name",
        ),
        (
            "spec.volumeGroupSnapshotRef.namespace",
            "/spec/volumeGroupSnapshotRef/namespace",
        ),
        (
            "status.volumeGroupSnapshotHandle",
            "/status/volumeGroupSnapshotHandle",
        ),
    ] {
        check_unchanged_once_set(field, pointer, object, old, &mut errors);
    }
    check_uid_kept(object, old, &mut errors);
    Ok(errors)
}

/// `volumeGroupSnapshotRef.uid is immutable once set`: it may not change nor go.
fn check_uid_kept(object: &Value, old: Option<&Value>, errors: &mut Vec<FieldError>) {
    const UID: &str = "/spec/volumeGroupSnapshotRef/uid";
    let Some(before) = old.and_then(|old| old.pointer(UID)) else {
        return;
    };
    if object.pointer(UID) != Some(before) {
        errors.push(FieldError::invalid(
            "spec.volumeGroupSnapshotRef.uid",
            object.pointer(UID).cloned().unwrap_or(Value::Null),
            "volumeGroupSnapshotRef.uid is immutable once set",
        ));
    }
}

/// A snapshot class's checks, and the CRD's: driver, deletionPolicy and parameters are
/// immutable once set.
fn validate_class(object: &Value, old: Option<&Value>) -> Result<Vec<FieldError>> {
    let mut errors = snapshot::validate_class(object, None)?;
    for (field, pointer) in [
        ("driver", "/driver"),
        ("deletionPolicy", "/deletionPolicy"),
        ("parameters", "/parameters"),
    ] {
        check_unchanged_once_set(field, pointer, object, old, &mut errors);
    }
    Ok(errors)
}

fn group_snapshot_cells(object: &Value) -> Vec<Value> {
    vec![
        json!(meta::name(object)),
        or_none(text(object, "/status/readyToUse")),
        or_none(text(object, "/spec/volumeGroupSnapshotClassName")),
        or_none(text(object, "/status/boundVolumeGroupSnapshotContentName")),
        or_none(text(object, "/status/creationTime")),
        table::age(object),
    ]
}

fn content_cells(object: &Value) -> Vec<Value> {
    vec![
        json!(meta::name(object)),
        or_none(text(object, "/status/readyToUse")),
        json!(text(object, "/spec/deletionPolicy")),
        json!(text(object, "/spec/driver")),
        or_none(text(object, "/spec/volumeGroupSnapshotClassName")),
        json!(text(object, "/spec/volumeGroupSnapshotRef/namespace")),
        json!(text(object, "/spec/volumeGroupSnapshotRef/name")),
        table::age(object),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::error_fields as fields;
    use super::*;

    fn group_snapshot(source: Value) -> Value {
        json!({"metadata": {"name": "g", "namespace": "default"},
               "spec": {"source": source, "volumeGroupSnapshotClassName": "k"}})
    }

    #[test]
    fn group_snapshot_sources_follow_the_crd_rules() {
        let selector = json!({"selector": {"matchLabels": {"app": "db"}}});
        let named = json!({"volumeGroupSnapshotContentName": "c"});
        let both = json!({"selector": {}, "volumeGroupSnapshotContentName": "c"});
        let other = json!({"selector": {"matchLabels": {"app": "web"}}});
        for (case, source, old, want) in [
            ("a selector", &selector, None, vec![]),
            ("a content name", &named, None, vec![]),
            ("neither", &json!({}), None, vec!["spec.source"]),
            ("both", &both, None, vec!["spec.source"]),
            ("unchanged", &selector, Some(&selector), vec![]),
            (
                "a changed selector",
                &other,
                Some(&selector),
                vec!["spec.source.selector"],
            ),
            (
                "selector swapped for a name",
                &named,
                Some(&selector),
                vec!["spec.source"],
            ),
        ] {
            let old = old.map(|s| group_snapshot(s.clone()));
            assert_eq!(
                fields(validate_group_snapshot(
                    &group_snapshot(source.clone()),
                    old.as_ref()
                )),
                want,
                "{case}"
            );
        }
        let mut empty_class = group_snapshot(selector.clone());
        empty_class["spec"]["volumeGroupSnapshotClassName"] = json!("");
        assert_eq!(
            fields(validate_group_snapshot(&empty_class, None)),
            ["spec.volumeGroupSnapshotClassName"]
        );
        let mut bound = group_snapshot(selector.clone());
        bound["status"] = json!({"boundVolumeGroupSnapshotContentName": "a"});
        let mut rebound = bound.clone();
        rebound["status"]["boundVolumeGroupSnapshotContentName"] = json!("b");
        assert_eq!(
            fields(validate_group_snapshot(&rebound, Some(&bound))),
            ["status.boundVolumeGroupSnapshotContentName"]
        );
    }

    #[test]
    fn contents_and_classes_are_validated_as_the_crds_do() {
        let content = json!({
            "metadata": {"name": "c"},
            "spec": {"driver": "csi.stowage.io", "deletionPolicy": "Delete",
                     "source": {"volumeHandles": ["a", "b"]},
                     "volumeGroupSnapshotRef": {"name": "g", "namespace": "default", "uid": "u"}},
        });
        assert!(fields(validate_content(&content, None)).is_empty());
        let mut bad = content.clone();
        bad["spec"]["driver"] = json!("");
        bad["spec"]["deletionPolicy"] = json!("Keep");
        bad["spec"]["source"]["groupSnapshotHandles"] =
            json!({"volumeGroupSnapshotHandle": "h", "volumeSnapshotHandles": ["x"]});
        bad["spec"]["volumeGroupSnapshotRef"] = json!({"name": "g"});
        assert_eq!(
            fields(validate_content(&bad, None)),
            [
                "spec.driver",
                "spec.deletionPolicy",
                "spec.source",
                "spec.volumeGroupSnapshotRef"
            ]
        );
        let mut moved = content.clone();
        moved["spec"]["source"] = json!({"volumeHandles": ["a"]});
        moved["spec"]["driver"] = json!("other.io");
        moved["spec"]["volumeGroupSnapshotRef"]["uid"] = json!("v");
        assert_eq!(
            fields(validate_content(&moved, Some(&content))),
            [
                "spec.source.volumeHandles",
                "spec.driver",
                "spec.volumeGroupSnapshotRef.uid"
            ]
        );

        let class = json!({"metadata": {"name": "k"}, "driver": "d", "deletionPolicy": "Retain",
                           "parameters": {"a": "1"}});
        assert!(fields(validate_class(&class, None)).is_empty());
        let mut changed = class.clone();
        changed["deletionPolicy"] = json!("Delete");
        changed["parameters"] = json!({"a": "2"});
        assert_eq!(
            fields(validate_class(&changed, Some(&class))),
            ["deletionPolicy", "parameters"]
        );
        let mut no_driver = class.clone();
        no_driver["driver"] = json!("");
        assert_eq!(fields(validate_class(&no_driver, None)), ["driver"]);
    }
}
