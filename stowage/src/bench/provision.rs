//! Claims of a local class provisioned and bound end to end: the embedded API
//! server, the controller service for this node's local volumes on a unix socket,
//! and the provisioner's central and node instances, all real, in one process.

use std::time::{Duration, Instant};

use csi_controller::{ControllerConfig, Driver, controller_routes};
use driver_contract::socket;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::apiserver::start_server;
use super::concurrent;
use super::error::{Error, api, manifest};

const NODE: &str = "bench-node";
/// How long the claims may take to be Bound.
const BIND_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(clap::Args)]
pub struct ProvisionBench {
    /// Claims to create.
    #[arg(long, default_value_t = 1_000)]
    claims: usize,
    /// Claim creations in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

pub async fn run(args: ProvisionBench) -> Result<(), Error> {
    let dir = tempfile::TempDir::new().map_err(Error::TempDir)?;
    let (_store, kubeconfig) = start_server(dir.path().join("api"))?;
    let client = crate::kubeconfig::client(&kubeconfig).await?;
    let socket = dir.path().join("node.sock");
    let driver = Driver::open(&ControllerConfig {
        node_id: Some(NODE.into()),
        local_root: Some(dir.path().join("local")),
        state_dir: dir.path().join("state"),
        enable_attach: false,
        max_volumes_per_node: 0,
    })?;
    let listener = socket::bind(&socket).map_err(|source| Error::Bind {
        path: socket.clone(),
        source,
    })?;
    tokio::spawn(stowage::serve::serve(
        listener,
        controller_routes(driver),
        telemetry::grpc::GrpcMetrics::default(),
        std::future::pending(),
    ));
    for scope in [
        provisioner::Scope::Central,
        provisioner::Scope::Node(NODE.into()),
    ] {
        let config = provisioner::Config {
            csi: Some(csi_proto::channel::lazy(&socket)),
            ..provisioner::Config::new(scope)
        };
        tokio::spawn(provisioner::run(
            client.clone(),
            config,
            std::future::pending(),
        ));
    }
    let class: StorageClass = manifest(
        "class",
        json!({
            "metadata": {"name": "bench-local"},
            "provisioner": "csi.stowage.io",
            "volumeBindingMode": "Immediate",
            "reclaimPolicy": "Delete",
            "parameters": {"type": "local"},
        }),
    )?;
    Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await
        .map_err(api("create the class"))?;

    let started = Instant::now();
    create_claims(&client, args.claims, args.concurrency).await?;
    let created = started.elapsed();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, "default");
    loop {
        let list = claims
            .list(&ListParams::default())
            .await
            .map_err(api("list claims"))?;
        let bound = list
            .items
            .iter()
            .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
            .count();
        if bound == args.claims {
            break;
        }
        if started.elapsed() > BIND_TIMEOUT {
            return Err(Error::NotBound {
                bound,
                total: args.claims,
                after: BIND_TIMEOUT,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    println!(
        "provision: {} claims of an Immediate local class, {} creates in flight",
        args.claims, args.concurrency
    );
    println!(
        "  claims created in            {:>8.2} s",
        created.as_secs_f64()
    );
    println!(
        "  all provisioned and bound in {:>8.2} s",
        elapsed.as_secs_f64()
    );
    println!(
        "  throughput                   {:>8.0} claims/s",
        args.claims as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

async fn create_claims(client: &Client, count: usize, concurrency: usize) -> Result<(), Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let create = move |i: usize| {
        let claims = claims.clone();
        async move {
            let claim: PersistentVolumeClaim = manifest(
                "claim",
                json!({
                    "metadata": {"name": format!("claim-{i:05}")},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": "bench-local",
                        "resources": {"requests": {"storage": "1Mi"}},
                    }
                }),
            )?;
            claims
                .create(&PostParams::default(), &claim)
                .await
                .map_err(api(format!("create claim {i}")))?;
            Ok(())
        }
    };
    concurrent::fill(0, count, concurrency, create).await?;
    Ok(())
}
