//! Bulk I/O (a clone's copy, the reaper's freeing) gives the disk to the calls' durable
//! writes (a record log's group commit, a directory's fsync).
//!
//! The idle I/O class is not enough: a disk scheduler without idling (mq-deadline,
//! none) dispatches the bulk writes whenever nothing else is queued, which between two
//! calls is always, and an fsync's cache flush then makes durable everything the bulk
//! wrote since the last one. Measured here beside a direct-I/O writer: a small append's
//! `fdatasync` took 5–6 ms at the p50 with the writer at full speed (≈ 350 MiB/s),
//! 0.8 ms with it held to 90 MiB/s, 0.43 ms alone. So bulk work waits its turn: while
//! a durable write is in flight and for [`QUIET`] after the last one ended, up to
//! [`LONGEST_WAIT`] a step, and after a wait it takes a small step.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the calls' durable writes must have been still before bulk work goes on at
/// full speed: a concurrency-1 stream of calls syncs every few milliseconds.
pub const QUIET: Duration = Duration::from_millis(10);

/// The longest bulk work waits for its turn: under a steady stream of calls it still
/// moves one small step every this often.
pub const LONGEST_WAIT: Duration = Duration::from_millis(50);

const POLL: Duration = Duration::from_millis(1);

/// The process's pacer: the one the durable writes and the bulk work of this crate use.
pub fn global() -> &'static Pacer {
    static PACER: OnceLock<Pacer> = OnceLock::new();
    PACER.get_or_init(Pacer::new)
}

/// Runs `sync` (an fsync a call waits for) as a durable write of [`global`].
pub fn durable<T>(sync: impl FnOnce() -> T) -> T {
    global().durable(sync)
}

/// How bulk work got its turn, and so how large a step it may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// The calls' durable writes have been still for [`QUIET`]: a whole step.
    Quiet,
    /// The calls kept writing for [`LONGEST_WAIT`]: a small step, then wait again.
    Waited,
}

/// Tracks the calls' durable writes for the bulk work that must wait for them.
#[derive(Debug)]
pub struct Pacer {
    epoch: Instant,
    in_flight: AtomicU32,
    /// When the last durable write ended, in microseconds after `epoch`.
    last_end_us: AtomicU64,
}

impl Default for Pacer {
    fn default() -> Self {
        Self::new()
    }
}

impl Pacer {
    /// A pacer that has seen no durable write.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            last_end_us: AtomicU64::new(0),
        }
    }

    /// Runs `sync`, a durable write a call waits for, holding bulk work back while it
    /// runs and for [`QUIET`] after.
    pub fn durable<T>(&self, sync: impl FnOnce() -> T) -> T {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let _ended = Ended(self);
        sync()
    }

    /// Waits until bulk work may take its next step: until the calls' durable writes
    /// have been still for [`QUIET`], or at most [`LONGEST_WAIT`].
    pub fn bulk_turn(&self) -> Turn {
        let start = Instant::now();
        loop {
            if self.is_quiet() {
                return Turn::Quiet;
            }
            if start.elapsed() >= LONGEST_WAIT {
                return Turn::Waited;
            }
            std::thread::sleep(POLL);
        }
    }

    fn is_quiet(&self) -> bool {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return false;
        }
        match self.last_end_us.load(Ordering::Acquire) {
            0 => true,
            last_end => self.now_us().saturating_sub(last_end) >= micros(QUIET),
        }
    }

    fn now_us(&self) -> u64 {
        micros(self.epoch.elapsed()).max(1)
    }
}

/// Marks the end of a durable write, also when its sync panicked.
struct Ended<'a>(&'a Pacer);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        self.0.last_end_us.store(self.0.now_us(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn a_pacer_that_saw_no_durable_write_gives_bulk_work_its_turn_at_once() {
        let pacer = Pacer::new();
        let start = Instant::now();
        assert_eq!(pacer.bulk_turn(), Turn::Quiet);
        assert!(start.elapsed() < QUIET, "{:?}", start.elapsed());
    }

    #[test]
    fn bulk_work_waits_while_a_durable_write_is_in_flight_and_a_quiet_spell_after() {
        let pacer = Pacer::new();
        let (started, release) = (Barrier::new(2), Barrier::new(2));
        std::thread::scope(|scope| {
            scope.spawn(|| {
                pacer.durable(|| {
                    started.wait();
                    release.wait();
                    std::thread::sleep(Duration::from_millis(20));
                })
            });
            started.wait();
            release.wait();
            let start = Instant::now();
            assert_eq!(pacer.bulk_turn(), Turn::Quiet);
            let waited = start.elapsed();
            assert!(
                waited >= Duration::from_millis(20) + QUIET,
                "the turn came {waited:?} after the write began"
            );
            assert!(waited < LONGEST_WAIT, "{waited:?}");
        });
    }

    #[test]
    fn under_a_steady_stream_of_durable_writes_bulk_work_still_moves() {
        let pacer = Pacer::new();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let first = Barrier::new(2);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                pacer.durable(|| first.wait());
                // Back to back: between two writes the pacer is never quiet for long.
                while !stop.load(Ordering::Relaxed) {
                    pacer.durable(|| std::thread::sleep(Duration::from_millis(3)));
                }
            });
            first.wait();
            let start = Instant::now();
            let turn = pacer.bulk_turn();
            let waited = start.elapsed();
            stop.store(true, Ordering::Relaxed);
            assert_eq!(turn, Turn::Waited);
            assert!(
                (LONGEST_WAIT..LONGEST_WAIT * 3).contains(&waited),
                "{waited:?}"
            );
        });
    }

    #[test]
    fn a_durable_write_that_panics_still_ends() {
        let pacer = Pacer::new();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pacer.durable(|| panic!("the sync failed"))
        }));
        assert!(outcome.is_err());
        assert_eq!(pacer.in_flight.load(Ordering::Acquire), 0);
    }
}
