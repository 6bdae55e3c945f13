//! The embedded API server against the real kube-rs client over HTTPS: verbs,
//! concurrency, finalizers, status, validation, errors, watches, durability.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use stowage_tests::api::{ApiProcess, InProcessApi};
use stowage_tests::wait_for;
use tempfile::TempDir;

fn pv(name: &str, size: &str) -> PersistentVolume {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"size": size}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": format!("/srv/{name}")},
        }
    }))
    .expect("pv")
}

fn pvc(name: &str, size: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    }))
    .expect("pvc")
}

/// The upstream reason and code of a failed call.
fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> (String, u16, String) {
    match result {
        Err(kube::Error::Api(status)) => {
            (status.reason.clone(), status.code, status.message.clone())
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn started() -> (TempDir, InProcessApi) {
    let dir = TempDir::new().expect("tempdir");
    let api = InProcessApi::start(dir.path()).await;
    (dir, api)
}

#[tokio::test]
async fn create_fills_metadata_and_upstream_defaults() {
    let (_dir, api) = started().await;
    let pvs: Api<PersistentVolume> = Api::all(api.client.clone());
    let created = pvs
        .create(&PostParams::default(), &pv("pv1", "10Gi"))
        .await
        .expect("create");
    assert!(
        created
            .metadata
            .uid
            .as_deref()
            .is_some_and(|u| u.len() == 36)
    );
    assert!(created.metadata.creation_timestamp.is_some());
    assert!(
        created
            .resource_version()
            .is_some_and(|v| v.parse::<u64>().is_ok())
    );
    let spec = created.spec.clone().unwrap_or_default();
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Retain")
    );
    assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));
    assert_eq!(
        created.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );

    let mut generated = pv("", "1Gi");
    generated.metadata.generate_name = Some("auto-".into());
    let generated = pvs
        .create(&PostParams::default(), &generated)
        .await
        .expect("generateName");
    assert!(generated.name_any().starts_with("auto-") && generated.name_any().len() == 10);

    let (reason, code, _) = api_error(pvs.create(&PostParams::default(), &pv("pv1", "1Gi")).await);
    assert_eq!((reason.as_str(), code), ("AlreadyExists", 409));
}

#[tokio::test]
async fn claims_get_the_newest_default_class_and_need_their_namespace() {
    let (_dir, api) = started().await;
    let classes: Api<StorageClass> = Api::all(api.client.clone());
    for name in ["older", "newer"] {
        let class: StorageClass = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "csi.stowage.io"
        }))
        .expect("class");
        let created = classes
            .create(&PostParams::default(), &class)
            .await
            .expect("class");
        assert_eq!(created.reclaim_policy.as_deref(), Some("Delete"));
        assert_eq!(created.volume_binding_mode.as_deref(), Some("Immediate"));
        // creationTimestamp counts whole seconds: the next class is made in a later one.
        let made = created
            .metadata
            .creation_timestamp
            .expect("creationTimestamp")
            .0;
        wait_for("the next second", Duration::from_secs(3), async || {
            (k8s_openapi::jiff::Timestamp::now().as_second() > made.as_second()).then_some(())
        })
        .await;
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(api.client.clone(), "default");
    let claim = claims
        .create(&PostParams::default(), &pvc("c1", "1Gi"))
        .await
        .expect("claim");
    let spec = claim.spec.clone().unwrap_or_default();
    assert_eq!(spec.storage_class_name.as_deref(), Some("newer"));
    assert_eq!(
        claim.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );

    let mut explicit_empty = pvc("c2", "1Gi");
    explicit_empty
        .spec
        .get_or_insert_default()
        .storage_class_name = Some(String::new());
    let c2 = claims
        .create(&PostParams::default(), &explicit_empty)
        .await
        .expect("claim");
    assert_eq!(
        c2.spec.and_then(|s| s.storage_class_name).as_deref(),
        Some(""),
        "an explicit empty class stays"
    );

    let elsewhere: Api<PersistentVolumeClaim> = Api::namespaced(api.client.clone(), "nowhere");
    let (reason, code, message) = api_error(
        elsewhere
            .create(&PostParams::default(), &pvc("c3", "1Gi"))
            .await,
    );
    assert_eq!((reason.as_str(), code), ("NotFound", 404));
    assert!(
        message.contains("namespaces \"nowhere\" not found"),
        "{message}"
    );
}

