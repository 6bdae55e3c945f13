//! Events on claims and volumes, as core/v1 Events (what `kubectl describe` reads).

use std::collections::HashSet;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{
    Event, EventSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::binder::sync;

const COMPONENT: &str = "stowage-provisioner";

pub struct EventRecorder {
    client: Client,
    /// (object uid, reason, message) already recorded by this process: a pass
    /// repeats its decisions, the events should not repeat with them.
    recorded: Mutex<HashSet<(String, &'static str, String)>>,
}

impl EventRecorder {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            recorded: Mutex::default(),
        }
    }

    pub async fn record(&self, object: &ObjectReference, event: &sync::Event) {
        let kind = if event.warning { "Warning" } else { "Normal" };
        self.emit(object, kind, event.reason, &event.message).await;
    }

    pub async fn normal(&self, object: &ObjectReference, reason: &'static str, message: &str) {
        self.emit(object, "Normal", reason, message).await;
    }

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
        let fresh = self
            .recorded
            .lock()
            .map(|mut seen| seen.insert(key))
            .unwrap_or(true);
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
