//! Reflector caches that announce every change to any number of loops.

use futures_util::StreamExt;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

/// A change counter: reflectors bump it, each control loop holds a receiver.
#[derive(Clone)]
pub struct Changes(watch::Sender<u64>);

impl Default for Changes {
    fn default() -> Self {
        Self(watch::Sender::new(0))
    }
}

impl Changes {
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }

    pub fn poke(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Starts a reflector over `api` whose every event pokes `changes`; returns its store.
pub fn reflect<K>(api: Api<K>, changes: &Changes) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    let changes = changes.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(error) = event {
                tracing::warn!(%error, "watch failed; retrying");
            }
            changes.poke();
        }
    });
    reader
}

/// Waits until `store` has listed once.
pub async fn ready<K>(store: &Store<K>) -> crate::Result<()>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .wait_until_ready()
        .await
        .map_err(|_| crate::Error::CacheClosed)
}
