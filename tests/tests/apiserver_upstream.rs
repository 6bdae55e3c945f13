//! What the upstream sidecars and kubectl need beyond the basics: the storage.k8s.io
//! kinds of CSI (CSINode, VolumeAttachment, CSIStorageCapacity, VolumeAttributesClass),
//! JSON patches as kube-apiserver applies them, DELETE answers, timestamps, and Tables
//! that carry whole objects.

use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::api::storage::v1::{
    CSINode, CSIStorageCapacity, VolumeAttachment, VolumeAttributesClass,
};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use stowage_tests::api::InProcessApi;
use tempfile::TempDir;
use tokio::process::Command;

async fn started() -> (TempDir, InProcessApi) {
    let dir = TempDir::new().expect("tempdir");
    let api = InProcessApi::start(dir.path()).await;
    (dir, api)
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("typed object")
}

/// (status code, body as JSON) of one request through the kube-rs client.
async fn raw(
    api: &InProcessApi,
    method: &str,
    path: &str,
    content_type: &str,
    body: Value,
) -> (u16, Value) {
    let body = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&body).expect("body")
    };
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(kube::client::Body::from(body))
        .expect("request");
    let response = api.client.send(request).await.expect("send");
    let code = response.status().as_u16();
    let bytes = response.into_body().collect_bytes().await.expect("body");
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn attachment(name: &str, pv: &str) -> VolumeAttachment {
    typed(json!({
        "metadata": {"name": name},
        "spec": {"attacher": "csi.stowage.io", "nodeName": "node1",
                 "source": {"persistentVolumeName": pv}}
    }))
}

#[tokio::test]
async fn discovery_lists_the_csi_kinds() {
    let (_dir, api) = started().await;
    let (code, list) = raw(
        &api,
        "GET",
        "/apis/storage.k8s.io/v1",
        "application/json",
        Value::Null,
    )
    .await;
    assert_eq!(code, 200);
    let resources: Vec<(String, bool)> = list["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["namespaced"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    for expected in [
        ("csinodes", false),
        ("volumeattachments", false),
        ("volumeattachments/status", false),
        ("csistoragecapacities", true),
        ("volumeattributesclasses", false),
    ] {
        assert!(
            resources.contains(&(expected.0.to_string(), expected.1)),
            "{expected:?} in {resources:?}"
        );
    }
}

