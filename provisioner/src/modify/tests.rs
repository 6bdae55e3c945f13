//! Table-driven checks of the modifier's decisions, one external-resizer rule per case.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::VolumeAttributesClass;
use serde_json::{Value, json};

use super::{ModifyStep, failure_status, modify_step};

fn claim(extra: Value) -> PersistentVolumeClaim {
    let mut object = json!({
        "metadata": {"name": "data", "namespace": "ns"},
        "spec": {"volumeName": "pv-1", "volumeAttributesClassName": "fast"},
        "status": {"phase": "Bound"},
    });
    json_patch::merge(&mut object, &extra);
    serde_json::from_value(object).unwrap_or_else(|e| panic!("claim: {e}"))
}

fn volume(driver: &str) -> PersistentVolume {
    serde_json::from_value(json!({
        "metadata": {"name": "pv-1"},
        "spec": {"csi": {"driver": driver, "volumeHandle": "local:k:machine"}},
    }))
    .unwrap_or_else(|e| panic!("volume: {e}"))
}

fn class(driver: &str) -> VolumeAttributesClass {
    serde_json::from_value(json!({
        "metadata": {"name": "fast"},
        "driverName": driver,
        "parameters": {"onDelete": "retain"},
    }))
    .unwrap_or_else(|e| panic!("class: {e}"))
}

#[test]
fn a_claim_is_modified_as_external_resizer_does() {
    let ours = class("csi.stowage.io");
    let theirs = class("other.csi.io");
    let modify = ModifyStep::Modify {
        target: "fast".into(),
        parameters: BTreeMap::from([("onDelete".into(), "retain".into())]),
    };
    let cases: [(
        &str,
        PersistentVolumeClaim,
        PersistentVolume,
        Option<&VolumeAttributesClass>,
        ModifyStep,
    ); 11] = [
        (
            "a new class asked for",
            claim(json!({})),
            volume("csi.stowage.io"),
            Some(&ours),
            modify.clone(),
        ),
        (
            "a class changed",
            claim(json!({"status": {"currentVolumeAttributesClassName": "slow"}})),
            volume("csi.stowage.io"),
            Some(&ours),
            modify.clone(),
        ),
        (
            "retried while in progress",
            claim(json!({"status": {"modifyVolumeStatus": {
                "status": "InProgress", "targetVolumeAttributesClassName": "fast"}}})),
            volume("csi.stowage.io"),
            Some(&ours),
            modify,
        ),
        (
            "already the current class",
            claim(json!({"status": {"currentVolumeAttributesClassName": "fast"}})),
            volume("csi.stowage.io"),
            Some(&ours),
            ModifyStep::Nothing,
        ),
        (
            "not bound yet: the provisioner's business",
            claim(json!({"status": {"phase": "Pending"}})),
            volume("csi.stowage.io"),
            Some(&ours),
            ModifyStep::Nothing,
        ),
        (
            "no class asked for",
            claim(json!({"spec": {"volumeAttributesClassName": null}})),
            volume("csi.stowage.io"),
            Some(&ours),
            ModifyStep::Nothing,
        ),
        (
            "another driver's volume",
            claim(json!({})),
            volume("other.csi.io"),
            Some(&ours),
            ModifyStep::Nothing,
        ),
        (
            "another driver's class",
            claim(json!({})),
            volume("csi.stowage.io"),
            Some(&theirs),
            ModifyStep::Nothing,
        ),
        (
            "a class that does not exist is pending",
            claim(json!({})),
            volume("csi.stowage.io"),
            None,
            ModifyStep::Pending("fast".into()),
        ),
        (
            "pending already said: no write",
            claim(json!({"status": {"modifyVolumeStatus": {
                "status": "Pending", "targetVolumeAttributesClassName": "fast"}}})),
            volume("csi.stowage.io"),
            None,
            ModifyStep::Nothing,
        ),
        (
            "pending for another class: said again",
            claim(json!({"status": {"modifyVolumeStatus": {
                "status": "Pending", "targetVolumeAttributesClassName": "slow"}}})),
            volume("csi.stowage.io"),
            None,
            ModifyStep::Pending("fast".into()),
        ),
    ];
    for (what, pvc, pv, class, expected) in cases {
        assert_eq!(modify_step(&pvc, &pv, class), expected, "{what}");
    }
}

#[test]
fn errors_the_driver_would_repeat_are_infeasible() {
    for (code, status) in [
        (tonic::Code::InvalidArgument, "Infeasible"),
        (tonic::Code::NotFound, "Infeasible"),
        (tonic::Code::Unavailable, "InProgress"),
        (tonic::Code::Aborted, "InProgress"),
    ] {
        assert_eq!(failure_status(code), status, "{code:?}");
    }
}
