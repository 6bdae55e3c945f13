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

/// How long a loop may go without a pass.
const RESYNC: std::time::Duration = std::time::Duration::from_secs(15);

/// Runs `pass` now, after every change of the caches or of `finished`, when
/// `next_due` (the earliest backoff) falls due, and at least every 15 s, until
/// `shutdown` completes.
pub async fn run_passes(
    mut changes: watch::Receiver<u64>,
    finished: &Changes,
    next_due: impl Fn() -> Option<std::time::Instant>,
    pass: impl Fn(),
    shutdown: impl Future<Output = ()>,
) {
    let mut finished = finished.subscribe();
    tokio::pin!(shutdown);
    loop {
        changes.mark_unchanged();
        finished.mark_unchanged();
        pass();
        let wait = next_due()
            .map_or(RESYNC, |due| {
                due.saturating_duration_since(std::time::Instant::now())
            })
            .min(RESYNC);
        tokio::select! {
            _ = changes.changed() => {}
            _ = finished.changed() => {}
            () = tokio::time::sleep(wait) => {}
            () = &mut shutdown => return,
        }
    }
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
