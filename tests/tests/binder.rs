//! The binder against the embedded API server over HTTPS, with the kube-rs client.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use provisioner::binder::Binder;
use serde_json::json;
use stowage_tests::api::InProcessApi;
use stowage_tests::wait_for;
use tempfile::TempDir;

const COUNT: usize = 200;

fn pv(name: &str, gib: usize) -> PersistentVolume {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": format!("{gib}Gi")},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": format!("/srv/{name}")},
        }
    }))
    .expect("pv")
}

fn pvc(name: &str, request: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "resources": {"requests": {"storage": request}},
        }
    }))
    .expect("pvc")
}

fn phase_of_claim(claim: &PersistentVolumeClaim) -> String {
    claim
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

fn phase_of_volume(volume: &PersistentVolume) -> String {
    volume
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn two_hundred_claims_bind_to_the_smallest_sufficient_volumes_and_release() {
    let dir = TempDir::new().expect("tempdir");
    let api = InProcessApi::start(dir.path()).await;
    let client = api.client.clone();
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");

    // Volume i holds (i+1) GiB; they are created in a scrambled order.
    for n in 0..COUNT {
        let i = (n * 7919) % COUNT;
        volumes
            .create(&PostParams::default(), &pv(&format!("pv-{i:03}"), i + 1))
            .await
            .expect("pv");
    }
    // Claim i asks for 1 MiB less than (i+1) GiB: volume i is its smallest sufficient one.
    for i in (0..COUNT).rev() {
        let request = format!("{}Mi", (i + 1) * 1024 - 1);
        claims
            .create(
                &PostParams::default(),
                &pvc(&format!("claim-{i:03}"), &request),
            )
            .await
            .expect("pvc");
    }
    let unmatched = pvc("too-big", "1Ti");
    claims
        .create(&PostParams::default(), &unmatched)
        .await
        .expect("pvc");
    // Started once everything exists, so that the pairing below is exact: a binder racing the
    // creations could rightly give a claim the next-larger volume.
    tokio::spawn(Binder::run(client.clone(), std::future::pending()));

    let bound = wait_for("every claim bound", Duration::from_secs(60), async || {
        let list = claims.list(&ListParams::default()).await.ok()?;
        let bound: BTreeMap<String, PersistentVolumeClaim> = list
            .items
            .into_iter()
            .filter(|c| phase_of_claim(c) == "Bound")
            .map(|c| (c.name_any(), c))
            .collect();
        (bound.len() == COUNT).then_some(bound)
    })
    .await;
    for i in 0..COUNT {
        let claim = &bound[&format!("claim-{i:03}")];
        let spec = claim.spec.clone().unwrap_or_default();
        assert_eq!(
            spec.volume_name.as_deref(),
            Some(format!("pv-{i:03}").as_str()),
            "claim-{i:03}"
        );
        let annotations = claim.annotations();
        assert_eq!(
            annotations
                .get("pv.kubernetes.io/bind-completed")
                .map(String::as_str),
            Some("yes")
        );
        assert_eq!(
            annotations
                .get("pv.kubernetes.io/bound-by-controller")
                .map(String::as_str),
            Some("yes")
        );
        let status = claim.status.clone().unwrap_or_default();
        assert_eq!(
            status
                .capacity
                .and_then(|c| c.get("storage").cloned())
                .map(|q| q.0),
            Some(format!("{}Gi", i + 1))
        );
    }
    let volume = wait_for("volume phases", Duration::from_secs(20), async || {
        let v = volumes.get("pv-042").await.ok()?;
        (phase_of_volume(&v) == "Bound").then_some(v)
    })
    .await;
    let claim_ref = volume
        .spec
        .clone()
        .unwrap_or_default()
        .claim_ref
        .unwrap_or_default();
    assert_eq!(claim_ref.name.as_deref(), Some("claim-042"));
    assert_eq!(claim_ref.uid, bound["claim-042"].metadata.uid);

    let pending = claims.get("too-big").await.expect("get");
    assert_eq!(phase_of_claim(&pending), "Pending");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let said = wait_for(
        "a FailedBinding event",
        Duration::from_secs(20),
        async || {
            let fields = "involvedObject.name=too-big,involvedObject.kind=PersistentVolumeClaim";
            let list = events
                .list(&ListParams::default().fields(fields))
                .await
                .ok()?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("FailedBinding"))
        },
    )
    .await;
    assert!(
        said.message
            .unwrap_or_default()
            .contains("no persistent volumes available")
    );

    // Deleting claims releases their volumes (Retain keeps them Released).
    for i in 0..10 {
        claims
            .delete(&format!("claim-{i:03}"), &DeleteParams::default())
            .await
            .expect("delete");
    }
    wait_for("released volumes", Duration::from_secs(30), async || {
        let list = volumes.list(&ListParams::default()).await.ok()?;
        let released = list
            .items
            .iter()
            .filter(|v| phase_of_volume(v) == "Released")
            .count();
        (released == 10).then_some(())
    })
    .await;
    let released = volumes.get("pv-003").await.expect("get");
    assert_eq!(phase_of_volume(&released), "Released");
    assert!(
        released.spec.and_then(|s| s.claim_ref).is_some(),
        "Retain keeps the claimRef"
    );
}