#[tokio::test]
async fn csi_kinds_are_served_with_upstream_validation() {
    let (_dir, api) = started().await;
    let client = api.client.clone();

    // CSINode: what kubelet registers, and a driver's nodeID may not change.
    let nodes: Api<CSINode> = Api::all(client.clone());
    let node: CSINode = typed(json!({
        "metadata": {"name": "node1"},
        "spec": {"drivers": [{"name": "csi.stowage.io", "nodeID": "node1",
                              "topologyKeys": ["topology.stowage.io/node"]}]}
    }));
    let created = nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("csinode");
    let mut changed = created.clone();
    changed.spec.drivers[0].node_id = "node2".into();
    let refused = nodes
        .replace("node1", &PostParams::default(), &changed)
        .await;
    assert!(
        matches!(refused, Err(kube::Error::Api(ref s)) if s.code == 422),
        "{refused:?}"
    );

    // VolumeAttachment: the attacher writes status through /status; the spec is fixed.
    let attachments: Api<VolumeAttachment> = Api::all(client.clone());
    attachments
        .create(&PostParams::default(), &attachment("csi-1", "pv1"))
        .await
        .expect("attachment");
    let status = json!({"status": {"attached": true, "attachmentMetadata": {"lun": "0"}}});
    let attached = attachments
        .patch_status("csi-1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
    assert_eq!(attached.status.map(|s| s.attached), Some(true));
    let moved = attachments
        .patch(
            "csi-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"nodeName": "node2"}})),
        )
        .await;
    assert!(
        matches!(moved, Err(kube::Error::Api(ref s)) if s.code == 422),
        "{moved:?}"
    );
    let (code, status) = raw(
        &api,
        "POST",
        "/apis/storage.k8s.io/v1/volumeattachments",
        "application/json",
        json!({"metadata": {"name": "csi-2"},
               "spec": {"attacher": "csi.stowage.io", "nodeName": "node1", "source": {}}}),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["details"]["causes"][0]["field"], "spec.source");

    // CSIStorageCapacity: namespaced; capacity may change, the class may not.
    let capacities: Api<CSIStorageCapacity> = Api::namespaced(client.clone(), "default");
    let capacity: CSIStorageCapacity = typed(json!({
        "metadata": {"name": "cap-1"},
        "storageClassName": "fast",
        "capacity": "10Gi",
        "nodeTopology": {"matchLabels": {"topology.stowage.io/node": "node1"}}
    }));
    capacities
        .create(&PostParams::default(), &capacity)
        .await
        .expect("capacity");
    capacities
        .patch(
            "cap-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"capacity": "5Gi"})),
        )
        .await
        .expect("capacity update");
    let reclassed = capacities
        .patch(
            "cap-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"storageClassName": "slow"})),
        )
        .await;
    assert!(
        matches!(reclassed, Err(kube::Error::Api(ref s)) if s.code == 422),
        "{reclassed:?}"
    );

    // VolumeAttributesClass: parameters required and immutable.
    let classes: Api<VolumeAttributesClass> = Api::all(client.clone());
    let class: VolumeAttributesClass = typed(json!({
        "metadata": {"name": "retain"}, "driverName": "csi.stowage.io",
        "parameters": {"onDelete": "retain"}
    }));
    classes
        .create(&PostParams::default(), &class)
        .await
        .expect("class");
    let edited = classes
        .patch(
            "retain",
            &PatchParams::default(),
            &Patch::Merge(json!({"parameters": {"onDelete": "delete"}})),
        )
        .await;
    assert!(
        matches!(edited, Err(kube::Error::Api(ref s)) if s.code == 422),
        "{edited:?}"
    );
    let empty: VolumeAttributesClass = typed(json!({
        "metadata": {"name": "empty"}, "driverName": "csi.stowage.io"
    }));
    let refused = classes.create(&PostParams::default(), &empty).await;
    assert!(
        matches!(refused, Err(kube::Error::Api(ref s)) if s.code == 422),
        "{refused:?}"
    );
}

#[tokio::test]
async fn json_patch_replace_of_a_missing_member_applies_as_in_kube_apiserver() {
    let (_dir, api) = started().await;
    let attachments: Api<VolumeAttachment> = Api::all(api.client.clone());
    attachments
        .create(&PostParams::default(), &attachment("csi-1", "pv1"))
        .await
        .expect("attachment");
    let json_patch = "application/json-patch+json";
    let cases = [
        (
            "replace of annotations the object does not have",
            "/apis/storage.k8s.io/v1/volumeattachments/csi-1",
            json!([{"op": "replace", "path": "/metadata/annotations", "value": {"a": "b"}}]),
            200,
        ),
        (
            "replace of a status the object does not have",
            "/apis/storage.k8s.io/v1/volumeattachments/csi-1/status",
            json!([{"op": "replace", "path": "/status", "value": {"attached": true}}]),
            200,
        ),
        (
            "a missing member tests as null",
            "/apis/storage.k8s.io/v1/volumeattachments/csi-1",
            json!([{"op": "test", "path": "/metadata/labels", "value": null},
                   {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}]),
            200,
        ),
        (
            "replace under a missing parent",
            "/apis/storage.k8s.io/v1/volumeattachments/csi-1",
            json!([{"op": "replace", "path": "/metadata/finalizers/0", "value": "f"}]),
            422,
        ),
        (
            "a failed test",
            "/apis/storage.k8s.io/v1/volumeattachments/csi-1",
            json!([{"op": "test", "path": "/metadata/name", "value": "other"}]),
            422,
        ),
    ];
    for (what, path, patch, expected) in cases {
        let (code, body) = raw(&api, "PATCH", path, json_patch, patch).await;
        assert_eq!(code, expected, "{what}: {body}");
    }
    let stored = attachments.get("csi-1").await.expect("get");
    assert_eq!(
        stored
            .metadata
            .annotations
            .and_then(|a| a.get("a").cloned())
            .as_deref(),
        Some("b")
    );
    assert_eq!(stored.status.map(|s| s.attached), Some(true));
    assert!(stored.metadata.labels.is_some_and(|l| l.contains_key("x")));
}

#[tokio::test]
async fn delete_of_a_held_object_answers_200_with_it_and_timestamps_are_never_ahead() {
    let (_dir, api) = started().await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(api.client.clone(), "default");
    let before = jiff::Timestamp::now();
    let claim: PersistentVolumeClaim = typed(json!({
        "metadata": {"name": "held", "finalizers": ["example.io/hold"]},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "resources": {"requests": {"storage": "1Gi"}}}
    }));
    let created = claims
        .create(&PostParams::default(), &claim)
        .await
        .expect("claim");
    let stamped: jiff::Timestamp = created
        .metadata
        .creation_timestamp
        .expect("creationTimestamp")
        .0
        .to_string()
        .parse()
        .expect("timestamp");
    let now = jiff::Timestamp::now();
    assert!(stamped <= now, "{stamped} is after {now}");
    assert!(
        stamped.as_second() >= before.as_second(),
        "{stamped} before {before}"
    );

    let (code, body) = raw(
        &api,
        "DELETE",
        "/api/v1/namespaces/default/persistentvolumeclaims/held",
        "application/json",
        Value::Null,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["kind"], "PersistentVolumeClaim");
    assert!(body["metadata"]["deletionTimestamp"].is_string(), "{body}");
}

