//! The objects the binder wrote, until its watches bring them back. A pass that
//! starts before a watch has delivered the binder's own write would decide again
//! from the version before it and meet only a conflict (seen under load: a claim
//! named for its provisioner twice). Upstream's PV controller does the same with
//! its own caches (`storeObjectUpdate` after each write).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kube::{Resource, ResourceExt};

/// The newest version this binder wrote of each object, by uid.
pub struct Written<K> {
    objects: Mutex<HashMap<String, Arc<K>>>,
}

impl<K> Default for Written<K> {
    fn default() -> Self {
        Self {
            objects: Mutex::default(),
        }
    }
}

impl<K: Resource> Written<K> {
    /// Keeps what a write returned, unless a newer version is kept already.
    pub fn record(&self, object: K) {
        let Some(uid) = object.uid() else {
            return;
        };
        let mut objects = self.lock();
        let newer = objects.get(&uid).is_none_or(|kept| is_newer(&object, kept));
        if newer {
            objects.insert(uid, Arc::new(object));
        }
    }

    /// The cached objects, each replaced by what the binder wrote when that is newer.
    /// What the cache has caught up with is forgotten, and so is what it no longer
    /// holds (deleted).
    pub fn over(&self, cached: Vec<Arc<K>>) -> Vec<Arc<K>> {
        let mut objects = self.lock();
        if objects.is_empty() {
            return cached;
        }
        let mut still_ahead = HashMap::new();
        let freshest = cached
            .into_iter()
            .map(|object| {
                let written = object.uid().and_then(|uid| objects.remove_entry(&uid));
                match written {
                    Some((uid, written)) if is_newer(written.as_ref(), object.as_ref()) => {
                        still_ahead.insert(uid, written.clone());
                        written
                    }
                    _ => object,
                }
            })
            .collect();
        *objects = still_ahead;
        freshest
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<K>>> {
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn is_newer<K: Resource>(a: &K, b: &K) -> bool {
    is_later_version(
        a.meta().resource_version.as_deref(),
        b.meta().resource_version.as_deref(),
    )
}

/// Whether resource version `a` is later than `b`. They are compared as numbers, as
/// upstream's controllers do; one that is not a number is never later, so the cache
/// wins.
pub fn is_later_version(a: Option<&str>, b: Option<&str>) -> bool {
    let number = |version: Option<&str>| version?.parse::<u64>().ok();
    match (number(a), number(b)) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use serde_json::json;

    use super::*;

    fn claim(uid: &str, version: &str, phase: &str) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "ns", "uid": uid, "resourceVersion": version},
            "status": {"phase": phase},
        }))
        .unwrap_or_else(|e| panic!("{uid}: {e}"))
    }

    fn seen(objects: &[Arc<PersistentVolumeClaim>]) -> Vec<String> {
        objects
            .iter()
            .map(|c| {
                let phase = c.status.as_ref().and_then(|s| s.phase.clone());
                format!(
                    "{}@{}:{}",
                    c.name_any(),
                    c.resource_version().unwrap_or_default(),
                    phase.unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn a_pass_sees_what_the_binder_wrote_until_the_cache_catches_up() {
        // (name, the writes, the cache for the pass, what the pass sees, kept after it)
        type Case = (
            &'static str,
            Vec<PersistentVolumeClaim>,
            Vec<PersistentVolumeClaim>,
            Vec<&'static str>,
            usize,
        );
        let cases: Vec<Case> = vec![
            (
                "nothing written: the cache as it is",
                vec![],
                vec![claim("a", "5", "Pending")],
                vec!["a@5:Pending"],
                0,
            ),
            (
                "a write the cache has not seen replaces the cached version",
                vec![claim("a", "7", "Bound")],
                vec![claim("a", "5", "Pending"), claim("b", "6", "Pending")],
                vec!["a@7:Bound", "b@6:Pending"],
                1,
            ),
            (
                "a cache that caught up wins and the write is forgotten",
                vec![claim("a", "7", "Bound")],
                vec![claim("a", "7", "Bound")],
                vec!["a@7:Bound"],
                0,
            ),
            (
                "a cache past the write (another writer came after) wins",
                vec![claim("a", "7", "Bound")],
                vec![claim("a", "9", "Lost")],
                vec!["a@9:Lost"],
                0,
            ),
            (
                "of two writes of one object the later is kept",
                vec![claim("a", "8", "Bound"), claim("a", "7", "Pending")],
                vec![claim("a", "5", "Pending")],
                vec!["a@8:Bound"],
                1,
            ),
            (
                "an object gone from the cache (deleted) is not brought back",
                vec![claim("a", "7", "Bound")],
                vec![claim("b", "6", "Pending")],
                vec!["b@6:Pending"],
                0,
            ),
            (
                "a version that is not a number never replaces the cache",
                vec![claim("a", "x7", "Bound")],
                vec![claim("a", "5", "Pending")],
                vec!["a@5:Pending"],
                0,
            ),
        ];
        for (name, writes, cache, expected, kept) in cases {
            let written = Written::default();
            for object in writes {
                written.record(object);
            }
            let pass = written.over(cache.into_iter().map(Arc::new).collect());
            assert_eq!(seen(&pass), expected, "{name}");
            assert_eq!(written.lock().len(), kept, "{name}: kept");
        }
    }
}