#[tokio::test]
async fn update_with_a_stale_resource_version_is_a_conflict() {
    let (_dir, api) = started().await;
    let pvs: Api<PersistentVolume> = Api::all(api.client.clone());
    let first = pvs
        .create(&PostParams::default(), &pv("pv1", "1Gi"))
        .await
        .expect("create");
    let mut changed = first.clone();
    changed.labels_mut().insert("tier".into(), "gold".into());
    let second = pvs
        .replace("pv1", &PostParams::default(), &changed)
        .await
        .expect("replace");
    assert!(second.resource_version() > first.resource_version());

    let mut stale = first.clone();
    stale.labels_mut().insert("tier".into(), "silver".into());
    let (reason, code, message) =
        api_error(pvs.replace("pv1", &PostParams::default(), &stale).await);
    assert_eq!((reason.as_str(), code), ("Conflict", 409));
    assert!(
        message.contains("the object has been modified"),
        "{message}"
    );

    let unchanged = pvs
        .replace("pv1", &PostParams::default(), &second)
        .await
        .expect("no-op");
    assert_eq!(
        unchanged.resource_version(),
        second.resource_version(),
        "a no-op update writes nothing"
    );
}

#[tokio::test]
async fn the_three_patch_types_apply_as_upstream() {
    let (_dir, api) = started().await;
    let pvs: Api<PersistentVolume> = Api::all(api.client.clone());
    let mut volume = pv("pv1", "1Gi");
    volume.metadata.finalizers = Some(vec!["a".into()]);
    pvs.create(&PostParams::default(), &volume)
        .await
        .expect("create");
    let params = PatchParams::default();

    let merged = pvs
        .patch(
            "pv1",
            &params,
            &Patch::Merge(json!({"metadata": {"labels": {"size": null, "zone": "a"}}})),
        )
        .await
        .expect("merge");
    assert_eq!(merged.labels().get("zone").map(String::as_str), Some("a"));
    assert!(!merged.labels().contains_key("size"));

    let strategic = pvs
        .patch(
            "pv1",
            &params,
            &Patch::Strategic(json!({"metadata": {"finalizers": ["b"]}})),
        )
        .await
        .expect("strategic");
    assert_eq!(
        strategic.finalizers(),
        ["a".to_string(), "b".to_string()],
        "finalizers merge as a set"
    );

    // kube-apiserver's JSON patch (evanphx/json-patch v4) replaces a missing member of an
    // existing object; under a missing parent the patch fails.
    let missing =
        json_patch(json!([{"op": "replace", "path": "/spec/nfs/server", "value": "example.com"}]));
    let (reason, code, _) = api_error(pvs.patch("pv1", &params, &Patch::Json::<()>(missing)).await);
    assert_eq!(
        (reason.as_str(), code),
        ("Invalid", 422),
        "replace under a missing parent fails"
    );

    let add = json_patch(json!([{"op": "add", "path": "/spec/mountOptions", "value": ["hard"]}]));
    let added = pvs
        .patch("pv1", &params, &Patch::Json::<()>(add))
        .await
        .expect("json patch");
    assert_eq!(
        added.spec.and_then(|s| s.mount_options),
        Some(vec!["hard".to_string()])
    );

    let stale = json!({"metadata": {"resourceVersion": "1", "labels": {"x": "y"}}});
    let (reason, code, _) = api_error(pvs.patch("pv1", &params, &Patch::Merge(stale)).await);
    assert_eq!(
        (reason.as_str(), code),
        ("Conflict", 409),
        "a patch naming an old resourceVersion conflicts"
    );
}

