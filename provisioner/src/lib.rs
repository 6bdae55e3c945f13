//! Stowage provisioner: the binder that matches PersistentVolumeClaims to
//! PersistentVolumes as kube-controller-manager does, the reclaimer that carries
//! out Delete and Recycle, and dynamic provisioning.

pub mod binder;
pub mod error;
pub mod events;
pub mod reclaim;
pub mod volumes;
pub mod watch;

use std::future::Future;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::{Api, Client};

pub use error::{Error, Result};
pub use reclaim::ReclaimConfig;
pub use reclaim::plan::Scope;

/// Runs the controllers of `config.scope` until `shutdown` completes: the binder
/// and reclaimer centrally; on a node, the reclaimer for that node's volumes.
pub async fn run(
    client: Client,
    config: ReclaimConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let changes = watch::Changes::default();
    let volumes = watch::reflect(Api::<PersistentVolume>::all(client.clone()), &changes);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopped_signal = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let central = config.scope == Scope::Central;
    let reclaimer = reclaim::Reclaimer::new(client.clone(), volumes.clone(), config);
    let reclaiming = reclaimer.run(changes.subscribe(), stopped_signal());
    let binding = async {
        if central {
            let binder = binder::Binder::start(client, volumes, &changes).await?;
            binder.run(changes.subscribe(), stopped_signal()).await
        } else {
            stopped_signal().await;
            Ok(())
        }
    };
    let work = async { tokio::try_join!(reclaiming, binding).map(drop) };
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => return result,
        () = shutdown => {}
    }
    let _ = stop.send(true);
    work.await
}
