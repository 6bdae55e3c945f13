//! Exponential backoff per object for operations that failed (reclaim, provisioning).

use std::collections::HashMap;
use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_secs(2);
const CAP: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
pub struct Backoff {
    /// Object key -> (failures in a row, earliest next attempt).
    failing: HashMap<String, (u32, Instant)>,
}

impl Backoff {
    pub fn ready(&self, name: &str, now: Instant) -> bool {
        self.failing.get(name).is_none_or(|(_, due)| *due <= now)
    }

    /// Records a failure; the wait doubles each time, up to a cap.
    pub fn failed(&mut self, name: &str, now: Instant) -> Duration {
        let failures = self.failing.get(name).map_or(0, |(n, _)| *n) + 1;
        let wait = FIRST
            .saturating_mul(2u32.saturating_pow(failures - 1))
            .min(CAP);
        self.failing
            .insert(name.to_string(), (failures, now + wait));
        wait
    }

    pub fn succeeded(&mut self, name: &str) {
        self.failing.remove(name);
    }

    /// Forgets objects that no longer exist.
    pub fn retain(&mut self, exists: impl Fn(&str) -> bool) {
        self.failing.retain(|name, _| exists(name));
    }

    /// When the earliest waiting attempt falls due.
    pub fn next_due(&self) -> Option<Instant> {
        self.failing.values().map(|(_, due)| *due).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets_on_success() {
        let mut backoff = Backoff::default();
        let now = Instant::now();
        let waits: Vec<u64> = (0..10)
            .map(|_| backoff.failed("pv", now).as_secs())
            .collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert!(!backoff.ready("pv", now));
        assert!(backoff.ready("pv", now + CAP));
        assert!(backoff.ready("other", now));
        assert_eq!(backoff.next_due(), Some(now + CAP));
        backoff.succeeded("pv");
        assert!(backoff.ready("pv", now));
        assert_eq!(backoff.next_due(), None);
    }
}