fn json_patch(operations: serde_json::Value) -> json_patch::Patch {
    serde_json::from_value(operations).unwrap_or_else(|e| panic!("patch: {e}"))
}

#[tokio::test]
async fn finalizers_hold_a_deleted_object_until_removed() {
    let (_dir, api) = started().await;
    let pvs: Api<PersistentVolume> = Api::all(api.client.clone());
    let mut volume = pv("pv1", "1Gi");
    volume.metadata.finalizers = Some(vec!["stowage.io/protect".into()]);
    pvs.create(&PostParams::default(), &volume)
        .await
        .expect("create");

    let deleted = pvs
        .delete("pv1", &DeleteParams::default())
        .await
        .expect("delete");
    let held = deleted.left().expect("the object comes back while held");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(pvs.get("pv1").await.is_ok(), "still there");

    let (reason, code, message) = api_error(
        pvs.patch(
            "pv1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["stowage.io/protect", "new"]}})),
        )
        .await,
    );
    assert_eq!((reason.as_str(), code), ("Invalid", 422));
    assert!(message.contains("no new finalizers"), "{message}");

    pvs.patch(
        "pv1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("remove finalizer");
    let (reason, code, _) = api_error(pvs.get("pv1").await);
    assert_eq!((reason.as_str(), code), ("NotFound", 404));
}

#[tokio::test]
async fn status_subresource_and_main_resource_each_ignore_the_other() {
    let (_dir, api) = started().await;
    let pvs: Api<PersistentVolume> = Api::all(api.client.clone());
    pvs.create(&PostParams::default(), &pv("pv1", "1Gi"))
        .await
        .expect("create");

    let through_status = pvs
        .patch_status(
            "pv1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"phase": "Available"}, "spec": {"storageClassName": "sneaky"}}),
            ),
        )
        .await
        .expect("status patch");
    assert_eq!(
        through_status
            .status
            .clone()
            .and_then(|s| s.phase)
            .as_deref(),
        Some("Available")
    );
    assert_eq!(
        through_status
            .spec
            .clone()
            .and_then(|s| s.storage_class_name),
        None,
        "spec through /status is ignored"
    );

    let through_main = pvs
        .patch(
            "pv1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"phase": "Bound"}, "spec": {"storageClassName": "real"}}),
            ),
        )
        .await
        .expect("main patch");
    assert_eq!(
        through_main.status.and_then(|s| s.phase).as_deref(),
        Some("Available"),
        "status through the main resource is ignored"
    );
    assert_eq!(
        through_main
            .spec
            .and_then(|s| s.storage_class_name)
            .as_deref(),
        Some("real")
    );

    let (reason, code, _) = api_error(
        pvs.patch_status(
            "pv1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Sideways"}})),
        )
        .await,
    );
    assert_eq!((reason.as_str(), code), ("Invalid", 422));
}

