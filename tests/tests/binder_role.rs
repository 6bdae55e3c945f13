//! The binder's place in a real cluster: it stands down while kube-controller-manager
//! leads (its Lease in kube-system is held), binds when that lapses, and
//! `--controllers` turns it (or any controller) off in kube-controller-manager's syntax.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use provisioner::leader::LeaseRef;
use provisioner::{Config, Controllers, Metrics, Scope};
use serde_json::json;
use stowage_tests::api::{InProcessApi, matching_pair};
use stowage_tests::process::stowage_bin;
use stowage_tests::{holds_for, wait_for};
use tempfile::TempDir;

const KCM: &str = "kube-controller-manager";

fn start_binder(client: &Client, adjust: impl FnOnce(&mut Config)) -> Metrics {
    let mut config = Config::new(Scope::Central);
    adjust(&mut config);
    let metrics = config.metrics.clone();
    tokio::spawn(provisioner::run(
        client.clone(),
        config,
        std::future::pending(),
    ));
    metrics
}

/// A static volume and a claim that match; returns their resourceVersions.
async fn pair(client: &Client, name: &str) -> (String, String) {
    let (pv, pvc) = matching_pair(client, name).await;
    (
        pv.resource_version().unwrap_or_default(),
        pvc.resource_version().unwrap_or_default(),
    )
}

/// For `window`, neither object of the pair is written by anyone.
async fn untouched_for(client: &Client, name: &str, versions: &(String, String), window: Duration) {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    holds_for(
        &format!("no binding writes to {name}"),
        window,
        async || {
            let pv = volumes.get(name).await.expect("pv");
            let pvc = claims.get(name).await.expect("pvc");
            assert_eq!(
                (
                    pv.resource_version().unwrap_or_default(),
                    pvc.resource_version().unwrap_or_default()
                ),
                versions.clone(),
                "no binding writes to {name}: {:?} {:?}",
                pv.status,
                pvc.status
            );
            true
        },
    )
    .await;
}

async fn bound(client: &Client, name: &str) {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    wait_for(
        &format!("{name} bound"),
        Duration::from_secs(20),
        async || {
            let claim = claims.get(name).await.ok()?;
            (claim.status?.phase.as_deref() == Some("Bound")).then_some(())
        },
    )
    .await;
}

/// kube-controller-manager as its leader election looks from outside: a Lease in
/// kube-system, renewed every half second while `renewing` says so.
async fn fake_controller_manager(client: &Client) -> tokio::sync::watch::Sender<bool> {
    // The embedded API server has kube-system, as a cluster does.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.get("kube-system").await.expect("kube-system");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let lease = serde_json::from_value(json!({
        "metadata": {"name": KCM},
        "spec": {"holderIdentity": "kcm-0_1234", "leaseDurationSeconds": 2,
                 "acquireTime": now, "renewTime": now}
    }))
    .expect("lease");
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("lease");
    let (renewing, mut wanted) = tokio::sync::watch::channel(true);
    tokio::spawn(async move {
        loop {
            if *wanted.borrow_and_update()
                && let Ok(mut lease) = leases.get(KCM).await
            {
                lease.spec.get_or_insert_default().renew_time =
                    Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
                let _ = leases.replace(KCM, &PostParams::default(), &lease).await;
            }
            // The renewal period of the other binder's Lease: a pace, not a wait for state.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                changed = wanted.changed() => if changed.is_err() { return },
            }
        }
    });
    renewing
}

#[tokio::test]
async fn the_binder_stands_down_while_kube_controller_manager_leads_and_binds_when_it_lapses() {
    let dir = TempDir::new().expect("tempdir");
    let api = InProcessApi::start(dir.path()).await;
    let client = api.client.clone();
    let renewing = fake_controller_manager(&client).await;
    let metrics = start_binder(&client, |config| {
        config.defer_binding_to = Some(LeaseRef {
            namespace: "kube-system".into(),
            name: KCM.into(),
        });
    });

    let versions = pair(&client, "waits").await;
    // Longer than the 2 s lease duration: the renewals keep it held throughout.
    untouched_for(&client, "waits", &versions, Duration::from_secs(5)).await;
    assert_eq!(metrics.binder_standing_down.get(), 1);

    // kube-controller-manager stops renewing: within a lease duration and a poll,
    // the binder takes over and binds.
    renewing.send(false).expect("renewer");
    bound(&client, "waits").await;
    assert_eq!(metrics.binder_standing_down.get(), 0);

    // It comes back: the binder stands down again.
    renewing.send(true).expect("renewer");
    wait_for(
        "the binder to stand down again",
        Duration::from_secs(20),
        async || (metrics.binder_standing_down.get() == 1).then_some(()),
    )
    .await;
    let versions = pair(&client, "waits-again").await;
    untouched_for(&client, "waits-again", &versions, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn without_a_lease_to_defer_to_the_binder_binds_at_once() {
    let dir = TempDir::new().expect("tempdir");
    let api = InProcessApi::start(dir.path()).await;
    let client = api.client.clone();
    // Deferring to a Lease that does not exist (a cluster without
    // kube-controller-manager, or one that stopped long ago) is binding.
    start_binder(&client, |config| {
        config.defer_binding_to = Some(LeaseRef {
            namespace: "kube-system".into(),
            name: KCM.into(),
        });
    });
    pair(&client, "at-once").await;
    bound(&client, "at-once").await;
}

#[tokio::test]
async fn controllers_minus_binder_leaves_claims_unbound() {
    let dir = TempDir::new().expect("tempdir");
    let api = InProcessApi::start(dir.path()).await;
    let client = api.client.clone();
    start_binder(&client, |config| {
        config.controllers = Controllers::parse(&["*", "-binder"]).expect("list");
    });
    let versions = pair(&client, "nobody").await;
    untouched_for(&client, "nobody", &versions, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn an_unknown_controller_name_stops_the_provisioner_with_the_known_ones() {
    let output = tokio::process::Command::new(stowage_bin())
        .args(["provisioner", "--controllers=*,-attacher"])
        .output()
        .await
        .expect("run stowage provisioner");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(r#""-attacher" is not "*", a controller or -controller (controllers: binder, provisioner, reclaimer, resizer, snapshotter, modifier, groupsnapshotter, pvc-protection, pv-protection)"#),
        "{stderr}"
    );
}
