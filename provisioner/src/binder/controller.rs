//! The binder as a controller: reflectors keep PVs, PVCs and StorageClasses in
//! memory; after a change (coalesced) or a periodic resync, one pass rebuilds the
//! index, decides for every claim and volume with `sync`, and applies the
//! decisions concurrently with optimistic concurrency. A conflict just waits for
//! the next pass: every decision is recomputed from the current state.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, PersistentVolumeStatus};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::PostParams;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use super::event_queue::EventQueue;
use super::model::{Volume, VolumePhase, annotations};
use super::plan::{Step, plan};
use super::status::{bound_status, names, points_at, provisioner_annotations, unbound_status};
use super::sync::{ClaimAction, Classes, Event, VolumeAction};
use super::written::Written;
use crate::events::{EventRecorder, claim_reference};
use crate::leader::LeaseObserver;
use crate::{Metrics, Result, volumes};

/// A pass runs at least this often, to retry what failed without a new change.
const RESYNC: Duration = Duration::from_secs(15);
/// Changes arriving within this window share one pass.
const COALESCE: Duration = Duration::from_millis(20);
/// Bindings (and other steps) of one pass in flight at once. The API server commits
/// the writes queued at a time in one transaction and one fsync, so a pass takes about
/// (its sequential writes / this) fsyncs: with 32, a pass of 3,000 bindings took 36 s
/// while `/proc/pressure/io` showed the disk busy (`stowage bench up`, BENCHMARKS.md).
const WRITES_IN_FLIGHT: usize = 128;
/// While standing down, how often the other controller's Lease is read again
/// (kube-controller-manager's own retry period).
const STANDBY_POLL: Duration = Duration::from_secs(2);

pub struct Binder {
    client: Client,
    volumes: Store<PersistentVolume>,
    claims: Store<PersistentVolumeClaim>,
    classes: Store<StorageClass>,
    /// What this binder wrote and its watches have not brought back yet.
    written_volumes: Written<PersistentVolume>,
    written_claims: Written<PersistentVolumeClaim>,
    events: EventQueue,
    metrics: Metrics,
    /// The Lease of another binder (kube-controller-manager) to stand down for.
    deferral: Option<LeaseObserver>,
}

/// The binder's name in the write-conflict count.
const WRITER: &str = "binder";

/// How one step's writes ended.
enum Outcome {
    Done,
    /// The object changed since the pass read it (HTTP 409): the next pass decides again.
    Conflict,
    Failed,
}

/// What one pass decided and how its writes went, for its log line.
#[derive(Default)]
struct PassTally {
    binds: usize,
    claims: usize,
    volumes: usize,
    /// Conflicts of the bindings, of the other claim writes, of the other volume writes.
    bind_conflicts: usize,
    claim_conflicts: usize,
    volume_conflicts: usize,
    failed: usize,
}

impl PassTally {
    fn conflict(&mut self, step: &Step) {
        match step {
            Step::Bind(..) => self.bind_conflicts += 1,
            Step::Claim(..) => self.claim_conflicts += 1,
            Step::Volume(..) => self.volume_conflicts += 1,
        }
    }

    fn conflicts(&self) -> usize {
        self.bind_conflicts + self.claim_conflicts + self.volume_conflicts
    }
}

impl Binder {
    /// A binder over caches that have listed once.
    pub fn new(
        client: Client,
        stores: (
            Store<PersistentVolume>,
            Store<PersistentVolumeClaim>,
            Store<StorageClass>,
        ),
        metrics: Metrics,
    ) -> Self {
        let (volumes, claims, classes) = stores;
        Self {
            events: EventQueue::start(EventRecorder::new(client.clone())),
            client,
            volumes,
            claims,
            classes,
            written_volumes: Written::default(),
            written_claims: Written::default(),
            metrics,
            deferral: None,
        }
    }

    /// Stands down while the Lease `deferral` watches is held.
    pub fn defer_to(mut self, deferral: Option<LeaseObserver>) -> Self {
        self.deferral = deferral;
        self
    }

    /// Runs passes until `shutdown` completes; none while another binder leads.
    pub async fn run(
        mut self,
        mut changes: watch::Receiver<u64>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        tokio::pin!(shutdown);
        let mut standing_down = false;
        loop {
            changes.mark_unchanged();
            let wait = if self.other_leads(&mut standing_down).await {
                STANDBY_POLL
            } else {
                self.pass().await;
                RESYNC
            };
            tokio::select! {
                _ = changes.changed() => tokio::time::sleep(COALESCE).await,
                () = tokio::time::sleep(wait) => {}
                () = &mut shutdown => return Ok(()),
            }
        }
    }

