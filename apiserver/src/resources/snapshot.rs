//! snapshot.storage.k8s.io/v1: VolumeSnapshot, VolumeSnapshotContent and
//! VolumeSnapshotClass, served as a cluster serves them once the external-snapshotter
//! CRDs are installed. The types below follow those CRDs' schemas, so decoding prunes
//! unknown fields as a structural schema does.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{PLAIN, decode_named, roundtrip};
use crate::error::Result;
use crate::meta;
use crate::registry::{Behaviour, Resource};
use crate::table::{self, Column, or_none, text};
use crate::validation::{FieldError, check_one_of, check_unchanged};

const GROUP: &str = "snapshot.storage.k8s.io";
const DELETION_POLICIES: &[&str] = &["Delete", "Retain"];

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct VolumeSnapshot {
    #[serde(skip_serializing_if = "Option::is_none")]
    api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    metadata: ObjectMeta,
    spec: SnapshotSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<SnapshotStatus>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotSpec {
    source: SnapshotSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_snapshot_class_name: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotSource {
    #[serde(skip_serializing_if = "Option::is_none")]
    persistent_volume_claim_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_snapshot_content_name: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    bound_volume_snapshot_content_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    creation_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ready_to_use: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restore_size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<SnapshotError>,
}

/// A (group) snapshot's or content's error, as the CRDs give it.
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SnapshotError {
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct VolumeSnapshotContent {
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
    source_volume_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_snapshot_class_name: Option<String>,
    volume_snapshot_ref: ObjectReference,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct ContentSource {
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_handle: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_handle: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct ContentStatus {
    /// Nanoseconds since the epoch, as the CSI snapshotter records it.
    #[serde(skip_serializing_if = "Option::is_none")]
    creation_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ready_to_use: Option<bool>,
    /// Bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    restore_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_handle: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<SnapshotError>,
    /// Set on a member of a VolumeGroupSnapshot: its snapshot goes with the group's.
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_group_snapshot_handle: Option<String>,
}

/// A VolumeSnapshotClass, and a VolumeGroupSnapshotClass, whose schema is the same.
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SnapshotClass {
    #[serde(skip_serializing_if = "Option::is_none")]
    api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    metadata: ObjectMeta,
    driver: String,
    deletion_policy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BTreeMap<String, String>>,
}

/// The snapshot's and its content's ReadyToUse column, as the CRDs print it.
const READY_TO_USE: Column = Column::new(
    "ReadyToUse",
    "boolean",
    "Indicates if the snapshot is ready to be used to restore a volume.",
);

/// The VolumeSnapshot kind.
pub const VOLUME_SNAPSHOT: Resource = Resource {
    group: GROUP,
    version: "v1",
    kind: "VolumeSnapshot",
    plural: "volumesnapshots",
    singular: "volumesnapshot",
    short_names: &["vs"],
    namespaced: true,
    has_status: true,
    behaviour: Behaviour {
        decode: roundtrip::<VolumeSnapshot>,
        validate: validate_snapshot,
        columns: &[
            Column::name(),
            READY_TO_USE,
            Column::new(
                "SourcePVC",
                "string",
                "If a new snapshot needs to be created, this contains the name of the source PVC from which this snapshot was (or will be) created.",
            ),
            Column::new(
                "RestoreSize",
                "string",
                "Represents the minimum size of volume required to rehydrate from this snapshot.",
            ),
            Column::new(
                "SnapshotContent",
                "string",
                "Name of the VolumeSnapshotContent object to which the VolumeSnapshot object intends to bind to.",
            ),
            Column::age(),
        ],
        cells: snapshot_cells,
        ..PLAIN
    },
};

/// The VolumeSnapshotContent kind.
pub const VOLUME_SNAPSHOT_CONTENT: Resource = Resource {
    group: GROUP,
    version: "v1",
    kind: "VolumeSnapshotContent",
    plural: "volumesnapshotcontents",
    singular: "volumesnapshotcontent",
    short_names: &["vsc", "vscs"],
    namespaced: false,
    has_status: true,
    behaviour: Behaviour {
        decode: roundtrip::<VolumeSnapshotContent>,
        validate: validate_content,
        columns: &[
            Column::name(),
            READY_TO_USE,
            Column::new(
                "RestoreSize",
                "integer",
                "Represents the complete size of the snapshot in bytes",
            ),
            Column::new(
                "DeletionPolicy",
                "string",
                "Determines whether this VolumeSnapshotContent and its physical snapshot on the underlying storage system should be deleted when its bound VolumeSnapshot is deleted.",
            ),
            Column::new(
                "Driver",
                "string",
                "Name of the CSI driver used to create the physical snapshot on the underlying storage system.",
            ),
            Column::new(
                "VolumeSnapshot",
                "string",
                "Name of the VolumeSnapshot object to which this VolumeSnapshotContent object is bound.",
            ),
            Column::age(),
        ],
        cells: content_cells,
        ..PLAIN
    },
};

/// The VolumeSnapshotClass kind.
pub const VOLUME_SNAPSHOT_CLASS: Resource = Resource {
    group: GROUP,
    version: "v1",
    kind: "VolumeSnapshotClass",
    plural: "volumesnapshotclasses",
    singular: "volumesnapshotclass",
    short_names: &["vsclass", "vsclasses"],
    namespaced: false,
    has_status: false,
    behaviour: Behaviour {
        decode: roundtrip::<SnapshotClass>,
        validate: validate_class,
        columns: &class_columns(
            "Determines whether a VolumeSnapshotContent created through the VolumeSnapshotClass should be deleted when its bound VolumeSnapshot is deleted.",
        ),
        cells: class_cells,
        ..PLAIN
    },
};

/// A (group) snapshot class's columns; `policy` describes its DeletionPolicy.
pub(super) const fn class_columns(policy: &'static str) -> [Column; 4] {
    [
        Column::name(),
        Column::new("Driver", "string", ""),
        Column::new("DeletionPolicy", "string", policy),
        Column::age(),
    ]
}

/// Exactly one of two source fields, as the CRDs' validation rules demand.
fn check_exactly_one(field: &str, a: (&str, bool), b: (&str, bool), errors: &mut Vec<FieldError>) {
    if a.1 == b.1 {
        errors.push(FieldError::invalid(
            field,
            Value::Null,
            format!("exactly one of {} and {} should be set", a.0, b.0),
        ));
    }
}

/// A content's or class's driver (required) and deletion policy, at `prefix`.
pub(super) fn check_driver_and_policy(
    prefix: &str,
    driver: &str,
    policy: &str,
    errors: &mut Vec<FieldError>,
) {
    if driver.is_empty() {
        errors.push(FieldError::required(format!("{prefix}driver"), ""));
    }
    check_one_of(
        &format!("{prefix}deletionPolicy"),
        policy,
        DELETION_POLICIES,
        errors,
    );
}

/// A snapshot's or content's source is fixed at creation.
fn check_source_unchanged(object: &Value, old: Option<&Value>, errors: &mut Vec<FieldError>) {
    if let Some(old) = old {
        check_unchanged(
            "spec.source",
            &object["spec"]["source"],
            &old["spec"]["source"],
            errors,
        );
    }
}

fn validate_snapshot(object: &Value, old: Option<&Value>) -> Result<Vec<FieldError>> {
    let (snapshot, mut errors) = decode_named::<VolumeSnapshot>(object)?;
    let source = &snapshot.spec.source;
    check_exactly_one(
        "spec.source",
        (
            "persistentVolumeClaimName",
            source.persistent_volume_claim_name.is_some(),
        ),
        (
            "volumeSnapshotContentName",
            source.volume_snapshot_content_name.is_some(),
        ),
        &mut errors,
    );
    if snapshot.spec.volume_snapshot_class_name.as_deref() == Some("") {
        errors.push(FieldError::invalid(
            "spec.volumeSnapshotClassName",
            "",
            "must not be the empty string when set",
        ));
    }
    check_source_unchanged(object, old, &mut errors);
    Ok(errors)
}

fn validate_content(object: &Value, old: Option<&Value>) -> Result<Vec<FieldError>> {
    let (content, mut errors) = decode_named::<VolumeSnapshotContent>(object)?;
    let spec = &content.spec;
    check_driver_and_policy("spec.", &spec.driver, &spec.deletion_policy, &mut errors);
    check_exactly_one(
        "spec.source",
        ("volumeHandle", spec.source.volume_handle.is_some()),
        ("snapshotHandle", spec.source.snapshot_handle.is_some()),
        &mut errors,
    );
    let reference = &spec.volume_snapshot_ref;
    for (field, value) in [
        ("name", &reference.name),
        ("namespace", &reference.namespace),
    ] {
        if value.as_deref().is_none_or(str::is_empty) {
            errors.push(FieldError::required(
                format!("spec.volumeSnapshotRef.{field}"),
                "",
            ));
        }
    }
    check_source_unchanged(object, old, &mut errors);
    Ok(errors)
}

/// A (group) snapshot class: its name, driver and deletion policy.
pub(super) fn validate_class(object: &Value, _: Option<&Value>) -> Result<Vec<FieldError>> {
    let (class, mut errors) = decode_named::<SnapshotClass>(object)?;
    check_driver_and_policy("", &class.driver, &class.deletion_policy, &mut errors);
    Ok(errors)
}

fn snapshot_cells(object: &Value) -> Vec<Value> {
    vec![
        json!(meta::name(object)),
        or_none(text(object, "/status/readyToUse")),
        or_none(text(object, "/spec/source/persistentVolumeClaimName")),
        or_none(text(object, "/status/restoreSize")),
        or_none(text(object, "/status/boundVolumeSnapshotContentName")),
        table::age(object),
    ]
}

fn content_cells(object: &Value) -> Vec<Value> {
    vec![
        json!(meta::name(object)),
        or_none(text(object, "/status/readyToUse")),
        or_none(text(object, "/status/restoreSize")),
        json!(text(object, "/spec/deletionPolicy")),
        json!(text(object, "/spec/driver")),
        json!(text(object, "/spec/volumeSnapshotRef/name")),
        table::age(object),
    ]
}

/// A (group) snapshot class's row: name, driver, deletion policy, age.
pub(super) fn class_cells(object: &Value) -> Vec<Value> {
    vec![
        json!(meta::name(object)),
        json!(text(object, "/driver")),
        json!(text(object, "/deletionPolicy")),
        table::age(object),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::error_fields as fields;
    use super::*;

    #[test]
    fn contents_and_classes_are_validated_as_the_crds_do() {
        let content = json!({
            "metadata": {"name": "c"},
            "spec": {"driver": "csi.stowage.io", "deletionPolicy": "Delete",
                     "source": {"snapshotHandle": "h"},
                     "volumeSnapshotRef": {"name": "s", "namespace": "default"}},
        });
        assert!(fields(validate_content(&content, None)).is_empty());
        let mut bad = content.clone();
        bad["spec"]["driver"] = json!("");
        bad["spec"]["deletionPolicy"] = json!("Keep");
        bad["spec"]["source"]["volumeHandle"] = json!("v");
        bad["spec"]["volumeSnapshotRef"] = json!({"name": "s"});
        assert_eq!(
            fields(validate_content(&bad, None)),
            [
                "spec.driver",
                "spec.deletionPolicy",
                "spec.source",
                "spec.volumeSnapshotRef.namespace"
            ]
        );
        let mut moved = content.clone();
        moved["spec"]["source"] = json!({"snapshotHandle": "other"});
        assert_eq!(
            fields(validate_content(&moved, Some(&content))),
            ["spec.source"]
        );

        let class = json!({"metadata": {"name": "k"}, "driver": "", "deletionPolicy": "Retain"});
        assert_eq!(fields(validate_class(&class, None)), ["driver"]);
    }
}
