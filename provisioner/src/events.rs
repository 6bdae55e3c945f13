//! Events on claims and volumes, as core/v1 Events (what `kubectl describe` reads).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Event, EventSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::binder::sync;

const COMPONENT: &str = "stowage-provisioner";

/// How long an identical event is held back, as client-go's event correlator does.
const REPEAT_WINDOW: Duration = Duration::from_secs(10 * 60);

type EventKey = (String, &'static str, String);

/// Which events were recorded recently: a pass repeats its decisions, the events
/// should not repeat with them, but a condition that persists is reported again
/// after the window. Old entries are dropped, so memory follows the recent events.
struct RecentEvents {
    window: Duration,
    seen: HashMap<EventKey, Instant>,
    /// Size at which expired entries are next swept (doubles with the live set).
    sweep_at: usize,
}

impl RecentEvents {
    const MIN_SWEEP: usize = 1024;

    fn new(window: Duration) -> Self {
        Self {
            window,
            seen: HashMap::new(),
            sweep_at: Self::MIN_SWEEP,
        }
    }

    /// Whether `key` should be recorded at `now`; remembers it if so.
    fn fresh(&mut self, key: EventKey, now: Instant) -> bool {
        if self.seen.len() >= self.sweep_at {
            let window = self.window;
            self.seen.retain(|_, at| now.duration_since(*at) < window);
            self.sweep_at = (self.seen.len() * 2).max(Self::MIN_SWEEP);
        }
        match self.seen.get(&key) {
            Some(at) if now.duration_since(*at) < self.window => false,
            _ => {
                self.seen.insert(key, now);
                true
            }
        }
    }
}

/// Writes Events about objects, folding a repeat of a recent one into its count.
pub struct EventRecorder {
    client: Client,
    recent: Mutex<RecentEvents>,
}

impl EventRecorder {
    /// A recorder writing through `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            recent: Mutex::new(RecentEvents::new(REPEAT_WINDOW)),
        }
    }

    /// Records an event the binder's decisions produced.
    pub(crate) async fn record(&self, object: &ObjectReference, event: &sync::Event) {
        let kind = if event.warning { "Warning" } else { "Normal" };
        self.emit(object, kind, event.reason, &event.message).await;
    }

    /// Records a Normal event.
    pub async fn normal(&self, object: &ObjectReference, reason: &'static str, message: &str) {
        self.emit(object, "Normal", reason, message).await;
    }

    /// Records a Warning event.
    pub async fn warning(&self, object: &ObjectReference, reason: &'static str, message: &str) {
        self.emit(object, "Warning", reason, message).await;
    }

    async fn emit(
        &self,
        object: &ObjectReference,
        kind: &str,
        reason: &'static str,
        message: &str,
    ) {
        let key = (
            object.uid.clone().unwrap_or_default(),
            reason,
            message.to_string(),
        );
        let fresh = crate::lock(&self.recent).fresh(key, Instant::now());
        if !fresh {
            return;
        }
        // Events about cluster-scoped objects live in "default", as upstream puts them.
        let namespace = object.namespace.clone().unwrap_or_else(|| "default".into());
        let now = Time(jiff::Timestamp::now());
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", object.name.clone().unwrap_or_default())),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: object.clone(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(kind.into()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(EventSource {
                component: Some(COMPONENT.into()),
                host: None,
            }),
            reporting_component: Some(COMPONENT.into()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(error) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(%error, reason, "could not record an event");
        }
    }
}

/// What an event about a claim points at.
pub fn claim_reference(pvc: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        name: pvc.metadata.name.clone(),
        namespace: pvc.metadata.namespace.clone(),
        uid: pvc.metadata.uid.clone(),
        resource_version: pvc.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// What an event about a volume points at.
pub fn volume_reference(pv: &PersistentVolume) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolume".into()),
        name: pv.metadata.name.clone(),
        uid: pv.metadata.uid.clone(),
        resource_version: pv.metadata.resource_version.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uid: &str) -> EventKey {
        (uid.into(), "FailedBinding", "no volume".into())
    }

    #[test]
    fn an_event_repeats_only_after_the_window() {
        let start = Instant::now();
        let mut recent = RecentEvents::new(Duration::from_secs(60));
        assert!(recent.fresh(key("a"), start));
        assert!(!recent.fresh(key("a"), start + Duration::from_secs(59)));
        assert!(recent.fresh(key("b"), start), "another object");
        assert!(recent.fresh(key("a"), start + Duration::from_secs(60)));
    }

    #[test]
    fn expired_events_are_forgotten() {
        let start = Instant::now();
        let mut recent = RecentEvents::new(Duration::from_secs(60));
        for i in 0..RecentEvents::MIN_SWEEP {
            recent.fresh(key(&i.to_string()), start);
        }
        let later = start + Duration::from_secs(61);
        assert!(recent.fresh(key("new"), later));
        assert_eq!(recent.seen.len(), 1, "only the live entry is kept");
    }
}
