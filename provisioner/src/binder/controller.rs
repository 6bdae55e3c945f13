//! The binder as a controller: reflectors keep PVs, PVCs and StorageClasses in
//! memory; after a change (coalesced) or a periodic resync, one pass rebuilds the
//! index, decides for every claim and volume with `sync`, and applies the
//! decisions with optimistic concurrency. A conflict just waits for the next pass:
//! every decision is recomputed from the current state.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus,
    PersistentVolumeStatus,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::PostParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::Notify;

use super::events::EventRecorder;
use super::model::{Claim, Volume, VolumePhase, annotations};
use super::sync::{ClaimAction, ClassInfo, VolumeAction, sync_claim, sync_volume};
use super::{ReclaimPolicy, VolumeIndex};
use crate::error::{Error, Result};

/// A pass runs at least this often, to retry what failed without a new change.
const RESYNC: Duration = Duration::from_secs(15);
/// Changes arriving within this window share one pass.
const COALESCE: Duration = Duration::from_millis(20);

struct Caches {
    volumes: Store<PersistentVolume>,
    claims: Store<PersistentVolumeClaim>,
    classes: Store<StorageClass>,
}

pub struct Binder {
    client: Client,
    caches: Caches,
    events: EventRecorder,
}

impl Binder {
    /// Starts the reflectors and waits until each has listed once.
    pub async fn start(client: Client) -> Result<(Self, Arc<Notify>)> {
        let changed = Arc::new(Notify::new());
        let volumes = reflect(
            Api::<PersistentVolume>::all(client.clone()),
            changed.clone(),
        );
        let claims = reflect(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            changed.clone(),
        );
        let classes = reflect(Api::<StorageClass>::all(client.clone()), changed.clone());
        for ready in [
            volumes.wait_until_ready().await,
            claims.wait_until_ready().await,
            classes.wait_until_ready().await,
        ] {
            ready.map_err(|_| Error::CacheClosed)?;
        }
        let binder = Self {
            events: EventRecorder::new(client.clone()),
            client,
            caches: Caches {
                volumes,
                claims,
                classes,
            },
        };
        Ok((binder, changed))
    }

    /// Runs passes until `shutdown` completes.
    pub async fn run(client: Client, shutdown: impl Future<Output = ()>) -> Result<()> {
        let (binder, changed) = Self::start(client).await?;
        tokio::pin!(shutdown);
        loop {
            binder.pass().await;
            tokio::select! {
                () = changed.notified() => tokio::time::sleep(COALESCE).await,
                () = tokio::time::sleep(RESYNC) => {}
                () = &mut shutdown => return Ok(()),
            }
        }
    }

    /// One level-triggered pass over every claim, then every volume.
    pub async fn pass(&self) {
        let mut index = VolumeIndex::new();
        let volumes: HashMap<String, Arc<PersistentVolume>> = self
            .caches
            .volumes
            .state()
            .into_iter()
            .map(|pv| (pv.name_any(), pv))
            .collect();
        for pv in volumes.values() {
            index.upsert(Volume::from_api(pv));
        }
        let classes = self.class_infos();
        let mut claims = self.caches.claims.state();
        // Oldest first, as upstream's queue roughly does, and deterministic.
        claims.sort_by_key(|c| {
            (
                c.metadata.creation_timestamp.clone().map(|t| t.0),
                c.namespace(),
                c.name_any(),
            )
        });
        let mut touched = HashSet::new();
        for pvc in &claims {
            let claim = Claim::from_api(pvc);
            let class = classes.get(&claim.class);
            let action = sync_claim(&claim, class, &index);
            tracing::trace!(claim = %claim.name, ?action, "claim decided");
            if let ClaimAction::Bind { volume } = &action
                && let Some(pv) = volumes.get(volume)
            {
                touched.insert(volume.clone());
                match self.bind(pv, pvc).await {
                    Ok(bound) => index.upsert(Volume::from_api(&bound)),
                    Err(error) => {
                        tracing::debug!(claim = %claim.name, %volume, %error, "bind deferred")
                    }
                }
                continue;
            }
            if let Err(error) = self.settle_claim(pvc, &action).await {
                tracing::debug!(claim = %claim.name, %error, "claim update deferred");
            }
        }
        let by_claim: HashMap<(String, String), &Arc<PersistentVolumeClaim>> = claims
            .iter()
            .map(|c| ((c.namespace().unwrap_or_default(), c.name_any()), c))
            .collect();
        for (name, pv) in &volumes {
            if touched.contains(name) {
                continue;
            }
            let volume = Volume::from_api(pv);
            let claim = volume
                .claim_ref
                .as_ref()
                .and_then(|r| by_claim.get(&(r.namespace.clone(), r.name.clone())))
                .map(|c| Claim::from_api(c));
            let action = sync_volume(&volume, claim.as_ref());
            tracing::trace!(volume = %name, ?action, "volume decided");
            if let Err(error) = self.settle_volume(pv, &volume, action).await {
                tracing::debug!(volume = %name, %error, "volume update deferred");
            }
        }
    }

