//! The binder against the embedded API server over HTTPS, with the kube-rs client.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use provisioner::{Config, Scope};
use serde_json::json;
use stowage_tests::api::InProcessApi;
use stowage_tests::wait_for;
use tempfile::TempDir;

const COUNT: usize = 200;

const NODE: &str = "node-a";

/// The reclaim policy of volume i: the three in turn.
fn policy(i: usize) -> &'static str {
    ["Retain", "Recycle", "Delete"][i % 3]
}

fn pv(name: &str, gib: usize, policy: &str, path: &Path) -> PersistentVolume {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": format!("{gib}Gi")},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": policy,
            "storageClassName": "",
            "hostPath": {"path": path},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE]}
            ]}]}},
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
async fn two_hundred_claims_bind_to_the_smallest_sufficient_volumes_then_each_policy_reclaims() {
    // Below /tmp: the hostPath deleter removes only such paths.
    let dir = TempDir::new_in("/tmp").expect("tempdir");
    let api = InProcessApi::start(dir.path()).await;
    let client = api.client.clone();
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");

    let allowed = dir.path().join("host");
    let data = |i: usize| allowed.join(format!("pv-{i:03}"));

    // Volume i holds (i+1) GiB; they are created in a scrambled order.
    for n in 0..COUNT {
        let i = (n * 7919) % COUNT;
        std::fs::create_dir_all(data(i).join("sub")).expect("mkdir");
        std::fs::write(data(i).join("sub/file"), b"tenant data").expect("write");
        let volume = pv(&format!("pv-{i:03}"), i + 1, policy(i), &data(i));
        volumes
            .create(&PostParams::default(), &volume)
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
    let central = Config::new(Scope::Central);
    let metrics = central.metrics.clone();
    tokio::spawn(provisioner::run(
        client.clone(),
        central,
        std::future::pending(),
    ));
    let node = Config {
        host_path_allow: vec![allowed.clone()],
        ..Config::new(Scope::Node(NODE.into()))
    };
    tokio::spawn(provisioner::run(
        client.clone(),
        node,
        std::future::pending(),
    ));

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

    assert_eq!(
        metrics.bindings.get(),
        COUNT as u64,
        "one binding per claim"
    );
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

    // Deleting claims releases their volumes; then each policy has its way.
    const DELETED: usize = 12;
    for i in 0..DELETED {
        claims
            .delete(&format!("claim-{i:03}"), &DeleteParams::default())
            .await
            .expect("delete");
    }
    let outcome = |pv: &PersistentVolume| {
        let status = pv.status.clone().unwrap_or_default();
        matches!(
            (policy_of(pv).as_str(), status.phase.as_deref()),
            ("Retain", Some("Released")) | ("Recycle", Some("Available"))
        )
    };
    // A hostPath volume below /tmp is deleted, as upstream's testing deleter does.
    let deletes = (0..DELETED).filter(|i| policy(*i) == "Delete").count();
    wait_for(
        "every policy carried out",
        Duration::from_secs(30),
        async || {
            let list = volumes.list(&ListParams::default()).await.ok()?;
            let done = list.items.iter().filter(|v| outcome(v)).count();
            let gone = (0..DELETED)
                .filter(|i| policy(*i) == "Delete")
                .filter(|i| {
                    !list
                        .items
                        .iter()
                        .any(|v| v.name_any() == format!("pv-{i:03}"))
                })
                .count();
            (done + gone == DELETED && gone == deletes).then_some(())
        },
    )
    .await;
    for i in 0..DELETED {
        if policy(i) == "Delete" {
            assert!(!data(i).exists(), "Delete removes the directory");
            continue;
        }
        let volume = volumes.get(&format!("pv-{i:03}")).await.expect("get");
        let claim_ref = volume.spec.and_then(|s| s.claim_ref);
        let scrubbed = std::fs::read_dir(data(i))
            .expect("read dir")
            .next()
            .is_none();
        match policy(i) {
            "Retain" => assert!(
                claim_ref.is_some() && !scrubbed,
                "Retain keeps claimRef and data"
            ),
            "Recycle" => assert!(
                claim_ref.is_none() && scrubbed,
                "Recycle scrubs and unbinds"
            ),
            other => panic!("unexpected policy {other}"),
        }
    }
    assert!(
        std::fs::read_dir(data(DELETED))
            .expect("read dir")
            .next()
            .is_some(),
        "bound volumes are untouched"
    );
}

fn policy_of(volume: &PersistentVolume) -> String {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.clone())
        .unwrap_or_default()
}
