//! The keyed steps of one controller: at most one in flight per object, a failed one
//! tried again after its object's backoff, and each end waking the controller's next
//! pass. Every controller but the binder runs on it: the snapshotters, the modifier
//! and the protection controllers through [`Steps::start`]; the provisioner and the
//! reclaimer, which decide their backoffs themselves, through [`Steps::ready`],
//! [`Steps::begin`] and [`Steps::end`].

use std::collections::HashSet;
use std::fmt::Display;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::lock;
use crate::watch::Changes;

/// A controller made of keyed steps: each pass reads the caches and starts steps.
pub trait Stepped: Send + Sync + 'static {
    /// The controller's steps.
    fn steps(&self) -> &Steps;
    /// One pass over the caches.
    fn pass(self: &Arc<Self>);
}

/// Runs `controller`'s passes (as [`Steps::run`] schedules them) until `shutdown`.
pub async fn run<C: Stepped>(
    controller: Arc<C>,
    changes: watch::Receiver<u64>,
    shutdown: impl Future<Output = ()>,
) -> crate::Result<()> {
    controller
        .steps()
        .run(changes, || controller.pass(), shutdown)
        .await;
    Ok(())
}

/// One controller's steps in flight, their backoff and the wake-up of its next pass.
pub struct Steps {
    /// What a failed step was, for the log line.
    what: &'static str,
    in_flight: Mutex<HashSet<String>>,
    backoff: Mutex<Backoff>,
    finished: Changes,
}

impl Steps {
    /// No step yet; `what` names a failed step in the log.
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            in_flight: Mutex::default(),
            backoff: Mutex::default(),
            finished: Changes::default(),
        }
    }

    /// Runs `pass` on every change, every end of a step and when a backoff falls due,
    /// until `shutdown`.
    pub async fn run(
        &self,
        changes: watch::Receiver<u64>,
        pass: impl Fn(),
        shutdown: impl Future<Output = ()>,
    ) {
        crate::watch::run_passes(
            changes,
            &self.finished,
            || lock(&self.backoff).next_due(),
            pass,
            shutdown,
        )
        .await;
    }

    /// Starts `step` for `key`, unless one for it runs or its backoff has not passed.
    pub fn start<E: Display>(
        self: &Arc<Self>,
        key: String,
        step: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        if !self.may_start(&key) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = step.await;
            this.finish(&key, outcome);
        });
    }

    fn may_start(&self, key: &str) -> bool {
        lock(&self.backoff).ready(key, Instant::now()) && self.begin(key)
    }

    fn finish<E: Display>(&self, key: &str, outcome: Result<(), E>) {
        match outcome {
            Ok(()) => lock(&self.backoff).succeeded(key),
            Err(error) => {
                tracing::warn!(object = %key, %error, "{} failed; retrying", self.what);
                lock(&self.backoff).failed(key, Instant::now());
            }
        }
        self.end(key);
    }

    /// Whether a step for `key` may start: none runs and its backoff has passed.
    pub fn ready(&self, key: &str) -> bool {
        lock(&self.backoff).ready(key, Instant::now()) && !lock(&self.in_flight).contains(key)
    }

    /// Marks a step for `key` running; `false` if one already was.
    pub fn begin(&self, key: &str) -> bool {
        lock(&self.in_flight).insert(key.into())
    }

    /// Marks the step for `key` ended and wakes the next pass.
    pub fn end(&self, key: &str) {
        lock(&self.in_flight).remove(key);
        self.wake();
    }

    /// Wakes the next pass, for news that is not a cache's change.
    pub fn wake(&self) {
        self.finished.poke();
    }

    /// Every key's backoff, for a controller that records its own failures.
    pub fn backoff(&self) -> MutexGuard<'_, Backoff> {
        lock(&self.backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_step_per_key_and_a_failed_key_waits_for_its_backoff() {
        let steps = Arc::new(Steps::new("test step"));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let mut ended = steps.finished.subscribe();
        steps.start("a".into(), async move {
            let _ = released.await;
            Ok::<(), String>(())
        });
        assert!(!steps.may_start("a"), "a second step for a running key");
        assert!(steps.may_start("b"), "another key starts");
        steps.finish("b", Err::<(), _>("refused"));
        assert!(!steps.may_start("b"), "a failed key waits for its backoff");
        assert!(lock(&steps.backoff).next_due().is_some());

        ended.mark_unchanged();
        let _ = release.send(());
        ended
            .changed()
            .await
            .expect("the step's end wakes the pass");
        assert!(steps.may_start("a"), "a finished key starts again");
    }
}