    fn class_infos(&self) -> HashMap<String, ClassInfo> {
        self.caches
            .classes
            .state()
            .iter()
            .map(|class| {
                let info = ClassInfo {
                    wait_for_first_consumer: class.volume_binding_mode.as_deref()
                        == Some("WaitForFirstConsumer"),
                    provisioner: class.provisioner.clone(),
                };
                (class.name_any(), info)
            })
            .collect()
    }

    fn volumes_api(&self) -> Api<PersistentVolume> {
        Api::all(self.client.clone())
    }

    fn claims_api(&self, namespace: &str) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Both halves of a binding, volume first, as upstream writes them; each write
    /// is skipped when already true, so a pass after a crash finishes the rest.
    async fn bind(
        &self,
        pv: &PersistentVolume,
        pvc: &PersistentVolumeClaim,
    ) -> Result<PersistentVolume> {
        let pv = self.bind_volume(pv, pvc).await?;
        self.bind_claim(&pv, pvc).await?;
        Ok(pv)
    }

    async fn bind_volume(
        &self,
        pv: &PersistentVolume,
        pvc: &PersistentVolumeClaim,
    ) -> Result<PersistentVolume> {
        let api = self.volumes_api();
        let mut pv = pv.clone();
        let spec = pv.spec.get_or_insert_default();
        let points_here = spec.claim_ref.as_ref().is_some_and(|r| {
            r.name == pvc.metadata.name
                && r.namespace == pvc.metadata.namespace
                && r.uid == pvc.metadata.uid
        });
        if !points_here {
            let by_controller = spec.claim_ref.is_none();
            spec.claim_ref = Some(claim_reference(pvc));
            if by_controller {
                pv.annotations_mut()
                    .insert(annotations::BOUND_BY_CONTROLLER.into(), "yes".into());
            }
            pv = api
                .replace(&pv.name_any(), &PostParams::default(), &pv)
                .await?;
        }
        if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
            pv.status = Some(PersistentVolumeStatus {
                phase: Some("Bound".into()),
                ..Default::default()
            });
            pv = api
                .replace_status(&pv.name_any(), &PostParams::default(), &pv)
                .await?;
        }
        Ok(pv)
    }

    async fn bind_claim(&self, pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> Result<()> {
        let namespace = pvc.namespace().unwrap_or_default();
        let api = self.claims_api(&namespace);
        let mut pvc = pvc.clone();
        let volume_name = pv.name_any();
        let spec = pvc.spec.get_or_insert_default();
        let named = spec.volume_name.as_deref() == Some(volume_name.as_str());
        let completed = pvc.annotations().contains_key(annotations::BIND_COMPLETED);
        if !named || !completed {
            let spec = pvc.spec.get_or_insert_default();
            let by_controller = spec.volume_name.as_deref().is_none_or(str::is_empty);
            spec.volume_name = Some(volume_name.clone());
            let annotations_map = pvc.annotations_mut();
            if by_controller {
                annotations_map.insert(annotations::BOUND_BY_CONTROLLER.into(), "yes".into());
            }
            annotations_map.insert(annotations::BIND_COMPLETED.into(), "yes".into());
            pvc = api
                .replace(&pvc.name_any(), &PostParams::default(), &pvc)
                .await?;
        }
        let volume_spec = pv.spec.clone().unwrap_or_default();
        let wanted = PersistentVolumeClaimStatus {
            phase: Some("Bound".into()),
            access_modes: volume_spec.access_modes.clone(),
            capacity: volume_spec.capacity.clone(),
            ..Default::default()
        };
        let current = pvc.status.clone().unwrap_or_default();
        if (
            current.phase.as_ref(),
            current.access_modes.as_ref(),
            current.capacity.as_ref(),
        ) != (
            wanted.phase.as_ref(),
            wanted.access_modes.as_ref(),
            wanted.capacity.as_ref(),
        ) {
            let status = pvc.status.get_or_insert_default();
            status.phase = wanted.phase;
            status.access_modes = wanted.access_modes;
            status.capacity = wanted.capacity;
            api.replace_status(&pvc.name_any(), &PostParams::default(), &pvc)
                .await?;
            self.events
                .normal(
                    &claim_reference(&pvc),
                    "Bound",
                    &format!("Bound to volume {volume_name}"),
                )
                .await;
        }
        Ok(())
    }

    /// A claim that is not being bound: Pending or Lost, with its event.
    async fn settle_claim(&self, pvc: &PersistentVolumeClaim, action: &ClaimAction) -> Result<()> {
        let (phase, event) = match action {
            ClaimAction::Pending(event) => ("Pending", event.as_ref()),
            ClaimAction::Lost(event) => ("Lost", Some(event)),
            ClaimAction::Provision | ClaimAction::Bind { .. } => return Ok(()),
        };
        if let Some(event) = event {
            self.events.record(&claim_reference(pvc), event).await;
        }
        if pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) {
            return Ok(());
        }
        let mut pvc = pvc.clone();
        pvc.status.get_or_insert_default().phase = Some(phase.into());
        let api = self.claims_api(&pvc.namespace().unwrap_or_default());
        api.replace_status(&pvc.name_any(), &PostParams::default(), &pvc)
            .await?;
        Ok(())
    }

    async fn settle_volume(
        &self,
        pv: &PersistentVolume,
        volume: &Volume,
        action: VolumeAction,
    ) -> Result<()> {
        match action {
            VolumeAction::Nothing => Ok(()),
            VolumeAction::SetPhase(phase) => self.set_phase(pv, phase, None).await,
            VolumeAction::Unbind => self.unbind(pv, volume).await,
            VolumeAction::Reclaim(policy) => self.release(pv, volume, policy).await,
        }
    }

    async fn set_phase(
        &self,
        pv: &PersistentVolume,
        phase: VolumePhase,
        reason: Option<(&str, &str)>,
    ) -> Result<()> {
        let mut pv = pv.clone();
        pv.status = Some(PersistentVolumeStatus {
            phase: Some(phase_name(phase).into()),
            reason: reason.map(|(r, _)| r.to_string()),
            message: reason.map(|(_, m)| m.to_string()),
            ..Default::default()
        });
        self.volumes_api()
            .replace_status(&pv.name_any(), &PostParams::default(), &pv)
            .await?;
        Ok(())
    }

    /// Upstream's unbindVolume: a binding we made is removed; a user's pre-binding
    /// keeps its name and namespace and loses only the uid.
    async fn unbind(&self, pv: &PersistentVolume, volume: &Volume) -> Result<()> {
        let mut pv = pv.clone();
        let spec = pv.spec.get_or_insert_default();
        if volume.bound_by_controller {
            spec.claim_ref = None;
            pv.annotations_mut()
                .remove(annotations::BOUND_BY_CONTROLLER);
        } else if let Some(claim_ref) = spec.claim_ref.as_mut() {
            claim_ref.uid = None;
        }
        let pv = self
            .volumes_api()
            .replace(&pv.name_any(), &PostParams::default(), &pv)
            .await?;
        self.set_phase(&pv, VolumePhase::Available, None).await
    }

    /// The claim is gone: Released first, then the policy. Retain stops there.
    async fn release(
        &self,
        pv: &PersistentVolume,
        volume: &Volume,
        policy: ReclaimPolicy,
    ) -> Result<()> {
        if !matches!(volume.phase, VolumePhase::Released | VolumePhase::Failed) {
            return self.set_phase(pv, VolumePhase::Released, None).await;
        }
        match policy {
            ReclaimPolicy::Retain => Ok(()),
            // Delete and Recycle are carried out by the reclaimer (next step of this issue).
            ReclaimPolicy::Delete | ReclaimPolicy::Recycle => Ok(()),
        }
    }
}

fn phase_name(phase: VolumePhase) -> &'static str {
    match phase {
        VolumePhase::Pending => "Pending",
        VolumePhase::Available => "Available",
        VolumePhase::Bound => "Bound",
        VolumePhase::Released => "Released",
        VolumePhase::Failed => "Failed",
    }
}

fn claim_reference(pvc: &PersistentVolumeClaim) -> ObjectReference {
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

/// A reflector whose every event pokes `changed`; returns its store.
fn reflect<K>(api: Api<K>, changed: Arc<Notify>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(error) = event {
                tracing::warn!(%error, "watch failed; retrying");
            }
            changed.notify_one();
        }
    });
    reader
}