#[tokio::test]
async fn kubectl_sorts_events_and_prints_the_csi_kinds() {
    let (dir, api) = started().await;
    let events: Api<Event> = Api::namespaced(api.client.clone(), "default");
    for (name, reason, at) in [
        ("late", "Second", "2024-05-01T10:00:05Z"),
        ("early", "First", "2024-05-01T10:00:01Z"),
    ] {
        let event: Event = typed(json!({
            "metadata": {"name": name},
            "involvedObject": {"kind": "PersistentVolumeClaim", "name": "data", "namespace": "default"},
            "reason": reason, "message": format!("{reason} thing"), "type": "Normal",
            "lastTimestamp": at, "firstTimestamp": at, "count": 1
        }));
        events
            .create(&PostParams::default(), &event)
            .await
            .expect("event");
    }
    let attachments: Api<VolumeAttachment> = Api::all(api.client.clone());
    attachments
        .create(&PostParams::default(), &attachment("csi-1", "pv1"))
        .await
        .expect("attachment");

    // Asynchronously: the server runs on this test's runtime.
    let kubectl = async |args: &[&str]| {
        let output = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", dir.path().join("kubeconfig"))
            .env("HOME", dir.path())
            .output()
            .await
            .expect("kubectl is installed (the test machine has it)");
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
    };
    // --sort-by asks for includeObject=Object: with only metadata, kubectl printed no rows.
    let sorted = kubectl(&["get", "events", "--sort-by=.lastTimestamp"]).await;
    let reasons: Vec<&str> = sorted
        .iter()
        .skip(1)
        .filter_map(|row| row.split(' ').find(|w| *w == "First" || *w == "Second"))
        .collect();
    assert_eq!(reasons, ["First", "Second"], "{sorted:?}");

    let listed = kubectl(&["get", "volumeattachments"]).await;
    assert_eq!(
        listed[0], "NAME ATTACHER PV NODE ATTACHED AGE",
        "{listed:?}"
    );
    assert!(
        listed[1].starts_with("csi-1 csi.stowage.io pv1 node1 false"),
        "{listed:?}"
    );
}

#[tokio::test]
async fn rbac_grants_the_csi_kinds_and_their_status_as_upstream() {
    const ATTACHER: &str = "attacher-token-0123456789abcdef0123456789abcdef";
    let dir = TempDir::new().expect("tempdir");
    std::fs::write(
        dir.path().join("tokens.csv"),
        format!("{ATTACHER},system:serviceaccount:kube-system:csi-attacher,u-att\n"),
    )
    .expect("token file");
    let api = InProcessApi::start(dir.path()).await;
    // external-attacher's rules: attachments read and patched, their status patched.
    let role: ClusterRole = typed(json!({
        "metadata": {"name": "external-attacher-runner"},
        "rules": [
            {"apiGroups": ["storage.k8s.io"], "resources": ["volumeattachments"],
             "verbs": ["get", "list", "watch", "patch"]},
            {"apiGroups": ["storage.k8s.io"], "resources": ["volumeattachments/status"],
             "verbs": ["patch"]},
            {"apiGroups": ["storage.k8s.io"], "resources": ["csinodes"],
             "verbs": ["get", "list", "watch"]}
        ]
    }));
    Api::<ClusterRole>::all(api.client.clone())
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    let binding: ClusterRoleBinding = typed(json!({
        "metadata": {"name": "csi-attacher-role"},
        "subjects": [{"kind": "ServiceAccount", "name": "csi-attacher", "namespace": "kube-system"}],
        "roleRef": {"kind": "ClusterRole", "name": "external-attacher-runner",
                    "apiGroup": "rbac.authorization.k8s.io"}
    }));
    Api::<ClusterRoleBinding>::all(api.client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    Api::<VolumeAttachment>::all(api.client.clone())
        .create(&PostParams::default(), &attachment("csi-1", "pv1"))
        .await
        .expect("attachment");

    let kubeconfig = dir.path().join("attacher.kubeconfig");
    let ca = apiserver::kubeconfig::ca_certificate(dir.path()).expect("CA");
    apiserver::kubeconfig::write(&kubeconfig, api.address, ATTACHER, &ca).expect("kubeconfig");
    let attacher = stowage_tests::api::client_from(&kubeconfig).await;
    let attachments: Api<VolumeAttachment> = Api::all(attacher.clone());
    let status = json!({"status": {"attached": true}});
    attachments
        .patch_status("csi-1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("the attacher patches status");
    attachments
        .list(&Default::default())
        .await
        .expect("the attacher lists");
    Api::<CSINode>::all(attacher.clone())
        .list(&Default::default())
        .await
        .expect("the attacher lists CSINodes");
    let capacity: CSIStorageCapacity = typed(json!({
        "metadata": {"name": "cap-1"}, "storageClassName": "fast"
    }));
    let refused = Api::<CSIStorageCapacity>::namespaced(attacher.clone(), "default")
        .create(&PostParams::default(), &capacity)
        .await;
    match refused {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403);
            assert!(
                status.message.contains(
                    "cannot create resource \"csistoragecapacities\" in API group \"storage.k8s.io\" in the namespace \"default\""
                ),
                "{}",
                status.message
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }
    let deleted = attachments.delete("csi-1", &Default::default()).await;
    assert!(
        matches!(deleted, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{deleted:?}"
    );
}
