//! Beside the upstream sidecars (`--controllers=binder`, kube-controller-manager's
//! part), the binder names the provisioner on every claim it cannot bind and that
//! its class provisions, as kube-controller-manager does; csi-provisioner waits for
//! that annotation. Stowage's own provisioner is off, so nothing else acts: no
//! volume is made and no provisioning failure is reported.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use provisioner::{Config, Controllers, Scope};
use serde_json::json;
use stowage_tests::api::InProcessApi;
use stowage_tests::{holds_for, wait_for};
use tempfile::TempDir;

async fn class(client: &Client, name: &str, provisioner: &str, mode: &str) {
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": name},
        "provisioner": provisioner,
        "volumeBindingMode": mode,
    }))
    .expect("class");
    Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await
        .expect("create class");
}

async fn claim(client: &Client, name: &str, class: &str) {
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                 "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .expect("pvc");
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pvc)
        .await
        .expect("create pvc");
}

async fn provisioner_of(client: &Client, name: &str) -> (Option<String>, Option<String>) {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default")
        .get(name)
        .await
        .expect("pvc");
    let annotations = pvc.metadata.annotations.unwrap_or_default();
    (
        annotations
            .get("volume.kubernetes.io/storage-provisioner")
            .cloned(),
        annotations
            .get("volume.beta.kubernetes.io/storage-provisioner")
            .cloned(),
    )
}

#[tokio::test]
async fn the_binder_alone_names_the_provisioner_and_nothing_provisions() {
    let dir = TempDir::new().expect("tempdir");
    let api = InProcessApi::start(dir.path()).await;
    let client = api.client.clone();
    let mut config = Config::new(Scope::Central);
    config.controllers = Controllers::parse(&["binder"]).expect("list");
    tokio::spawn(provisioner::run(
        client.clone(),
        config,
        std::future::pending(),
    ));
    class(&client, "ours", "csi.stowage.io", "Immediate").await;
    class(&client, "theirs", "other.example.io", "Immediate").await;
    class(&client, "later", "csi.stowage.io", "WaitForFirstConsumer").await;
    claim(&client, "ours", "ours").await;
    claim(&client, "theirs", "theirs").await;
    claim(&client, "later", "later").await;
    for (name, provisioner) in [("ours", "csi.stowage.io"), ("theirs", "other.example.io")] {
        let wanted = (Some(provisioner.to_string()), Some(provisioner.to_string()));
        wait_for(
            &format!("claim {name} to name {provisioner}"),
            Duration::from_secs(15),
            async || (provisioner_of(&client, name).await == wanted).then_some(()),
        )
        .await;
    }
    holds_for(
        "a WaitForFirstConsumer claim without a selected node is not to be provisioned yet",
        Duration::from_secs(2),
        async || provisioner_of(&client, "later").await == (None, None),
    )
    .await;
    let volumes = Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("list pvs");
    assert!(volumes.items.is_empty(), "no volume made");
    let events = Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .expect("list events");
    let failures: Vec<_> = events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("ProvisioningFailed"))
        .map(|e| e.message.clone())
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
}
