//! Per-object in-flight guards: a second concurrent call for the same volume or
//! snapshot is refused with Aborted instead of waiting (CSI "operation pending").

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{RequestError, Result};

/// The objects calls are working on now; cheap to clone, shared by all clones.
#[derive(Debug, Default, Clone)]
pub struct InFlight {
    keys: Arc<Mutex<HashSet<String>>>,
}

/// Held while a call works on one object; releases the object on drop.
#[derive(Debug)]
pub struct Guard {
    keys: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl InFlight {
    /// Claims `key` or fails with Aborted, naming `what` to the caller.
    pub fn claim(&self, key: &str, what: &str) -> Result<Guard> {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if !keys.insert(key.to_string()) {
            return Err(RequestError::OperationPending {
                what: what.to_string(),
            });
        }
        Ok(Guard {
            keys: self.keys.clone(),
            key: key.to_string(),
        })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_claim_is_aborted_until_the_first_is_dropped() {
        let inflight = InFlight::default();
        let first = inflight.claim("k", "volume v").expect("free");
        assert!(matches!(
            inflight.claim("k", "volume v"),
            Err(RequestError::OperationPending { .. })
        ));
        assert!(inflight.claim("other", "volume w").is_ok());
        drop(first);
        assert!(inflight.claim("k", "volume v").is_ok());
    }
}