#[tokio::test]
async fn validation_names_the_field_and_guards_immutable_ones() {
    let (_dir, api) = started().await;
    let pvs: Api<PersistentVolume> = Api::all(api.client.clone());
    let broken: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": "broken"},
        "spec": {"accessModes": ["ReadWriteSometimes"], "persistentVolumeReclaimPolicy": "Shred"}
    }))
    .expect("pv");
    let (reason, code, message) = api_error(pvs.create(&PostParams::default(), &broken).await);
    assert_eq!((reason.as_str(), code), ("Invalid", 422));
    for expected in [
        "spec.capacity: Required value",
        "spec.accessModes[0]: Unsupported value: \"ReadWriteSometimes\"",
        "spec.persistentVolumeReclaimPolicy: Unsupported value: \"Shred\"",
        "spec: Required value: must specify a volume type",
    ] {
        assert!(
            message.contains(expected),
            "{expected} missing from {message}"
        );
    }

    let huge = pvs
        .create(&PostParams::default(), &pv("huge", "800Ei"))
        .await
        .expect("800Ei is a valid capacity");
    assert_eq!(
        huge.spec
            .and_then(|s| s.capacity)
            .and_then(|c| c.get("storage").cloned())
            .map(|q| q.0)
            .as_deref(),
        Some("800Ei")
    );
    let (_, code, message) = api_error(
        pvs.patch(
            "huge",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hostPath": {"path": "/elsewhere"}}})),
        )
        .await,
    );
    assert_eq!(code, 422);
    assert!(
        message.contains("spec.persistentvolumesource: Forbidden"),
        "{message}"
    );

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(api.client.clone(), "default");
    let (_, code, message) = api_error(claims.create(&PostParams::default(), &pvc("c", "0")).await);
    assert_eq!(code, 422);
    assert!(
        message
            .contains("spec.resources[storage]: Invalid value: \"0\": must be greater than zero"),
        "{message}"
    );
    claims
        .create(&PostParams::default(), &pvc("c", "1Gi"))
        .await
        .expect("claim");
    let (_, code, message) = api_error(
        claims
            .patch(
                "c",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"accessModes": ["ReadWriteMany"]}})),
            )
            .await,
    );
    assert_eq!(code, 422);
    assert!(
        message.contains("spec is immutable after creation"),
        "{message}"
    );

    let classes: Api<StorageClass> = Api::all(api.client.clone());
    let class: StorageClass = serde_json::from_value(
        json!({"metadata": {"name": "sc"}, "provisioner": "x", "parameters": {"a": "1"}}),
    )
    .expect("sc");
    classes
        .create(&PostParams::default(), &class)
        .await
        .expect("class");
    let (_, code, message) = api_error(
        classes
            .patch(
                "sc",
                &PatchParams::default(),
                &Patch::Merge(json!({"parameters": {"a": "2"}})),
            )
            .await,
    );
    assert_eq!(code, 422);
    assert!(
        message.contains("parameters: Forbidden: updates to parameters are forbidden."),
        "{message}"
    );
}

#[tokio::test]
async fn unknown_fields_are_dropped_or_refused_under_strict_validation() {
    let (_dir, api) = started().await;
    let http = reqwest_like::Raw::new(&api).await;
    let body = |name: &str| {
        serde_json::to_vec(&json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "hostPath": {"path": "/srv/x"}, "bogus": true}
        }))
        .unwrap_or_default()
    };
    let (code, text) = http
        .request(
            "POST",
            "/api/v1/persistentvolumes?fieldValidation=Strict",
            Some(body("strict")),
            true,
        )
        .await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("unknown field \\\"spec.bogus\\\""), "{text}");
    let (code, text) = http
        .request(
            "POST",
            "/api/v1/persistentvolumes",
            Some(body("lenient")),
            true,
        )
        .await;
    assert_eq!(code, 200, "{text}");
    assert!(
        !text.contains("bogus"),
        "dropped as upstream's decoder drops it: {text}"
    );
    let (code, _) = http
        .request(
            "POST",
            "/api/v1/persistentvolumes?fieldValidation=Maybe",
            Some(body("x")),
            true,
        )
        .await;
    assert_eq!(code, 400);
    let (code, text) = http
        .request(
            "POST",
            "/api/v1/persistentvolumes",
            Some(br#"{"metadata":{"name":"t"},"spec":{"capacity":"lots"}}"#.to_vec()),
            true,
        )
        .await;
    assert_eq!(code, 400, "a wrongly typed field: {text}");
}

