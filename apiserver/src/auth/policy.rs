//! The store's RBAC objects as a [`Policy`], rebuilt when one of them changes. A check
//! first looks through the change log since the policy was built; a write is in the
//! log before its client hears of it, so a request never meets a policy older than
//! a role or binding its client was told was made.

use std::sync::{Arc, Mutex, PoisonError};

use serde::de::DeserializeOwned;

use super::rbac::Policy;
use crate::error::Result;
use crate::resources::rbac::{CLUSTER_ROLE, CLUSTER_ROLE_BINDING, GROUP, ROLE, ROLE_BINDING};
use crate::store::{Reader, Store};

/// The RBAC policy of the store's roles and bindings, rebuilt when they change.
pub struct PolicyCache {
    store: Store,
    cached: Mutex<Cached>,
}

struct Cached {
    /// Every change up to this revision is reflected in `policy`.
    revision: u64,
    policy: Arc<Policy>,
}

impl PolicyCache {
    /// The policy of what `store` holds now.
    pub async fn open(store: Store) -> Result<Self> {
        let (policy, revision) = load(&store).await?;
        Ok(Self {
            store,
            cached: Mutex::new(Cached {
                revision,
                policy: Arc::new(policy),
            }),
        })
    }

    /// The policy as of now.
    pub async fn current(&self) -> Result<Arc<Policy>> {
        {
            let mut cached = self.lock();
            let prefix = format!("{GROUP}/");
            if let Ok((false, latest)) = self
                .store
                .log()
                .any_since(cached.revision, |c| c.key.starts_with(&prefix))
            {
                cached.revision = latest;
                return Ok(cached.policy.clone());
            }
        }
        // An RBAC object changed, or the log no longer reaches back that far.
        let (policy, revision) = load(&self.store).await?;
        let mut cached = self.lock();
        if revision >= cached.revision {
            *cached = Cached {
                revision,
                policy: Arc::new(policy),
            };
        }
        Ok(cached.policy.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Every role and binding in one read, and the revision that read saw.
async fn load(store: &Store) -> Result<(Policy, u64)> {
    store
        .read(|reader| {
            let policy = Policy::new(
                all(reader, &CLUSTER_ROLE)?,
                all(reader, &ROLE)?,
                all(reader, &CLUSTER_ROLE_BINDING)?,
                all(reader, &ROLE_BINDING)?,
            );
            Ok((policy, reader.revision()))
        })
        .await
}

/// The stored objects of `resource` as `T`; validated on write, so one that does not
/// decode is skipped (and said so) rather than failing every request.
fn all<T: DeserializeOwned>(
    reader: &dyn Reader,
    resource: &crate::registry::Resource,
) -> Result<Vec<T>> {
    let mut found = Vec::new();
    reader.scan(&resource.prefix(None), None, &mut |key, object| {
        match serde_json::from_value(object) {
            Ok(decoded) => found.push(decoded),
            Err(error) => {
                tracing::warn!(key, %error, "an RBAC object that does not decode is ignored")
            }
        }
        true
    })?;
    Ok(found)
}
