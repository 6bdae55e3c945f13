//! The codec against k8s-pb's prost types: what a Go client's bytes decode to, and
//! that what the server encodes decodes in a typed client as the same object.

use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::storage::v1 as storage;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message;
use serde_json::{Value, json};

use super::*;
use crate::registry;

/// What a Go client sends: every non-pointer string written, even when empty.
fn go_metadata(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: Some(name.into()),
        generate_name: Some(String::new()),
        namespace: Some(String::new()),
        self_link: Some(String::new()),
        uid: Some(String::new()),
        resource_version: Some(String::new()),
        generation: Some(0),
        // The zero time: an empty message on the wire.
        creation_timestamp: Some(meta::Time::default()),
        labels: [("app".to_string(), "web".to_string())].into(),
        ..Default::default()
    })
}

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

fn resource(plural: &str) -> &'static Resource {
    registry::all()
        .iter()
        .find(|r| r.plural == plural)
        .unwrap_or_else(|| panic!("no resource {plural}"))
}

fn quantity(text: &str) -> Quantity {
    Quantity {
        string: Some(text.into()),
    }
}

#[test]
fn go_client_bodies_decode_to_the_json_a_json_client_sends() {
    let claim = core::PersistentVolumeClaim {
        metadata: go_metadata("data"),
        spec: Some(core::PersistentVolumeClaimSpec {
            access_modes: vec!["ReadWriteOnce".into()],
            resources: Some(core::VolumeResourceRequirements {
                requests: [("storage".to_string(), quantity("1Gi"))].into(),
                ..Default::default()
            }),
            // Non-pointer: empty means unset. Pointer: empty means "no class".
            volume_name: Some(String::new()),
            storage_class_name: Some(String::new()),
            ..Default::default()
        }),
        status: Some(core::PersistentVolumeClaimStatus {
            phase: Some(String::new()),
            ..Default::default()
        }),
    };
    let driver = storage::CSIDriver {
        metadata: go_metadata("csi.example.io"),
        spec: Some(storage::CSIDriverSpec {
            attach_required: Some(false),
            ..Default::default()
        }),
    };
    let lease = coordination::Lease {
        metadata: go_metadata("leader"),
        spec: Some(coordination::LeaseSpec {
            holder_identity: Some("me".into()),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(0),
            renew_time: Some(meta::MicroTime {
                seconds: Some(1_700_000_000),
                nanos: Some(123_456_000),
            }),
            ..Default::default()
        }),
    };
    let secret = core::Secret {
        metadata: go_metadata("token"),
        data: [("key".to_string(), b"\x00secret".to_vec())].into(),
        r#type: Some("Opaque".into()),
        ..Default::default()
    };
    let volume = core::PersistentVolume {
        metadata: go_metadata("pv1"),
        spec: Some(core::PersistentVolumeSpec {
            capacity: [("storage".to_string(), quantity("5Gi"))].into(),
            persistent_volume_source: Some(core::PersistentVolumeSource {
                csi: Some(core::CSIPersistentVolumeSource {
                    driver: Some("csi.example.io".into()),
                    volume_handle: Some("vol-1".into()),
                    read_only: Some(false),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            persistent_volume_reclaim_policy: Some(String::new()),
            ..Default::default()
        }),
        status: None,
    };
    let pod = core::Pod {
        metadata: go_metadata("web"),
        spec: Some(core::PodSpec {
            volumes: vec![
                core::Volume {
                    name: Some("scratch".into()),
                    volume_source: Some(core::VolumeSource {
                        empty_dir: Some(core::EmptyDirVolumeSource::default()),
                        ..Default::default()
                    }),
                },
                core::Volume {
                    name: Some("settings".into()),
                    volume_source: Some(core::VolumeSource {
                        config_map: Some(core::ConfigMapVolumeSource {
                            // Embedded inline in Go: its name is the configMap's own.
                            local_object_reference: Some(core::LocalObjectReference {
                                name: Some("app-config".into()),
                            }),
                            default_mode: Some(0o644),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                },
            ],
            containers: vec![core::Container {
                name: Some("app".into()),
                image: Some("nginx".into()),
                liveness_probe: Some(core::Probe {
                    handler: Some(core::ProbeHandler {
                        http_get: Some(core::HttpGetAction {
                            port: Some(k8s_pb::apimachinery::pkg::util::intstr::IntOrString {
                                r#type: Some(1),
                                int_val: Some(0),
                                str_val: Some("http".into()),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    let metadata = |name: &str| json!({"name": name, "labels": {"app": "web"}});
    let cases: Vec<(&str, &str, &str, Vec<u8>, Value)> = vec![
        (
            "persistentvolumeclaims",
            "v1",
            "PersistentVolumeClaim",
            claim.encode_to_vec(),
            json!({"metadata": metadata("data"), "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
                "storageClassName": "",
            }}),
        ),
        (
            "csidrivers",
            "storage.k8s.io/v1",
            "CSIDriver",
            driver.encode_to_vec(),
            json!({"metadata": metadata("csi.example.io"), "spec": {"attachRequired": false}}),
        ),
        (
            "leases",
            "coordination.k8s.io/v1",
            "Lease",
            lease.encode_to_vec(),
            json!({"metadata": metadata("leader"), "spec": {
                "holderIdentity": "me",
                "leaseDurationSeconds": 15,
                "leaseTransitions": 0,
                "renewTime": "2023-11-14T22:13:20.123456Z",
            }}),
        ),
        (
            "secrets",
            "v1",
            "Secret",
            secret.encode_to_vec(),
            json!({"metadata": metadata("token"), "data": {"key": "AHNlY3JldA=="}, "type": "Opaque"}),
        ),
        (
            "persistentvolumes",
            "v1",
            "PersistentVolume",
            volume.encode_to_vec(),
            json!({"metadata": metadata("pv1"), "spec": {
                "capacity": {"storage": "5Gi"},
                "csi": {"driver": "csi.example.io", "volumeHandle": "vol-1"},
            }}),
        ),
        (
            "pods",
            "v1",
            "Pod",
            pod.encode_to_vec(),
            json!({"metadata": metadata("web"), "spec": {
                "volumes": [
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "settings", "configMap": {"name": "app-config", "defaultMode": 420}},
                ],
                "containers": [{"name": "app", "image": "nginx",
                    "livenessProbe": {"httpGet": {"port": "http"}}}],
            }}),
        ),
    ];
    for (plural, api_version, kind, raw, mut expected) in cases {
        let body = envelope(api_version, kind, raw);
        let decoded = decode_object(resource(plural), &body);
        expected["apiVersion"] = json!(api_version);
        expected["kind"] = json!(kind);
        assert_eq!(decoded.ok(), Some(expected), "{plural}");
    }
}

#[test]
fn stored_objects_encode_to_what_prost_decodes() {
    let stored = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "data", "namespace": "default", "uid": "u-1", "resourceVersion": "7",
            "creationTimestamp": "2024-05-01T10:20:30Z",
            "finalizers": ["kubernetes.io/pvc-protection"],
            "annotations": {"a": "b"},
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": "",
            "volumeMode": "Filesystem",
        },
        "status": {"phase": "Pending"},
    });
    let body = encode(&stored).and_then(Result::ok).unwrap_or_default();
    assert_eq!(&body[..4], MAGIC);
    let unknown = Unknown::decode(&body[4..]).unwrap_or_default();
    assert_eq!(
        unknown
            .type_meta
            .clone()
            .unwrap_or_default()
            .kind
            .as_deref(),
        Some("PersistentVolumeClaim")
    );
    let claim = core::PersistentVolumeClaim::decode(unknown.raw.as_deref().unwrap_or_default())
        .unwrap_or_default();
    let metadata = claim.metadata.clone().unwrap_or_default();
    assert_eq!(metadata.uid.as_deref(), Some("u-1"));
    assert_eq!(
        metadata.creation_timestamp.and_then(|t| t.seconds),
        Some(1_714_558_830)
    );
    let spec = claim.spec.clone().unwrap_or_default();
    assert_eq!(spec.storage_class_name.as_deref(), Some(""));
    assert_eq!(spec.volume_name, None);
    assert_eq!(
        spec.resources
            .unwrap_or_default()
            .requests
            .get("storage")
            .and_then(|q| q.string.as_deref()),
        Some("1Gi")
    );
    // And back: the typed client's bytes decode to the stored object.
    let again = envelope("v1", "PersistentVolumeClaim", claim.encode_to_vec());
    let decoded = decode_object(resource("persistentvolumeclaims"), &again).ok();
    assert_eq!(decoded, Some(stored));
}

#[test]
fn lists_encode_with_their_items() {
    let list = json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClassList",
        "metadata": {"resourceVersion": "12"},
        "items": [{"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                   "metadata": {"name": "fast"}, "provisioner": "csi.example.io",
                   "allowVolumeExpansion": false}],
    });
    let body = encode(&list).and_then(Result::ok).unwrap_or_default();
    let unknown = Unknown::decode(body.get(4..).unwrap_or_default()).unwrap_or_default();
    let decoded = storage::StorageClassList::decode(unknown.raw.as_deref().unwrap_or_default())
        .unwrap_or_default();
    assert_eq!(
        decoded.metadata.and_then(|m| m.resource_version).as_deref(),
        Some("12")
    );
    assert_eq!(decoded.items.len(), 1);
    assert_eq!(decoded.items[0].allow_volume_expansion, Some(false));
}

#[test]
fn unreadable_bodies_are_refused_with_the_reason() {
    let claim = core::PersistentVolumeClaim::default().encode_to_vec();
    let claims = resource("persistentvolumeclaims");
    let snapshots = resource("volumesnapshots");
    let code = |result: Result<Value, ApiError>| result.err().map(|e| e.code().as_u16());
    let cases: Vec<(&str, Option<u16>)> = vec![
        ("no magic", code(decode_object(claims, &claim))),
        (
            "truncated",
            code(decode_object(
                claims,
                &[b"k8s\0".as_slice(), &[0x0a, 0x10]].concat(),
            )),
        ),
        (
            "custom kinds have no protobuf form",
            code(decode_object(
                snapshots,
                &envelope("snapshot.storage.k8s.io/v1", "VolumeSnapshot", vec![]),
            )),
        ),
        (
            "nor have the group snapshot ones",
            code(decode_object(
                resource("volumegroupsnapshots"),
                &envelope(
                    "groupsnapshot.storage.k8s.io/v1",
                    "VolumeGroupSnapshot",
                    vec![],
                ),
            )),
        ),
        (
            "a content encoding",
            code(decode_object(claims, &{
                let mut body = MAGIC.to_vec();
                body.extend(
                    Unknown {
                        content_encoding: Some("gzip".into()),
                        ..Default::default()
                    }
                    .encode_to_vec(),
                );
                body
            })),
        ),
    ];
    assert_eq!(
        cases,
        vec![
            ("no magic", Some(400)),
            ("truncated", Some(400)),
            ("custom kinds have no protobuf form", Some(415)),
            ("nor have the group snapshot ones", Some(415)),
            ("a content encoding", Some(415)),
        ]
    );
}

#[test]
fn content_types_and_accept_headers() {
    let formats: Vec<Option<BodyFormat>> = [
        None,
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some(MEDIA_TYPE),
        Some("application/yaml"),
        Some("application/cbor"),
    ]
    .into_iter()
    .map(|c| BodyFormat::from_content_type(c).ok())
    .collect();
    assert_eq!(
        formats,
        vec![
            Some(BodyFormat::Json),
            Some(BodyFormat::Json),
            Some(BodyFormat::Json),
            Some(BodyFormat::Protobuf),
            None,
            None
        ]
    );
    for (accept, protobuf) in [
        (
            "application/vnd.kubernetes.protobuf, application/json",
            true,
        ),
        (
            "application/json, application/vnd.kubernetes.protobuf",
            false,
        ),
        (
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
            false,
        ),
        (
            "application/yaml, application/vnd.kubernetes.protobuf",
            true,
        ),
        ("*/*", false),
        ("", false),
    ] {
        assert_eq!(wants_protobuf(accept), protobuf, "{accept}");
    }
}

/// Every truncation and every single-byte change of a real body decodes or is refused,
/// never panics; and whatever decodes encodes back to bytes that decode to the same.
#[test]
fn damaged_bodies_never_panic_and_decoding_is_stable() {
    let volume = core::PersistentVolume {
        metadata: go_metadata("pv1"),
        spec: Some(core::PersistentVolumeSpec {
            capacity: [("storage".to_string(), quantity("5Gi"))].into(),
            access_modes: vec!["ReadWriteOnce".into()],
            persistent_volume_source: Some(core::PersistentVolumeSource {
                csi: Some(core::CSIPersistentVolumeSource {
                    driver: Some("csi.example.io".into()),
                    volume_handle: Some("vol-1".into()),
                    volume_attributes: [("a".to_string(), "b".to_string())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            storage_class_name: Some("fast".into()),
            ..Default::default()
        }),
        status: Some(core::PersistentVolumeStatus {
            phase: Some("Bound".into()),
            last_phase_transition_time: Some(meta::Time {
                seconds: Some(1_700_000_000),
                nanos: Some(0),
            }),
            ..Default::default()
        }),
    };
    let index = definition("", "v1", "PersistentVolume").unwrap_or(usize::MAX);
    let bytes = volume.encode_to_vec();
    let mut variants: Vec<Vec<u8>> = (0..bytes.len()).map(|n| bytes[..n].to_vec()).collect();
    for at in 0..bytes.len() {
        for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
            let mut changed = bytes.clone();
            changed[at] = value;
            variants.push(changed);
        }
    }
    let mut decoded_count = 0;
    for variant in &variants {
        let Ok(first) = codec::decode(index, variant) else {
            continue;
        };
        decoded_count += 1;
        let again = codec::encode(index, &first)
            .and_then(|bytes| codec::decode(index, &bytes))
            .ok();
        assert_eq!(again.as_ref(), Some(&first), "{variant:?}");
    }
    assert!(
        decoded_count > bytes.len(),
        "{decoded_count} of {}",
        variants.len()
    );
}

#[test]
fn an_envelope_without_type_meta_takes_the_endpoints_kind() {
    let claim = core::PersistentVolumeClaim {
        metadata: go_metadata("data"),
        ..Default::default()
    };
    let mut body = MAGIC.to_vec();
    body.extend(
        Unknown {
            raw: Some(claim.encode_to_vec()),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let decoded = decode_object(resource("persistentvolumeclaims"), &body).ok();
    assert_eq!(
        decoded,
        Some(json!({"metadata": {"name": "data", "labels": {"app": "web"}}}))
    );
    let mut options = MAGIC.to_vec();
    options.extend(
        Unknown {
            raw: Some(
                meta::DeleteOptions {
                    propagation_policy: Some("Background".into()),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    assert_eq!(
        decode_delete_options(&options).ok(),
        Some(json!({"propagationPolicy": "Background"}))
    );
}

#[test]
fn a_watch_error_frame_carries_a_status() {
    let status = ApiError::Expired("too old resource version: 5 (9)".into()).status();
    let frame = encode_watch_event("ERROR", &status).unwrap_or_default();
    let length = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(length + 4, frame.len());
    let event = meta::WatchEvent::decode(&frame[4..]).unwrap_or_default();
    assert_eq!(event.r#type.as_deref(), Some("ERROR"));
    let raw = event.object.and_then(|o| o.raw).unwrap_or_default();
    let unknown = Unknown::decode(raw.get(4..).unwrap_or_default()).unwrap_or_default();
    assert_eq!(
        unknown.type_meta.and_then(|t| t.kind).as_deref(),
        Some("Status")
    );
    let decoded =
        meta::Status::decode(unknown.raw.unwrap_or_default().as_slice()).unwrap_or_default();
    assert_eq!(decoded.code, Some(410));
    assert_eq!(decoded.reason.as_deref(), Some("Expired"));
    assert_eq!(
        decoded.message.as_deref(),
        Some("too old resource version: 5 (9)")
    );
}