#[tokio::test]
async fn lists_filter_by_labels_and_fields_and_page_without_gaps() {
    let (_dir, api) = started().await;
    let pvs: Api<PersistentVolume> = Api::all(api.client.clone());
    for i in 0..25 {
        let size = if i % 2 == 0 { "1Gi" } else { "2Gi" };
        pvs.create(&PostParams::default(), &pv(&format!("pv{i:02}"), size))
            .await
            .expect("create");
    }
    let small = pvs
        .list(&ListParams::default().labels("size=1Gi"))
        .await
        .expect("list");
    assert_eq!(small.items.len(), 13);
    let notin = pvs
        .list(&ListParams::default().labels("size notin (1Gi)"))
        .await
        .expect("list");
    assert_eq!(notin.items.len(), 12);
    let one = pvs
        .list(&ListParams::default().fields("metadata.name=pv07"))
        .await
        .expect("list");
    assert_eq!(
        one.items.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
        vec!["pv07"]
    );
    let (reason, code, _) = api_error(pvs.list(&ListParams::default().fields("spec.nope=x")).await);
    assert_eq!((reason.as_str(), code), ("BadRequest", 400));

    let mut seen = Vec::new();
    let mut params = ListParams::default().limit(7);
    let mut pages = 0;
    loop {
        let page = pvs.list(&params).await.expect("page");
        pages += 1;
        seen.extend(page.items.iter().map(|p| p.name_any()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = ListParams::default().limit(7).continue_token(&token),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!((seen.len(), unique.len()), (25, 25));
}

/// A LIST without selectors is answered from the stored bytes, one with a selector
/// from decoded objects: the two must say the same, pages and empty lists included.
#[tokio::test]
async fn a_list_from_stored_bytes_says_what_a_decoded_list_says() {
    let (_dir, api) = started().await;
    let pvs: Api<PersistentVolume> = Api::all(api.client.clone());
    for i in 0..9 {
        pvs.create(&PostParams::default(), &pv(&format!("pv{i}"), "1Gi"))
            .await
            .expect("create");
    }
    let raw = pvs.list(&ListParams::default()).await.expect("raw list");
    let decoded = pvs
        .list(&ListParams::default().labels("size"))
        .await
        .expect("decoded list");
    assert_eq!(raw.items.len(), 9);
    assert_eq!(raw.items, decoded.items);
    assert_eq!(
        raw.metadata.resource_version,
        decoded.metadata.resource_version
    );
    let raw_page = pvs
        .list(&ListParams::default().limit(4))
        .await
        .expect("raw page");
    let decoded_page = pvs
        .list(&ListParams::default().limit(4).labels("size"))
        .await
        .expect("decoded page");
    assert_eq!(raw_page.items, decoded_page.items);
    assert!(raw_page.metadata.continue_.is_some_and(|c| !c.is_empty()));
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(api.client.clone(), "default");
    let none = claims
        .list(&ListParams::default())
        .await
        .expect("empty list");
    assert!(none.items.is_empty());
}

#[tokio::test]
async fn bad_requests_get_statuses_not_crashes() {
    let (_dir, api) = started().await;
    let http = reqwest_like::Raw::new(&api).await;
    assert_eq!(
        http.request("GET", "/api/v1/persistentvolumes", None, false)
            .await
            .0,
        401,
        "no token"
    );
    assert_eq!(
        http.request("GET", "/api/v1/configmaps", None, true)
            .await
            .0,
        404,
        "unknown kind"
    );
    let (code, body) = http
        .request(
            "POST",
            "/api/v1/persistentvolumes",
            Some(b"{not json".to_vec()),
            true,
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"reason\":\"BadRequest\""), "{body}");
    let big = vec![b' '; 4 << 20];
    let (code, body) = http
        .request("POST", "/api/v1/persistentvolumes", Some(big), true)
        .await;
    assert_eq!(code, 413, "{body}");
    assert!(
        body.contains("Request entity too large: limit is 3145728"),
        "{body}"
    );
    let (code, _) = http
        .request(
            "POST",
            "/api/v1/persistentvolumes",
            Some(br#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"x"}}"#.to_vec()),
            true,
        )
        .await;
    assert_eq!(code, 400, "a body of another kind");
    assert_eq!(
        http.request("GET", "/healthz", None, false).await.0,
        200,
        "probes need no token"
    );
    // The server still serves after all of that.
    let pvs: Api<PersistentVolume> = Api::all(api.client.clone());
    assert!(pvs.list(&ListParams::default()).await.is_ok());
}

#[tokio::test]
async fn an_oversized_body_gets_its_413_over_http2_too() {
    let (dir, api) = started().await;
    let data = dir.path().join("big");
    std::fs::write(&data, vec![b'x'; 4 << 20]).expect("write");
    // kubectl speaks HTTP/2, where a body dropped half-read resets the stream.
    let output = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&api.kubeconfig)
        .args(["create", "secret", "generic", "big"])
        .arg(format!("--from-file=data={}", data.display()))
        .output()
        .await
        .expect("kubectl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("Request entity too large: limit is 3145728"),
        "the client got the answer, not a reset: {stderr}"
    );

    // A body of unknown length trips the limit half-way; the rest is read and dropped
    // so the answer arrives.
    let (code, body) = curl_http2_stream(dir.path(), &api, &vec![b' '; 5 << 20]).await;
    assert_eq!(code, "413", "{body}");
    assert!(
        body.contains("\"reason\":\"RequestEntityTooLarge\""),
        "{body}"
    );
    let pvs: Api<PersistentVolume> = Api::all(api.client.clone());
    assert!(pvs.list(&ListParams::default()).await.is_ok());
}

/// POSTs `body` to /api/v1/persistentvolumes with curl over HTTP/2, streamed from
/// stdin with no declared length; returns the status code and the answer.
async fn curl_http2_stream(
    data: &std::path::Path,
    api: &InProcessApi,
    body: &[u8],
) -> (String, String) {
    use tokio::io::AsyncWriteExt;
    let url = format!("https://{}/api/v1/persistentvolumes", api.address);
    let mut child = tokio::process::Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--http2",
            "-X",
            "POST",
            "-T",
            "-",
        ])
        .args([
            "-w",
            "\n%{http_code}",
            "-H",
            "Content-Type: application/json",
        ])
        .arg("-H")
        .arg(format!(
            "Authorization: Bearer {}",
            admin_token(&api.kubeconfig)
        ))
        .arg("--cacert")
        .arg(data.join("ca.crt"))
        .arg(url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    let mut stdin = child.stdin.take().expect("stdin");
    let body = body.to_vec();
    let writer = tokio::spawn(async move {
        // The server may stop reading once it has answered; that is not a failure here.
        let _ = stdin.write_all(&body).await;
    });
    let output = child.wait_with_output().await.expect("curl output");
    writer.await.expect("writer");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let (answer, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (code.to_string(), format!("{answer}{stderr}"))
}

/// The bearer token of the kubeconfig's first user.
fn admin_token(kubeconfig: &std::path::Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    text.lines()
        .find_map(|line| line.trim().strip_prefix("token: "))
        .expect("a token in the kubeconfig")
        .to_string()
}

/// Raw HTTP requests through kube's client, with or without the bearer token.
mod reqwest_like {
    use kube::Client;
    use stowage_tests::api::InProcessApi;

    pub struct Raw {
        with_token: Client,
        without_token: Client,
    }

    impl Raw {
        pub async fn new(api: &InProcessApi) -> Self {
            let kubeconfig =
                kube::config::Kubeconfig::read_from(&api.kubeconfig).expect("kubeconfig");
            let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .expect("config");
            let with_token = Client::try_from(config.clone()).expect("client");
            config.auth_info.token = None;
            let without_token = Client::try_from(config).expect("client");
            Self {
                with_token,
                without_token,
            }
        }

        pub async fn request(
            &self,
            method: &str,
            path: &str,
            body: Option<Vec<u8>>,
            token: bool,
        ) -> (u16, String) {
            let request = http::Request::builder()
                .method(method)
                .uri(path)
                .header("content-type", "application/json")
                .body(body.unwrap_or_default())
                .expect("request");
            let client = if token {
                &self.with_token
            } else {
                &self.without_token
            };
            match client.request_text(request).await {
                Ok(text) => (200, text),
                Err(kube::Error::Api(status)) => (
                    status.code,
                    serde_json::to_string(&status).unwrap_or_default(),
                ),
                Err(other) => panic!("{method} {path}: {other}"),
            }
        }
    }
}

/// The watch log keeps only what selectors read of each object and its predecessor:
/// a label or a selectable field changing must still show the object entering the
/// selection (ADDED) and leaving it (DELETED), and its whole body must still arrive.
#[tokio::test]
async fn selector_watches_see_objects_enter_and_leave() {
    let (_dir, api) = started().await;
    let pvs: Api<PersistentVolume> = Api::all(api.client.clone());
    pvs.create(&PostParams::default(), &pv("moving", "1Gi"))
        .await
        .expect("create");
    let from = pvs
        .get("moving")
        .await
        .expect("get")
        .resource_version()
        .unwrap_or_default();
    let by_label = WatchParams::default().labels("size=2Gi").timeout(20);
    let by_field = WatchParams::default()
        .fields("status.phase=Released")
        .timeout(20);
    let mut labelled = pvs.watch(&by_label, &from).await.expect("watch").boxed();
    let mut fielded = pvs.watch(&by_field, &from).await.expect("watch").boxed();
    for size in ["2Gi", "1Gi"] {
        let patch = json!({"metadata": {"labels": {"size": size}}});
        pvs.patch("moving", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("label patch");
    }
    for phase in ["Released", "Available"] {
        let patch = json!({"status": {"phase": phase}});
        pvs.patch_status("moving", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("status patch");
    }
    let mut seen = Vec::new();
    for events in [&mut labelled, &mut fielded] {
        for _ in 0..2 {
            let event = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .expect("an event in time")
                .expect("the watch goes on")
                .expect("a good event");
            seen.push(match event {
                WatchEvent::Added(pv) => ("ADDED", pv.spec.is_some()),
                WatchEvent::Deleted(pv) => ("DELETED", pv.spec.is_some()),
                other => panic!("unexpected {other:?}"),
            });
        }
    }
    assert_eq!(
        seen,
        vec![
            ("ADDED", true),
            ("DELETED", true),
            ("ADDED", true),
            ("DELETED", true)
        ]
    );
}

#[tokio::test]
async fn watchers_and_reflectors_follow_every_change() {
    let (_dir, api) = started().await;
    let pvs: Api<PersistentVolume> = Api::all(api.client.clone());
    pvs.create(&PostParams::default(), &pv("before", "1Gi"))
        .await
        .expect("create");

    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(pvs.clone(), watcher::Config::default().labels("size=1Gi")),
    )
    .applied_objects()
    .boxed();
    let task = tokio::spawn(async move { stream.try_for_each(|_| async { Ok(()) }).await });
    wait_for("the initial list", Duration::from_secs(10), async || {
        (reader.len() == 1).then_some(())
    })
    .await;

    pvs.create(&PostParams::default(), &pv("after", "1Gi"))
        .await
        .expect("create");
    pvs.create(&PostParams::default(), &pv("other", "5Gi"))
        .await
        .expect("create");
    wait_for("the new object", Duration::from_secs(10), async || {
        (reader.len() == 2).then_some(())
    })
    .await;
    pvs.patch(
        "before",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"size": "9Gi"}}})),
    )
    .await
    .expect("relabel");
    wait_for(
        "the object to leave the selection",
        Duration::from_secs(10),
        async || (reader.len() == 1).then_some(()),
    )
    .await;
    pvs.delete("after", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("the deletion", Duration::from_secs(10), async || {
        reader.is_empty().then_some(())
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_is_gone_and_recovers() {
    let dir = TempDir::new().expect("tempdir");
    let api = InProcessApi::start_with(dir.path(), |config| {
        config.watch_history = 8;
        config.bookmark_interval = Duration::from_millis(200);
    })
    .await;
    let pvs: Api<PersistentVolume> = Api::all(api.client.clone());
    let first = pvs
        .create(&PostParams::default(), &pv("pv0", "1Gi"))
        .await
        .expect("create");
    let old_version = first.resource_version().expect("rv");
    for i in 1..20 {
        pvs.create(&PostParams::default(), &pv(&format!("pv{i}"), "1Gi"))
            .await
            .expect("create");
    }
    let mut events = pvs
        .watch(&WatchParams::default(), &old_version)
        .await
        .expect("watch")
        .boxed();
    match events.next().await {
        Some(Err(kube::Error::Api(status))) | Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        }
        other => panic!("expected 410 Expired, got {other:?}"),
    }

    // A recent revision watches fine and gets bookmarks while idle.
    let current = pvs
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let mut events = pvs
        .watch(&WatchParams::default(), &current)
        .await
        .expect("watch")
        .boxed();
    pvs.delete("pv3", &DeleteParams::default())
        .await
        .expect("delete");
    match events.next().await {
        Some(Ok(WatchEvent::Deleted(gone))) => assert_eq!(gone.name_any(), "pv3"),
        other => panic!("expected DELETED, got {other:?}"),
    }
    match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
        Ok(Some(Ok(WatchEvent::Bookmark(bookmark)))) => {
            assert!(!bookmark.metadata.resource_version.is_empty())
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }

    // A watcher that starts behind recovers by listing again.
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(pvs.clone(), watcher::Config::default()))
        .applied_objects()
        .boxed();
    let task = tokio::spawn(async move { stream.try_for_each(|_| async { Ok(()) }).await });
    wait_for("the reflector", Duration::from_secs(10), async || {
        (reader.len() == 19).then_some(())
    })
    .await;
    task.abort();
}

async fn names(client: &Client) -> BTreeSet<String> {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    pvs.list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|p| p.name_any())
        .collect()
}

