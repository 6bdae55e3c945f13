//! Two provisioner replicas against the embedded API server: exactly one acts (the
//! Lease holder); when it dies without a word, the other takes over within the
//! lease duration; a clean shutdown hands the lease back at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{Api, Client};
use provisioner::leader::LeaderConfig;
use provisioner::{Config, Metrics, Scope};
use stowage_tests::api::{InProcessApi, lease_holder, matching_pair};
use stowage_tests::{holds_for, wait_for};
use tempfile::TempDir;
use tokio::sync::oneshot;

const LEASE_DURATION: Duration = Duration::from_secs(2);

fn replica(
    client: &Client,
    identity: &str,
) -> (Metrics, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let leader = LeaderConfig {
        lease_duration: LEASE_DURATION,
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(200),
        ..LeaderConfig::new("default", "stowage-provisioner", identity)
    };
    let config = Config {
        leader: Some(leader),
        ..Config::new(Scope::Central)
    };
    let metrics = config.metrics.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let client = client.clone();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        provisioner::run(client, config, shutdown)
            .await
            .expect("provisioner");
    });
    (metrics, stop, task)
}

async fn bind_one(client: &Client, name: &str) {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    matching_pair(client, name).await;
    wait_for(
        &format!("{name} bound"),
        Duration::from_secs(20),
        async || {
            let c = claims.get(name).await.ok()?;
            (c.status?.phase.as_deref() == Some("Bound")).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn one_replica_acts_and_the_other_takes_over_when_it_dies() {
    let dir = TempDir::new().expect("tempdir");
    let api = InProcessApi::start(dir.path()).await;
    let leases: Api<Lease> = Api::namespaced(api.client.clone(), "default");

    let (first_metrics, _first_stop, first) = replica(&api.client, "first");
    wait_for(
        "first holds the lease",
        Duration::from_secs(10),
        async || {
            (lease_holder(&leases, "stowage-provisioner")
                .await
                .as_deref()
                == Some("first"))
            .then_some(())
        },
    )
    .await;
    let (second_metrics, second_stop, second) = replica(&api.client, "second");
    bind_one(&api.client, "one").await;
    wait_for("the leader binds", Duration::from_secs(10), async || {
        (first_metrics.bindings.get() == 1).then_some(())
    })
    .await;
    holds_for(
        "the standby does nothing while the leader holds the lease",
        Duration::from_millis(500),
        async || {
            second_metrics.bindings.get() == 0
                && lease_holder(&leases, "stowage-provisioner")
                    .await
                    .as_deref()
                    == Some("first")
        },
    )
    .await;

    // The leader dies without releasing: the standby waits out the lease, then acts.
    first.abort();
    let died = Instant::now();
    wait_for(
        "second holds the lease",
        Duration::from_secs(10),
        async || {
            (lease_holder(&leases, "stowage-provisioner")
                .await
                .as_deref()
                == Some("second"))
            .then_some(())
        },
    )
    .await;
    let took = died.elapsed();
    assert!(
        took <= LEASE_DURATION + Duration::from_secs(1),
        "failover took {took:?}"
    );
    bind_one(&api.client, "two").await;
    // The counter moves once the binder has its answer, just after the claim reads Bound.
    wait_for(
        "the new leader counted its binding",
        Duration::from_secs(5),
        async || (second_metrics.bindings.get() == 1).then_some(()),
    )
    .await;
    assert_eq!(
        first_metrics.bindings.get(),
        1,
        "the dead leader did nothing more"
    );
    let lease = leases.get("stowage-provisioner").await.expect("lease");
    assert_eq!(lease.spec.and_then(|s| s.lease_transitions), Some(1));

    // A clean shutdown releases the lease.
    second_stop.send(()).expect("stop");
    second.await.expect("second exits cleanly");
    assert_eq!(lease_holder(&leases, "stowage-provisioner").await, None);
}
