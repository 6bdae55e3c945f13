//! Reflector caches that announce every change to any number of loops.

use futures_util::StreamExt;
use kube::Api;
use kube::runtime::reflector::{self, Store, store::Writer};
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

/// What a reflector can watch and cache.
pub(crate) trait Watched:
    kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static
{
}

impl<K> Watched for K where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// Starts a reflector over `api` whose every event pokes `changes`; returns its store.
pub(crate) fn reflect<K: Watched<DynamicType = ()>>(api: Api<K>, changes: &Changes) -> Store<K> {
    drive(Writer::default(), api, changes, &K::kind(&()))
}

/// Fills `writer` from a watch of `api` (retried with the default backoff after a
/// failure, which is logged as the watch of `what`), poking `changes` on every
/// event; returns the store `writer` fills.
pub(crate) fn drive<K>(writer: Writer<K>, api: Api<K>, changes: &Changes, what: &str) -> Store<K>
where
    K: Watched,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let reader = writer.as_reader();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    let (changes, what) = (changes.clone(), what.to_string());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(error) = event {
                tracing::warn!(%error, "watch of {what} failed; retrying");
            }
            changes.poke();
        }
    });
    reader
}

/// How long a loop may go without a pass.
const RESYNC: std::time::Duration = std::time::Duration::from_secs(15);

/// Changes arriving within this window share one pass.
const COALESCE: std::time::Duration = std::time::Duration::from_millis(20);
/// After a change, a loop waits this many times its last pass's duration before the
/// next pass (and at least [`COALESCE`]).
const SPACING: u32 = 2;

/// How long to let changes gather after one arrives, given what the last pass cost.
/// A pass reads every cached object: under a stream of changes (10,000 claims created
/// at once) passes back to back took most of a core from the binder and the API
/// server (`perf` of `stowage bench up`); spaced so, a loop takes at most about a third
/// of one, and a change still waits only twice a pass.
fn gather_time(last_pass: std::time::Duration) -> std::time::Duration {
    (last_pass * SPACING).max(COALESCE)
}

/// Runs `pass` now, after every change of the caches or of `finished` (changes
/// gathered for [`gather_time`]), when `next_due` (the earliest backoff) falls due,
/// and at least every 15 s, until `shutdown` completes.
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
        let started = std::time::Instant::now();
        pass();
        let gather = gather_time(started.elapsed());
        let wait = next_due()
            .map_or(RESYNC, |due| {
                due.saturating_duration_since(std::time::Instant::now())
            })
            .min(RESYNC);
        tokio::select! {
            _ = changes.changed() => tokio::time::sleep(gather).await,
            _ = finished.changed() => tokio::time::sleep(gather).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn changes_gather_for_twice_the_last_pass_and_never_less_than_the_window() {
        let cases = [
            (Duration::ZERO, COALESCE),
            (Duration::from_millis(5), COALESCE),
            (Duration::from_millis(10), Duration::from_millis(20)),
            (Duration::from_millis(40), Duration::from_millis(80)),
            (Duration::from_secs(1), Duration::from_secs(2)),
        ];
        for (last_pass, expected) in cases {
            assert_eq!(gather_time(last_pass), expected, "last pass {last_pass:?}");
        }
    }
}