#[tokio::test]
async fn a_restart_keeps_objects_and_revisions_keep_rising() {
    let dir = TempDir::new().expect("tempdir");
    let (server, client) = ApiProcess::start(dir.path(), &[]).await;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let last = pvs
        .create(&PostParams::default(), &pv("kept", "1Gi"))
        .await
        .expect("create");
    assert!(server.terminate().await.success());

    let (_server, client) = ApiProcess::start(dir.path(), &[]).await;
    assert_eq!(names(&client).await, BTreeSet::from(["kept".to_string()]));
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let next = pvs
        .create(&PostParams::default(), &pv("next", "1Gi"))
        .await
        .expect("create");
    let version = |p: &PersistentVolume| {
        p.resource_version()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        version(&next) > version(&last),
        "the revision counter survives restarts"
    );
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_write() {
    let dir = TempDir::new().expect("tempdir");
    let (server, client) = ApiProcess::start(dir.path(), &[]).await;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers = (0..8).map(|w| {
        let (pvs, answered) = (pvs.clone(), answered.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0.. {
                let name = format!("w{w}-{i}");
                match pvs.create(&PostParams::default(), &pv(&name, "1Gi")).await {
                    Ok(_) => {
                        acknowledged.push(name);
                        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(_) => break,
                }
            }
            acknowledged
        })
    });
    let writers: Vec<_> = writers.collect();
    // Killed in the middle of writing: once each writer has had a few answered.
    wait_for(
        "the writers under way",
        Duration::from_secs(20),
        async || (answered.load(std::sync::atomic::Ordering::SeqCst) >= 24).then_some(()),
    )
    .await;
    server.kill_hard().await;
    let mut acknowledged = BTreeSet::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer"));
    }
    assert!(
        acknowledged.len() > 8,
        "the writers got going ({})",
        acknowledged.len()
    );

    let (_server, client) = ApiProcess::start(dir.path(), &[]).await;
    let stored = names(&client).await;
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
}