    /// Whether another binder holds its Lease now; says so when that changes. A
    /// Lease that cannot be read does not stop binding: two binders converge.
    async fn other_leads(&mut self, standing_down: &mut bool) -> bool {
        let Some(deferral) = self.deferral.as_mut() else {
            return false;
        };
        let leads = deferral.held().await.unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot read the Lease the binder defers to; binding");
            false
        });
        if leads != *standing_down {
            if leads {
                tracing::info!(
                    "another controller holds the binding Lease: the binder stands down"
                );
            } else {
                tracing::info!("nobody holds the binding Lease: the binder binds");
            }
            *standing_down = leads;
        }
        self.metrics.binder_standing_down.set(i64::from(leads));
        leads
    }

    /// One level-triggered pass over every claim and volume.
    pub async fn pass(&self) {
        let started = std::time::Instant::now();
        let steps = self.plan();
        let pending = steps
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    Step::Claim(
                        _,
                        ClaimAction::Pending(_)
                            | ClaimAction::Provision
                            | ClaimAction::AssignClass(_)
                    )
                )
            })
            .count();
        let planned = started.elapsed();
        let mut tally = PassTally::default();
        for step in &steps {
            match step {
                Step::Bind(..) => tally.binds += 1,
                Step::Claim(..) => tally.claims += 1,
                Step::Volume(..) => tally.volumes += 1,
            }
        }
        let outcomes: Vec<(Step, Outcome)> = futures_util::stream::iter(steps)
            .map(|step| async move {
                let outcome = self.apply(&step).await;
                (step, outcome)
            })
            .buffer_unordered(WRITES_IN_FLIGHT)
            .collect()
            .await;
        for (step, outcome) in outcomes {
            match outcome {
                Outcome::Done => {}
                Outcome::Conflict => {
                    tally.conflict(&step);
                    self.metrics.write_conflict(WRITER);
                }
                Outcome::Failed => tally.failed += 1,
            }
        }
        self.metrics.pending_claims.set(pending as i64);
        let elapsed = started.elapsed();
        self.metrics.pass_seconds.observe(elapsed.as_secs_f64());
        tracing::debug!(
            binds = tally.binds,
            claims = tally.claims,
            volumes = tally.volumes,
            conflicts = tally.conflicts(),
            bind_conflicts = tally.bind_conflicts,
            claim_conflicts = tally.claim_conflicts,
            volume_conflicts = tally.volume_conflicts,
            conflicts_total = self.metrics.write_conflicts_of(WRITER),
            failed = tally.failed,
            planned_ms = planned.as_millis() as u64,
            total_ms = elapsed.as_millis() as u64,
            "binder pass"
        );
    }

    /// The pass's decisions from the caches as they are now, with the binder's own
    /// writes the caches have not caught up with.
    fn plan(&self) -> Vec<Step> {
        let classes = Classes::from_api(self.classes.state().iter().map(AsRef::as_ref));
        plan(
            self.written_volumes.over(self.volumes.state()),
            self.written_claims.over(self.claims.state()),
            &classes,
        )
    }

    async fn apply(&self, step: &Step) -> Outcome {
        let (what, result) = match step {
            Step::Bind(pv, pvc) => (pvc.name_any(), self.bind(pv, pvc).await),
            Step::Claim(pvc, action) => (pvc.name_any(), self.settle_claim(pvc, action).await),
            Step::Volume(pv, volume, action) => (
                pv.name_any(),
                self.settle_volume(pv, volume, action.clone()).await,
            ),
        };
        match result {
            Ok(()) => Outcome::Done,
            Err(error) => {
                tracing::debug!(object = %what, %error, "update deferred to the next pass");
                if error.is_conflict() {
                    Outcome::Conflict
                } else {
                    Outcome::Failed
                }
            }
        }
    }

    fn volumes_api(&self) -> Api<PersistentVolume> {
        Api::all(self.client.clone())
    }

    fn claims_api(&self, namespace: &str) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Both halves of a binding, volume first, as upstream writes them; each write
    /// is skipped when already true, so a pass after a crash finishes the rest.
    async fn bind(&self, pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> Result<()> {
        let pv = self.bind_volume(pv, pvc).await?;
        self.bind_claim(&pv, pvc).await
    }

    async fn bind_volume(
        &self,
        pv: &PersistentVolume,
        pvc: &PersistentVolumeClaim,
    ) -> Result<PersistentVolume> {
        let api = self.volumes_api();
        let mut pv = pv.clone();
        if !points_at(&pv, pvc) {
            let spec = pv.spec.get_or_insert_default();
            let by_controller = spec.claim_ref.is_none();
            spec.claim_ref = Some(claim_reference(pvc));
            if by_controller {
                pv.annotations_mut()
                    .insert(annotations::BOUND_BY_CONTROLLER.into(), "yes".into());
            }
            pv = api
                .replace(&pv.name_any(), &PostParams::default(), &pv)
                .await?;
            self.written_volumes.record(pv.clone());
        }
        if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
            pv.status = Some(PersistentVolumeStatus {
                phase: Some("Bound".into()),
                ..Default::default()
            });
            pv = api
                .replace_status(&pv.name_any(), &PostParams::default(), &pv)
                .await?;
            self.written_volumes.record(pv.clone());
        }
        Ok(pv)
    }

    async fn bind_claim(&self, pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> Result<()> {
        let namespace = pvc.namespace().unwrap_or_default();
        let api = self.claims_api(&namespace);
        let mut pvc = pvc.clone();
        let volume_name = pv.name_any();
        if !names(&pvc, pv) {
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
            self.written_claims.record(pvc.clone());
        }
        let becoming_bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound");
        if let Some(status) = bound_status(&pvc, pv) {
            pvc.status = Some(status);
            let written = api
                .replace_status(&pvc.name_any(), &PostParams::default(), &pvc)
                .await?;
            self.written_claims.record(written);
        }
        if becoming_bound {
            self.metrics.bindings.inc();
            self.events
                .record(
                    claim_reference(&pvc),
                    Event::normal("Bound", format!("Bound to volume {volume_name}")),
                )
                .await;
        }
        Ok(())
    }

    /// A claim that is not being bound: Pending or Lost, with its event; or one
    /// given the default class.
    async fn settle_claim(&self, pvc: &PersistentVolumeClaim, action: &ClaimAction) -> Result<()> {
        let (phase, event) = match action {
            ClaimAction::Pending(event) => ("Pending", event.as_ref()),
            ClaimAction::Lost(event) => ("Lost", Some(event)),
            ClaimAction::AssignClass(class) => return self.assign_class(pvc, class).await,
            ClaimAction::Provision => return self.name_provisioner(pvc).await,
            ClaimAction::Bind { .. } => return Ok(()),
        };
        if let Some(event) = event {
            self.events
                .record(claim_reference(pvc), event.clone())
                .await;
        }
        let api = self.claims_api(&pvc.namespace().unwrap_or_default());
        if let Some(status) = unbound_status(pvc, phase) {
            let mut pvc = pvc.clone();
            pvc.status = Some(status);
            let written = api
                .replace_status(&pvc.name_any(), &PostParams::default(), &pvc)
                .await?;
            self.written_claims.record(written);
        }
        Ok(())
    }

    /// Says which provisioner is to make the claim's volume (the external
    /// provisioner of that name waits for this), as kube-controller-manager does.
    async fn name_provisioner(&self, pvc: &PersistentVolumeClaim) -> Result<()> {
        let Some(class) = super::model::claim_class(pvc).and_then(|name| {
            self.classes
                .get(&kube::runtime::reflector::ObjectRef::new(&name))
        }) else {
            return Ok(());
        };
        let Some(annotations) = provisioner_annotations(pvc, &class.provisioner) else {
            return Ok(());
        };
        let mut pvc = pvc.clone();
        pvc.metadata.annotations = Some(annotations);
        let api = self.claims_api(&pvc.namespace().unwrap_or_default());
        let written = api
            .replace(&pvc.name_any(), &PostParams::default(), &pvc)
            .await?;
        self.written_claims.record(written);
        Ok(())
    }

    /// Upstream's retroactive default class: a claim made while no class was the
    /// default gets the one that is now; its next sync binds or provisions it.
    async fn assign_class(&self, pvc: &PersistentVolumeClaim, class: &str) -> Result<()> {
        let mut pvc = pvc.clone();
        pvc.spec.get_or_insert_default().storage_class_name = Some(class.to_string());
        let api = self.claims_api(&pvc.namespace().unwrap_or_default());
        let written = api
            .replace(&pvc.name_any(), &PostParams::default(), &pvc)
            .await?;
        self.written_claims.record(written);
        tracing::info!(claim = %pvc.name_any(), class, "assigned the default class");
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
            VolumeAction::SetPhase(phase) => {
                let written = volumes::set_phase(&self.volumes_api(), pv, phase, None).await?;
                self.written_volumes.record(written);
                Ok(())
            }
            VolumeAction::Unbind => {
                let written = volumes::unbind(&self.volumes_api(), pv).await?;
                self.written_volumes.record(written);
                Ok(())
            }
            VolumeAction::Reclaim(_) => self.release(pv, volume).await,
        }
    }

    /// The claim is gone: Released. The reclaimer (`crate::reclaim`) carries out
    /// Delete and Recycle from there; Retain stops here.
    async fn release(&self, pv: &PersistentVolume, volume: &Volume) -> Result<()> {
        if matches!(volume.phase, VolumePhase::Released | VolumePhase::Failed) {
            return Ok(());
        }
        let written =
            volumes::set_phase(&self.volumes_api(), pv, VolumePhase::Released, None).await?;
        self.written_volumes.record(written);
        Ok(())
    }
}
