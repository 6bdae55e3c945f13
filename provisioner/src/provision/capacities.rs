//! The published CSIStorageCapacity objects as a watch keeps them: whether this
//! node has room for a claim is read from memory. Before, every claim taken and
//! every claim provisioned listed them all from the API server (two LISTs a claim,
//! 20,000 for 10,000 claims, `stowage bench up`).

use futures_util::FutureExt;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::CSIStorageCapacity;
use kube::runtime::reflector::Store;
use kube::{Api, Client};

use crate::capacity::{self, room};
use crate::watch::{Changes, reflect};

use super::request;

pub struct Capacities {
    client: Client,
    store: Store<CSIStorageCapacity>,
}

impl Capacities {
    /// Starts watching every CSIStorageCapacity (the scheduler reads them all too).
    pub fn watch(client: Client) -> Self {
        // Nothing waits on their changes: a claim refused for room is retried after
        // its backoff, as before.
        let store = reflect(Api::all(client.clone()), &Changes::default());
        Self { client, store }
    }

    /// Why `node` has no room for the claim in `class`, or `None` when it fits or
    /// nothing is published for it. Until the watch has listed once, the objects
    /// are listed as before, so a watch that cannot start costs speed, not placement.
    pub async fn refusal(
        &self,
        pvc: &PersistentVolumeClaim,
        class: &str,
        node: &str,
    ) -> Option<room::NoRoom> {
        if !matches!(self.store.wait_until_ready().now_or_never(), Some(Ok(()))) {
            return capacity::refusal_for(&self.client, pvc, class, node).await;
        }
        let published: Vec<CSIStorageCapacity> = self
            .store
            .state()
            .iter()
            .map(|c| c.as_ref().clone())
            .collect();
        let request = request::requested_bytes(pvc).unwrap_or(0);
        room::refusal(class, node, room::room(&published, class, node), request)
    }
}
