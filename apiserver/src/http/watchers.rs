//! The watches each identity holds, and the bound on them: a watch lasts as long as
//! its client keeps it, and each holds a task and a buffer here, so one identity
//! (a leaked token, a client stuck in a reconnect loop) cannot open them without end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{ApiError, Result};

/// What a client refused for having too many watches is told to wait, as upstream's
/// max-in-flight filter tells it.
const RETRY_AFTER_SECONDS: u64 = 1;

pub struct Watchers {
    max_per_user: usize,
    held: Mutex<HashMap<String, usize>>,
}

/// One open watch of one user; dropping it (when the stream ends) gives it back.
pub struct Held {
    watchers: Arc<Watchers>,
    user: String,
}

impl Watchers {
    pub fn new(max_per_user: usize) -> Arc<Self> {
        Arc::new(Self {
            max_per_user,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one of `user`'s watches, or 429 when all are taken.
    pub fn admit(self: &Arc<Self>, user: &str) -> Result<Held> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(user.to_string()).or_default();
        if *count >= self.max_per_user {
            tracing::warn!(user, limit = self.max_per_user, "too many watches");
            return Err(ApiError::TooManyRequests {
                retry_after_seconds: RETRY_AFTER_SECONDS,
            });
        }
        *count += 1;
        Ok(Held {
            watchers: self.clone(),
            user: user.to_string(),
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self
            .watchers
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_has_their_own_bound_and_a_finished_watch_frees_its_place() {
        let watchers = Watchers::new(2);
        let first = watchers.admit("alice");
        let second = watchers.admit("alice");
        assert!(first.is_ok() && second.is_ok());
        assert!(matches!(
            watchers.admit("alice"),
            Err(ApiError::TooManyRequests { .. })
        ));
        assert!(watchers.admit("bob").is_ok(), "bob is not alice");
        drop(first);
        assert!(watchers.admit("alice").is_ok());
    }
}
