//! The embedded API server spoken to in Kubernetes' protobuf encoding over HTTPS, as
//! client-go's clients (the upstream sidecars) speak it: a client written with k8s-pb's
//! generated types, for create, update, status, delete and Lease writes, and the
//! bodies the server cannot read.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::storage::v1 as storage;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use kube::Api;
use prost::Message;
use serde_json::{Value, json};
use stowage_tests::api::InProcessApi;
use tempfile::TempDir;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// A protobuf client over the kube-rs client's authenticated HTTPS connection.
struct ProtoClient {
    client: kube::Client,
}

/// One answer: status code, content type and body.
struct Answer {
    code: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    /// The object in a protobuf answer, after checking the envelope names `kind`.
    fn object<T: Message + Default>(&self, kind: &str) -> T {
        assert_eq!(self.content_type, PROTOBUF, "{}", self.text());
        let inner = self.body.strip_prefix(b"k8s\0").expect("k8s magic");
        let unknown = Unknown::decode(inner).expect("runtime.Unknown");
        let type_meta = unknown.type_meta.expect("typeMeta");
        assert_eq!(type_meta.kind.as_deref(), Some(kind));
        T::decode(unknown.raw.unwrap_or_default().as_slice()).expect("object")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The envelope a Go client writes around an object.
fn envelope(api_version: &str, kind: &str, object: &impl Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(object.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

impl ProtoClient {
    async fn call(&self, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .header("accept", format!("{PROTOBUF}, application/json"))
            .body(kube::client::Body::from(body))
            .expect("request");
        let response = self.client.send(request).await.expect("send");
        let code = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = response
            .into_body()
            .collect_bytes()
            .await
            .expect("body")
            .to_vec();
        Answer {
            code,
            content_type,
            body,
        }
    }

    async fn send(&self, method: &str, path: &str, body: Vec<u8>) -> Answer {
        self.call(method, path, PROTOBUF, body).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, PROTOBUF, Vec::new()).await
    }
}

async fn started() -> (TempDir, InProcessApi, ProtoClient) {
    let dir = TempDir::new().expect("tempdir");
    let api = InProcessApi::start(dir.path()).await;
    let proto = ProtoClient {
        client: api.client.clone(),
    };
    (dir, api, proto)
}

/// Metadata as a Go client sends it: every non-pointer string written, even empty.
fn go_metadata(name: &str, namespace: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        generate_name: Some(String::new()),
        resource_version: Some(String::new()),
        uid: Some(String::new()),
        ..Default::default()
    })
}

fn quantity(text: &str) -> Quantity {
    Quantity {
        string: Some(text.into()),
    }
}

/// A protobuf envelope (the `k8s\0` magic and an Unknown) saying its content is
/// `encoding`-encoded.
fn encoded_envelope(encoding: &str) -> Vec<u8> {
    let unknown = Unknown {
        content_encoding: Some(encoding.into()),
        ..Default::default()
    };
    [b"k8s\0".as_slice(), &unknown.encode_to_vec()].concat()
}

/// A `storage` amount, as capacities and requests carry it.
fn storage<M: From<[(String, Quantity); 1]>>(size: &str) -> M {
    [("storage".to_string(), quantity(size))].into()
}

/// What csi-provisioner writes: a CSI PV bound to its claim, every string present.
fn provisioned_volume(name: &str) -> core::PersistentVolume {
    core::PersistentVolume {
        metadata: go_metadata(name, ""),
        spec: Some(core::PersistentVolumeSpec {
            capacity: storage("1Gi"),
            access_modes: vec!["ReadWriteOnce".into()],
            persistent_volume_source: Some(core::PersistentVolumeSource {
                csi: Some(core::CSIPersistentVolumeSource {
                    driver: Some("csi.stowage.io".into()),
                    volume_handle: Some(format!("local:{name}:node1")),
                    read_only: Some(false),
                    fs_type: Some(String::new()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            claim_ref: Some(core::ObjectReference {
                namespace: Some("default".into()),
                name: Some("data".into()),
                ..Default::default()
            }),
            // Unset in Go: the server's default applies, as for a JSON client.
            persistent_volume_reclaim_policy: Some(String::new()),
            storage_class_name: Some("fast".into()),
            ..Default::default()
        }),
        status: Some(core::PersistentVolumeStatus {
            phase: Some(String::new()),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn a_volume_created_in_protobuf_is_stored_as_a_json_client_would_store_it() {
    let (_dir, api, proto) = started().await;
    let created = proto
        .send(
            "POST",
            "/api/v1/persistentvolumes",
            envelope("v1", "PersistentVolume", &provisioned_volume("pv1")),
        )
        .await;
    assert_eq!(created.code, 201, "{}", created.text());
    let answered: core::PersistentVolume = created.object("PersistentVolume");
    let metadata = answered.metadata.expect("metadata");
    assert!(!metadata.uid.unwrap_or_default().is_empty());
    assert!(
        metadata
            .creation_timestamp
            .and_then(|t| t.seconds)
            .unwrap_or(0)
            > 0
    );
    assert_eq!(
        answered
            .spec
            .and_then(|s| s.persistent_volume_reclaim_policy)
            .as_deref(),
        Some("Retain")
    );

    // A JSON reader sees the object a JSON writer would have made.
    let pvs: Api<PersistentVolume> = Api::all(api.client.clone());
    let stored = serde_json::to_value(pvs.get("pv1").await.expect("get")).expect("json");
    assert_eq!(stored["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(stored["spec"]["volumeMode"], "Filesystem");
    assert_eq!(
        stored["spec"]["csi"],
        json!({"driver": "csi.stowage.io", "volumeHandle": "local:pv1:node1"})
    );
    assert_eq!(stored["status"]["phase"], "Pending");
    assert_eq!(stored["metadata"].get("generateName"), None);

    // A list in protobuf.
    let listed: core::PersistentVolumeList = proto
        .get("/api/v1/persistentvolumes")
        .await
        .object("PersistentVolumeList");
    assert_eq!(listed.items.len(), 1);
    assert!(
        !listed
            .metadata
            .and_then(|m| m.resource_version)
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
async fn updates_status_writes_and_deletes_in_protobuf() {
    let (_dir, api, proto) = started().await;
    let claim = core::PersistentVolumeClaim {
        metadata: go_metadata("data", "default"),
        spec: Some(core::PersistentVolumeClaimSpec {
            access_modes: vec!["ReadWriteOnce".into()],
            resources: Some(core::VolumeResourceRequirements {
                requests: storage("1Gi"),
                ..Default::default()
            }),
            // A pointer set to "": no class, and no default class either.
            storage_class_name: Some(String::new()),
            ..Default::default()
        }),
        status: None,
    };
    let path = "/api/v1/namespaces/default/persistentvolumeclaims";
    let created = proto
        .send(
            "POST",
            path,
            envelope("v1", "PersistentVolumeClaim", &claim),
        )
        .await;
    assert_eq!(created.code, 201, "{}", created.text());
    let mut claim: core::PersistentVolumeClaim = created.object("PersistentVolumeClaim");
    assert_eq!(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref()),
        Some("")
    );

    // Update: a finalizer and an annotation, as snapshot-controller and csi-provisioner add.
    let metadata = claim.metadata.get_or_insert_with(Default::default);
    metadata.finalizers.push("example.io/guard".into());
    metadata.annotations.insert(
        "volume.kubernetes.io/storage-provisioner".into(),
        "csi.stowage.io".into(),
    );
    let updated = proto
        .send(
            "PUT",
            &format!("{path}/data"),
            envelope("v1", "PersistentVolumeClaim", &claim),
        )
        .await;
    assert_eq!(updated.code, 200, "{}", updated.text());
    let mut claim: core::PersistentVolumeClaim = updated.object("PersistentVolumeClaim");
    assert_eq!(
        claim.metadata.as_ref().map(|m| m.finalizers.clone()),
        Some(vec!["example.io/guard".to_string()])
    );

    // The same body again (a stale resourceVersion now) is a conflict.
    let stale = proto
        .send(
            "PUT",
            &format!("{path}/data"),
            envelope("v1", "PersistentVolumeClaim", &{
                let mut old = claim.clone();
                old.metadata
                    .get_or_insert_with(Default::default)
                    .resource_version = Some("1".into());
                old
            }),
        )
        .await;
    assert_eq!(stale.code, 409, "{}", stale.text());

    // Status through /status.
    claim.status = Some(core::PersistentVolumeClaimStatus {
        phase: Some("Bound".into()),
        capacity: storage("1Gi"),
        ..Default::default()
    });
    let status = proto
        .send(
            "PUT",
            &format!("{path}/data/status"),
            envelope("v1", "PersistentVolumeClaim", &claim),
        )
        .await;
    assert_eq!(status.code, 200, "{}", status.text());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(api.client.clone(), "default");
    let stored = claims.get("data").await.expect("get");
    assert_eq!(
        stored.status.and_then(|s| s.phase).as_deref(),
        Some("Bound")
    );

    // Delete with protobuf DeleteOptions: a wrong uid precondition is refused; with the
    // finalizer the right one marks the object and answers 200 with it.
    let options = |uid: &str| meta::DeleteOptions {
        preconditions: Some(meta::Preconditions {
            uid: Some(uid.into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let refused = proto
        .send(
            "DELETE",
            &format!("{path}/data"),
            envelope("v1", "DeleteOptions", &options("not-the-uid")),
        )
        .await;
    assert_eq!(refused.code, 409, "{}", refused.text());
    let uid = stored.metadata.uid.clone().expect("uid");
    let marked = proto
        .send(
            "DELETE",
            &format!("{path}/data"),
            envelope("meta.k8s.io/v1", "DeleteOptions", &options(&uid)),
        )
        .await;
    assert_eq!(marked.code, 200, "{}", marked.text());
    let marked: core::PersistentVolumeClaim = marked.object("PersistentVolumeClaim");
    assert!(marked.metadata.and_then(|m| m.deletion_timestamp).is_some());
}

#[tokio::test]
async fn leader_election_lease_writes_in_protobuf() {
    let (_dir, _api, proto) = started().await;
    let path = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";
    let lease = coordination::Lease {
        metadata: go_metadata("external-provisioner", "kube-system"),
        spec: Some(coordination::LeaseSpec {
            holder_identity: Some("replica-a".into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(meta::MicroTime {
                seconds: Some(1_700_000_000),
                nanos: Some(5_000),
            }),
            renew_time: Some(meta::MicroTime {
                seconds: Some(1_700_000_000),
                nanos: Some(5_000),
            }),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    let created = proto
        .send(
            "POST",
            path,
            envelope("coordination.k8s.io/v1", "Lease", &lease),
        )
        .await;
    assert_eq!(created.code, 201, "{}", created.text());
    let mut lease: coordination::Lease = created.object("Lease");
    let spec = lease.spec.get_or_insert_with(Default::default);
    assert_eq!(spec.renew_time.and_then(|t| t.nanos), Some(5_000));
    assert_eq!(spec.lease_transitions, Some(0));

    // Renewal: an update carrying the resourceVersion it read.
    spec.renew_time = Some(meta::MicroTime {
        seconds: Some(1_700_000_010),
        nanos: Some(0),
    });
    let renewed = proto
        .send(
            "PUT",
            &format!("{path}/external-provisioner"),
            envelope("coordination.k8s.io/v1", "Lease", &lease),
        )
        .await;
    assert_eq!(renewed.code, 200, "{}", renewed.text());
    let renewed: coordination::Lease = renewed.object("Lease");
    assert_eq!(
        renewed
            .spec
            .and_then(|s| s.renew_time)
            .and_then(|t| t.seconds),
        Some(1_700_000_010)
    );
    // A second candidate writing from the first read loses.
    let lost = proto
        .send(
            "PUT",
            &format!("{path}/external-provisioner"),
            envelope("coordination.k8s.io/v1", "Lease", &lease),
        )
        .await;
    assert_eq!(lost.code, 409, "{}", lost.text());
}

#[tokio::test]
async fn events_and_storage_kinds_in_protobuf() {
    let (_dir, _api, proto) = started().await;
    let event = core::Event {
        metadata: go_metadata("data.1", "default"),
        involved_object: Some(core::ObjectReference {
            kind: Some("PersistentVolumeClaim".into()),
            namespace: Some("default".into()),
            name: Some("data".into()),
            ..Default::default()
        }),
        reason: Some("Provisioning".into()),
        message: Some("External provisioner is provisioning volume".into()),
        r#type: Some("Normal".into()),
        count: Some(1),
        source: Some(core::EventSource {
            component: Some("csi.stowage.io".into()),
            host: Some(String::new()),
        }),
        ..Default::default()
    };
    let created = proto
        .send(
            "POST",
            "/api/v1/namespaces/default/events",
            envelope("v1", "Event", &event),
        )
        .await;
    assert_eq!(created.code, 201, "{}", created.text());
    let created: core::Event = created.object("Event");
    assert_eq!(created.reason.as_deref(), Some("Provisioning"));

    let driver = storage::CSIDriver {
        metadata: go_metadata("csi.stowage.io", ""),
        spec: Some(storage::CSIDriverSpec {
            attach_required: Some(false),
            ..Default::default()
        }),
    };
    let created = proto
        .send(
            "POST",
            "/apis/storage.k8s.io/v1/csidrivers",
            envelope("storage.k8s.io/v1", "CSIDriver", &driver),
        )
        .await;
    assert_eq!(created.code, 201, "{}", created.text());
    let created: storage::CSIDriver = created.object("CSIDriver");
    // false was set, not left out: the default (true) does not replace it.
    assert_eq!(created.spec.and_then(|s| s.attach_required), Some(false));
}

#[tokio::test]
async fn bodies_the_server_cannot_read_are_415_with_a_status() {
    let (_dir, _api, proto) = started().await;
    let cases = [
        (
            "CBOR",
            "/api/v1/persistentvolumes",
            "application/cbor",
            vec![0xa0],
        ),
        (
            "protobuf of a custom kind",
            "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots",
            PROTOBUF,
            envelope(
                "snapshot.storage.k8s.io/v1",
                "VolumeSnapshot",
                &core::Namespace::default(),
            ),
        ),
        (
            "a compressed protobuf body",
            "/api/v1/persistentvolumes",
            PROTOBUF,
            encoded_envelope("gzip"),
        ),
    ];
    for (what, path, content_type, body) in cases {
        let answer = proto.call("POST", path, content_type, body).await;
        assert_eq!(answer.code, 415, "{what}: {}", answer.text());
        let status = answer.json();
        assert_eq!(status["kind"], "Status", "{what}");
        assert_eq!(status["reason"], "UnsupportedMediaType", "{what}");
        assert_eq!(status["code"], 415, "{what}");
    }
    // A protobuf body that is not a k8s envelope is a bad request, as upstream.
    let garbage = proto
        .send(
            "POST",
            "/api/v1/persistentvolumes",
            b"not protobuf".to_vec(),
        )
        .await;
    assert_eq!(garbage.code, 400, "{}", garbage.text());
}

#[tokio::test]
async fn capacity_tracking_and_attach_status_in_protobuf() {
    let (_dir, _api, proto) = started().await;
    // What csi-provisioner's capacity tracking writes.
    let capacity = storage::CSIStorageCapacity {
        metadata: Some(meta::ObjectMeta {
            generate_name: Some("csisc-".into()),
            namespace: Some("default".into()),
            ..Default::default()
        }),
        node_topology: Some(meta::LabelSelector {
            match_labels: [("topology.stowage.io/node".to_string(), "node1".to_string())].into(),
            match_expressions: vec![],
        }),
        storage_class_name: Some("fast".into()),
        capacity: Some(quantity("100Gi")),
        maximum_volume_size: None,
    };
    let created = proto
        .send(
            "POST",
            "/apis/storage.k8s.io/v1/namespaces/default/csistoragecapacities",
            envelope("storage.k8s.io/v1", "CSIStorageCapacity", &capacity),
        )
        .await;
    assert_eq!(created.code, 201, "{}", created.text());
    let created: storage::CSIStorageCapacity = created.object("CSIStorageCapacity");
    let name = created.metadata.and_then(|m| m.name).unwrap_or_default();
    assert!(name.starts_with("csisc-"), "{name}");
    assert_eq!(
        created.capacity.and_then(|q| q.string).as_deref(),
        Some("100Gi")
    );

    // What csi-attacher writes: the status of a VolumeAttachment, through /status.
    let attachment = storage::VolumeAttachment {
        metadata: go_metadata("csi-1", ""),
        spec: Some(storage::VolumeAttachmentSpec {
            attacher: Some("csi.stowage.io".into()),
            source: Some(storage::VolumeAttachmentSource {
                persistent_volume_name: Some("pv1".into()),
                inline_volume_spec: None,
            }),
            node_name: Some("node1".into()),
        }),
        status: Some(storage::VolumeAttachmentStatus {
            attached: Some(false),
            ..Default::default()
        }),
    };
    let path = "/apis/storage.k8s.io/v1/volumeattachments";
    let created = proto
        .send(
            "POST",
            path,
            envelope("storage.k8s.io/v1", "VolumeAttachment", &attachment),
        )
        .await;
    assert_eq!(created.code, 201, "{}", created.text());
    let mut attachment: storage::VolumeAttachment = created.object("VolumeAttachment");
    attachment.status = Some(storage::VolumeAttachmentStatus {
        attached: Some(true),
        attachment_metadata: [("lun".to_string(), "0".to_string())].into(),
        ..Default::default()
    });
    let updated = proto
        .send(
            "PUT",
            &format!("{path}/csi-1/status"),
            envelope("storage.k8s.io/v1", "VolumeAttachment", &attachment),
        )
        .await;
    assert_eq!(updated.code, 200, "{}", updated.text());
    let updated: storage::VolumeAttachment = updated.object("VolumeAttachment");
    let status = updated.status.unwrap_or_default();
    assert_eq!(status.attached, Some(true));
    assert_eq!(
        status.attachment_metadata.get("lun").map(String::as_str),
        Some("0")
    );

    // A custom kind asked for in protobuf first is answered in JSON, as upstream does.
    let snapshots = proto
        .get("/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots")
        .await;
    assert_eq!(snapshots.code, 200);
    assert!(
        snapshots.content_type.starts_with("application/json"),
        "{}",
        snapshots.content_type
    );
    assert_eq!(snapshots.json()["kind"], "VolumeSnapshotList");
}

/// The frames of a protobuf watch stream: (event type, the object's envelope kind, bytes).
fn watch_frames(body: &[u8]) -> Vec<(String, String, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut rest = body;
    while rest.len() >= 4 {
        let (length, tail) = rest.split_at(4);
        let length = u32::from_be_bytes(length.try_into().expect("4 bytes")) as usize;
        let (frame, tail) = tail.split_at(length);
        rest = tail;
        let event = meta::WatchEvent::decode(frame).expect("WatchEvent");
        let raw = event.object.and_then(|o| o.raw).unwrap_or_default();
        let inner = raw.strip_prefix(b"k8s\0").expect("an enveloped object");
        let unknown = Unknown::decode(inner).expect("runtime.Unknown");
        let kind = unknown.type_meta.and_then(|t| t.kind).unwrap_or_default();
        frames.push((
            event.r#type.unwrap_or_default(),
            kind,
            unknown.raw.unwrap_or_default(),
        ));
    }
    assert!(rest.is_empty(), "a partial frame is left: {rest:?}");
    frames
}

#[tokio::test]
async fn watches_asked_for_in_protobuf_are_length_delimited_watch_events() {
    let (_dir, _api, proto) = started().await;
    for name in ["pv1", "pv2"] {
        let created = proto
            .send(
                "POST",
                "/api/v1/persistentvolumes",
                envelope("v1", "PersistentVolume", &provisioned_volume(name)),
            )
            .await;
        assert_eq!(created.code, 201, "{}", created.text());
    }
    let watched = proto
        .get("/api/v1/persistentvolumes?watch=true&resourceVersion=0&allowWatchBookmarks=true&sendInitialEvents=true&timeoutSeconds=1")
        .await;
    assert_eq!(watched.code, 200);
    assert_eq!(
        watched.content_type,
        "application/vnd.kubernetes.protobuf;stream=watch"
    );
    let frames = watch_frames(&watched.body);
    let names: Vec<(String, String, Option<String>)> = frames
        .iter()
        .map(|(event, kind, raw)| {
            let volume = core::PersistentVolume::decode(raw.as_slice()).expect("PV");
            (
                event.clone(),
                kind.clone(),
                volume.metadata.and_then(|m| m.name),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            (
                "ADDED".into(),
                "PersistentVolume".into(),
                Some("pv1".into())
            ),
            (
                "ADDED".into(),
                "PersistentVolume".into(),
                Some("pv2".into())
            ),
            ("BOOKMARK".into(), "PersistentVolume".into(), None),
        ]
    );
}
