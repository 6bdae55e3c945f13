//! Dynamic provisioning, as external-provisioner does it: for an unbound claim of a
//! class whose provisioner is `csi.stowage.io`, CreateVolume through CSI and a
//! PersistentVolume pre-bound to the claim; the binder then binds the pair.
//!
//! An instance acts on a claim only once the binder has named this driver in its
//! storage-provisioner annotation (`duty`), as external-provisioner waits for
//! kube-controller-manager's. NFS classes belong to the central instance. Local
//! volumes belong to the instance of their node: the selected node of a
//! WaitForFirstConsumer claim, or for an Immediate claim the node instance that
//! first writes its own name as the selected node (an optimistic write: exactly one
//! wins).

mod capacities;
mod duty;
pub(crate) mod error;
pub(crate) mod expand;
pub mod request;
pub mod secrets;
pub(crate) mod snapshot;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::{
    CapacityRange, ControllerExpandVolumeRequest, VolumeContentSource, volume_content_source,
};
use driver_contract::DRIVER_NAME;
use driver_contract::ids::{Location, SnapshotId};
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use kube::api::PostParams;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use tokio::sync::Semaphore;

use self::capacities::Capacities;
use self::duty::{Duty, duty};
use self::error::{ExpandError, ProvisionError, SourceError};
use self::request::{DataSource, create_request, persistent_volume, volume_name};
use self::secrets::SecretRefs;
use self::snapshot::SnapshotName;
use crate::Context;
use crate::binder::model::{annotations, claim_class};
use crate::capacity;
use crate::events::{EventRecorder, claim_reference};
use crate::lock;
use crate::reclaim::plan::pinned_node;
use crate::steps::{Stepped, Steps};
use crate::{Controller, Result, Scope};

/// Claims worked on at once. Each is a few API writes and a CreateVolume, and the
/// API server commits the writes queued at a time with one fsync, so enough must be
/// in flight to fill its groups; with no bound, 10,000 claims created at once started
/// 10,000 tasks, whose requests queued in the API server ahead of the binder's
/// (`stowage bench up`).
const WORK_IN_FLIGHT: usize = 128;

/// The provisioner's name in the write-conflict count.
const WRITER: &str = "provisioner";

/// One piece of work a pass starts.
enum Work {
    /// CreateVolume and the PersistentVolume, on this node when given.
    Provision(Option<String>),
    /// Claim an Immediate local claim for this node.
    Take(String),
    /// Grow the volume to this many bytes.
    Expand(Arc<PersistentVolume>, u128),
}

pub(crate) struct Provisioner {
    cx: Context,
    events: Arc<EventRecorder>,
    /// The claims worked on, keyed by uid (`expand:<uid>` for growth), and their backoff.
    steps: Steps,
    /// One permit per piece of work running ([`WORK_IN_FLIGHT`]).
    permits: Arc<Semaphore>,
    /// This node's room, for a node instance; the central one places nothing.
    capacities: Option<Capacities>,
    /// Claims that failed for good, with the (claim, class) versions they failed at:
    /// retried only when either changes.
    refused: Mutex<HashMap<String, (String, String)>>,
}

impl Provisioner {
    pub fn new(cx: &Context) -> Arc<Self> {
        let places = matches!(cx.config.scope, Scope::Node(_))
            && cx.config.controllers.enabled(Controller::Provisioner);
        Arc::new(Self {
            capacities: places.then(|| Capacities::watch(cx.client.clone())),
            permits: Arc::new(Semaphore::new(WORK_IN_FLIGHT)),
            events: Arc::new(EventRecorder::new(cx.client.clone())),
            cx: cx.clone(),
            steps: Steps::new("provisioning"),
            refused: Mutex::default(),
        })
    }

    /// Starts provisioning for every claim this instance owns that needs a volume,
    /// as many as there are permits; a finished one starts the next pass.
    fn start_work(self: &Arc<Self>) {
        let classes: HashMap<String, Arc<StorageClass>> = self
            .cx
            .classes
            .state()
            .into_iter()
            .filter(|c| c.provisioner == DRIVER_NAME)
            .map(|c| (c.name_any(), c))
            .collect();
        for pvc in self.cx.claims.state() {
            let Some((key, class, work)) = self.work_for(&pvc, &classes) else {
                continue;
            };
            if !self.steps.ready(&key) {
                continue;
            }
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                break;
            };
            self.steps.begin(&key);
            let this = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let outcome = match work {
                    Work::Provision(node) => this.provision(&pvc, &class, node.as_deref()).await,
                    Work::Take(node) => this.take_and_provision(&pvc, &class, &node).await,
                    Work::Expand(pv, bytes) => this.expand(&pvc, &pv, bytes, &key).await,
                };
                if let Err(error) = outcome {
                    this.deferred(&pvc, &error);
                }
                this.steps.end(&key);
            });
        }
    }

    /// A claim's work stopped at an API error; a later pass tries again. Conflicts
    /// are counted: each is a write lost to another writer of the same object.
    fn deferred(&self, pvc: &PersistentVolumeClaim, error: &crate::Error) {
        if !error.is_conflict() {
            tracing::debug!(claim = %pvc.name_any(), %error, "deferred");
            return;
        }
        let metrics = &self.cx.config.metrics;
        metrics.write_conflict(WRITER);
        tracing::debug!(
            claim = %pvc.name_any(),
            conflicts_total = metrics.write_conflicts_of(WRITER),
            "write conflict: the object changed since it was read; deferred"
        );
    }

    /// What this instance should do about a claim, keyed for backoff and in-flight.
    fn work_for(
        &self,
        pvc: &PersistentVolumeClaim,
        classes: &HashMap<String, Arc<StorageClass>>,
    ) -> Option<(String, Arc<StorageClass>, Work)> {
        let uid = pvc.uid().unwrap_or_default();
        if let Some(class) = wants_volume(pvc).and_then(|name| classes.get(&name)) {
            if !self.cx.config.controllers.enabled(Controller::Provisioner) {
                return None;
            }
            let exists = self
                .cx
                .volumes
                .get(&ObjectRef::new(&volume_name(pvc)))
                .is_some();
            if exists || self.is_refused(&uid, pvc, class) {
                return None;
            }
            let work = match duty(&self.cx.config.scope, pvc, class, || {
                self.clone_source_node(pvc)
            })? {
                Duty::Provision(node) => Work::Provision(node),
                Duty::Take(node) => Work::Take(node),
            };
            return Some((uid, class.clone(), work));
        }
        let class = classes.get(&claim_class(pvc)?)?;
        if class.allow_volume_expansion != Some(true)
            || !self.cx.config.controllers.enabled(Controller::Resizer)
        {
            return None;
        }
        let volume_name = pvc.spec.as_ref()?.volume_name.clone()?;
        let pv = self.cx.volumes.get(&ObjectRef::new(&volume_name))?;
        pv.spec.as_ref()?.csi.as_ref()?;
        // A local volume's PV names its node; one that names none is the central instance's.
        let mine = match (pinned_node(&pv), &self.cx.config.scope) {
            (Some(node), Scope::Node(me)) => node == *me,
            (None, Scope::Central) => true,
            _ => false,
        };
        if !mine {
            return None;
        }
        match expand::resize(pvc, &pv) {
            expand::Resize::Grow(bytes) => Some((
                format!("expand:{uid}"),
                class.clone(),
                Work::Expand(pv, bytes),
            )),
            expand::Resize::Shrink { requested, has } => {
                let events = self.events.clone();
                let reference = claim_reference(pvc);
                tokio::spawn(async move {
                    let message = format!(
                        "shrinking a volume is not supported: requested {requested}, the claim has {has}"
                    );
                    events
                        .warning(&reference, "VolumeResizeFailed", &message)
                        .await;
                });
                None
            }
            expand::Resize::Nothing => None,
        }
    }

    fn is_refused(&self, uid: &str, pvc: &PersistentVolumeClaim, class: &StorageClass) -> bool {
        lock(&self.refused)
            .get(uid)
            .is_some_and(|(claim_version, class_version)| {
                pvc.resource_version().as_deref() == Some(claim_version.as_str())
                    && class.resource_version().as_deref() == Some(class_version.as_str())
            })
    }

    /// The node of a clone's local source volume: only that node can fill the clone.
    fn clone_source_node(&self, pvc: &PersistentVolumeClaim) -> Option<String> {
        let Some(DataSource::Claim(source)) = request::data_source(pvc) else {
            return None;
        };
        let namespace = pvc.namespace().unwrap_or_default();
        let origin = self
            .cx
            .claims
            .get(&ObjectRef::new(&source).within(&namespace))?;
        let volume = origin.spec.as_ref()?.volume_name.as_deref()?;
        let pv = self.cx.volumes.get(&ObjectRef::new(volume))?;
        let ours = pv.spec.as_ref()?.csi.as_ref()?.driver == DRIVER_NAME;
        ours.then(|| pinned_node(&pv)).flatten()
    }

    /// Claims an Immediate local claim for this node and, once it is this node's,
    /// provisions it at once: the write that took it is what makes it this node's alone.
    async fn take_and_provision(
        &self,
        pvc: &PersistentVolumeClaim,
        class: &StorageClass,
        node: &str,
    ) -> Result<()> {
        match self.take(pvc, node).await? {
            Some(taken) => self.provision(&taken, class, Some(node)).await,
            None => Ok(()),
        }
    }

    /// Why `node` has no room for the claim, from the watched capacities (or a LIST
    /// where there are none), or `None` when it fits.
    async fn capacity_refusal(
        &self,
        pvc: &PersistentVolumeClaim,
        class: &str,
        node: &str,
    ) -> Option<capacity::room::NoRoom> {
        match &self.capacities {
            Some(capacities) => capacities.refusal(pvc, class, node).await,
            None => capacity::refusal_for(&self.cx.client, pvc, class, node).await,
        }
    }

    /// Claims an Immediate local claim for this node: the claim as written when this
    /// node took it, `None` when it is left for another node. A restore from a local
    /// snapshot is taken only by the snapshot's node.
    async fn take(
        &self,
        pvc: &PersistentVolumeClaim,
        node: &str,
    ) -> Result<Option<PersistentVolumeClaim>> {
        if let Some(why) = self.capacity_refusal(pvc, &class_of(pvc), node).await {
            // Left for a node with room; this one looks again after a backoff.
            self.steps
                .backoff()
                .failed(&pvc.uid().unwrap_or_default(), Instant::now());
            let reference = claim_reference(pvc);
            self.events
                .warning(
                    &reference,
                    capacity::room::NOT_ENOUGH_CAPACITY,
                    &why.to_string(),
                )
                .await;
            return Ok(None);
        }
        if let Some(DataSource::Snapshot(name)) = request::data_source(pvc) {
            let handle = match self.snapshot_handle(pvc, name).await {
                Ok(handle) => handle,
                Err(error) => {
                    let error = ProvisionError::Source(error.into());
                    return self.retry(pvc, &error).await.map(|()| None);
                }
            };
            if let Some(SnapshotId {
                location: Location::Local { node: holder },
                ..
            }) = SnapshotId::parse(&handle)
                && holder != node
            {
                // Not ours: look again only after a backoff, until its node takes it.
                self.steps
                    .backoff()
                    .failed(&pvc.uid().unwrap_or_default(), Instant::now());
                return Ok(None);
            }
        }
        let mut pvc = pvc.clone();
        pvc.annotations_mut()
            .insert(annotations::SELECTED_NODE.into(), node.into());
        let taken = self
            .claims_api(&pvc)
            .replace(&pvc.name_any(), &PostParams::default(), &pvc)
            .await?;
        tracing::info!(claim = %pvc.name_any(), node, "took an Immediate local claim");
        Ok(Some(taken))
    }

    /// Makes the claim's volume; a failure is retried after a backoff, or, when
    /// it is final, once the claim or class changes.
    async fn provision(
        &self,
        pvc: &PersistentVolumeClaim,
        class: &StorageClass,
        node: Option<&str>,
    ) -> Result<()> {
        let started = Instant::now();
        let name = match self.make_volume(pvc, class, node).await {
            Ok(name) => name,
            Err(error) if error.is_final() => return self.refuse(pvc, class, &error).await,
            Err(error) => return self.retry(pvc, &error).await,
        };
        self.steps
            .backoff()
            .succeeded(&pvc.uid().unwrap_or_default());
        self.cx
            .config
            .metrics
            .provisioned("success", started.elapsed());
        self.events
            .normal(
                &claim_reference(pvc),
                "ProvisioningSucceeded",
                &format!("Successfully provisioned volume {name}"),
            )
            .await;
        tracing::info!(claim = %pvc.name_any(), volume = %name, "provisioned");
        Ok(())
    }

    /// CreateVolume and the PersistentVolume (a 409 counts as done): the volume's
    /// name, or why it was not made.
    async fn make_volume(
        &self,
        pvc: &PersistentVolumeClaim,
        class: &StorageClass,
        node: Option<&str>,
    ) -> std::result::Result<String, ProvisionError> {
        let name = volume_name(pvc);
        let source = self.content_source(pvc).await?;
        if let Some(node) = node
            && let Some(why) = self.capacity_refusal(pvc, &class.name_any(), node).await
        {
            return Err(ProvisionError::NoRoom(why));
        }
        let parameters = class.parameters.clone().unwrap_or_default();
        let mut request = create_request(pvc, class, node, source)?;
        let secret_refs =
            SecretRefs::resolve(&parameters, pvc, &name).map_err(request::Unprovisionable::from)?;
        if let Some(reference) = &secret_refs.provisioner {
            request.secrets = secrets::fetch(&self.cx.client, reference).await?;
        }
        self.events
            .normal(
                &claim_reference(pvc),
                "Provisioning",
                &format!(
                    "External provisioner is provisioning volume for claim \"{}/{}\"",
                    pvc.namespace().unwrap_or_default(),
                    pvc.name_any()
                ),
            )
            .await;
        let channel = self
            .cx
            .config
            .csi
            .clone()
            .ok_or(ProvisionError::NoCsiEndpoint)?;
        let volume = ControllerClient::new(channel)
            .create_volume(request)
            .await
            .map_err(ProvisionError::from_create_volume)?
            .into_inner()
            .volume
            .unwrap_or_default();
        let pv = persistent_volume(pvc, class, &volume, &secret_refs);
        let api: Api<PersistentVolume> = Api::all(self.cx.client.clone());
        match api.create(&PostParams::default(), &pv).await {
            Ok(_) => Ok(name),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(name),
            Err(error) => Err(ProvisionError::CreatePv { name, error }),
        }
    }

    /// ControllerExpandVolume, then the volume's capacity, then the claim's status.
    async fn expand(
        &self,
        pvc: &PersistentVolumeClaim,
        pv: &PersistentVolume,
        bytes: u128,
        key: &str,
    ) -> Result<()> {
        let reference = claim_reference(pvc);
        let name = pv.name_any();
        self.events
            .normal(
                &reference,
                "Resizing",
                &format!("External resizer is resizing volume {name}"),
            )
            .await;
        let Some(channel) = self.cx.config.csi.clone() else {
            return Ok(());
        };
        let expand_secret = pv
            .spec
            .as_ref()
            .and_then(|s| s.csi.as_ref())
            .and_then(|c| c.controller_expand_secret_ref.clone());
        let secrets = match &expand_secret {
            Some(reference) => secrets::fetch(&self.cx.client, reference).await,
            None => Ok(Default::default()),
        };
        let secrets = match secrets {
            Ok(secrets) => secrets,
            Err(error) => {
                return self
                    .resize_failed(&reference, &name, key, &error.into())
                    .await;
            }
        };
        let request = ControllerExpandVolumeRequest {
            secrets,
            volume_id: pv
                .spec
                .as_ref()
                .and_then(|s| s.csi.as_ref())
                .map(|c| c.volume_handle.clone())
                .unwrap_or_default(),
            capacity_range: Some(CapacityRange {
                required_bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
                limit_bytes: 0,
            }),
            volume_capability: request::capability(pvc).ok(),
        };
        let answer = match ControllerClient::new(channel)
            .controller_expand_volume(request)
            .await
        {
            Ok(answer) => answer.into_inner(),
            Err(status) => {
                return self
                    .resize_failed(&reference, &name, key, &ExpandError::Csi(status))
                    .await;
            }
        };
        self.steps.backoff().succeeded(key);
        let size = u128::try_from(answer.capacity_bytes)
            .ok()
            .filter(|b| *b >= bytes)
            .unwrap_or(bytes);
        let mut grown = pv.clone();
        if let Some(quantity) = stowage_common::quantity::Quantity::from_bytes(size) {
            grown
                .spec
                .get_or_insert_default()
                .capacity
                .get_or_insert_default()
                .insert("storage".into(), ApiQuantity(quantity.to_string()));
        }
        Api::<PersistentVolume>::all(self.cx.client.clone())
            .replace(&name, &PostParams::default(), &grown)
            .await?;
        let updated = expand::status_after(pvc, size, answer.node_expansion_required);
        self.claims_api(pvc)
            .replace_status(&pvc.name_any(), &PostParams::default(), &updated)
            .await?;
        let (reason, message) = if answer.node_expansion_required {
            (
                "FileSystemResizeRequired",
                "Require file system resize of volume on node",
            )
        } else {
            ("VolumeResizeSuccessful", "Resize volume succeeded")
        };
        self.events.normal(&reference, reason, message).await;
        Ok(())
    }

    async fn resize_failed(
        &self,
        reference: &ObjectReference,
        volume: &str,
        key: &str,
        why: &ExpandError,
    ) -> Result<()> {
        let wait = self.steps.backoff().failed(key, Instant::now());
        tracing::warn!(volume, %why, retry_in = ?wait, "expansion failed");
        self.events
            .warning(
                reference,
                "VolumeResizeFailed",
                &format!("resize volume {volume} failed: {why}"),
            )
            .await;
        Ok(())
    }

    /// What a clone or a restore is filled from; an error says what is not ready yet.
    async fn content_source(
        &self,
        pvc: &PersistentVolumeClaim,
    ) -> std::result::Result<Option<VolumeContentSource>, SourceError> {
        let source = match request::data_source(pvc) {
            None => return Ok(None),
            Some(DataSource::Claim(name)) => {
                let namespace = pvc.namespace().unwrap_or_default();
                volume_content_source::Type::Volume(volume_content_source::VolumeSource {
                    volume_id: self.source_volume(namespace, name)?,
                })
            }
            Some(DataSource::Snapshot(name)) => {
                volume_content_source::Type::Snapshot(volume_content_source::SnapshotSource {
                    snapshot_id: self.snapshot_handle(pvc, name).await?,
                })
            }
            Some(DataSource::Unsupported(kind)) => return Err(SourceError::Unsupported(kind)),
        };
        Ok(Some(VolumeContentSource {
            r#type: Some(source),
        }))
    }

    /// The handle of the snapshot `name` a claim restores, once it can be used.
    async fn snapshot_handle(
        &self,
        pvc: &PersistentVolumeClaim,
        name: String,
    ) -> std::result::Result<String, snapshot::SnapshotError> {
        let name = SnapshotName {
            namespace: pvc.namespace().unwrap_or_default(),
            name,
        };
        snapshot::resolve(&self.cx.client, name, request::requested_bytes(pvc)).await
    }

    /// The volume handle of a clone's source claim, which must be bound to one of ours.
    fn source_volume(
        &self,
        namespace: String,
        name: String,
    ) -> std::result::Result<String, SourceError> {
        let Some(origin) = self
            .cx
            .claims
            .get(&ObjectRef::new(&name).within(&namespace))
        else {
            return Err(SourceError::ClaimMissing { namespace, name });
        };
        let volume = origin
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty());
        let Some(volume) = volume else {
            return Err(SourceError::ClaimUnbound { namespace, name });
        };
        self.cx
            .volumes
            .get(&ObjectRef::new(&volume))
            .and_then(|pv| pv.spec.clone()?.csi)
            .filter(|csi| csi.driver == DRIVER_NAME)
            .map(|csi| csi.volume_handle)
            .ok_or(SourceError::ClaimForeign { namespace, name })
    }

    /// A failure a retry may mend: try again after the claim's backoff.
    async fn retry(&self, pvc: &PersistentVolumeClaim, why: &ProvisionError) -> Result<()> {
        let wait = self
            .steps
            .backoff()
            .failed(&pvc.uid().unwrap_or_default(), Instant::now());
        tracing::warn!(claim = %pvc.name_any(), %why, retry_in = ?wait, "provisioning failed");
        self.fail(pvc, why).await;
        Ok(())
    }

    /// A failure retrying cannot mend: wait for the claim or the class to change.
    async fn refuse(
        &self,
        pvc: &PersistentVolumeClaim,
        class: &StorageClass,
        why: &ProvisionError,
    ) -> Result<()> {
        lock(&self.refused).insert(
            pvc.uid().unwrap_or_default(),
            (
                pvc.resource_version().unwrap_or_default(),
                class.resource_version().unwrap_or_default(),
            ),
        );
        tracing::warn!(claim = %pvc.name_any(), %why, "provisioning refused");
        self.fail(pvc, why).await;
        Ok(())
    }

    async fn fail(&self, pvc: &PersistentVolumeClaim, why: &ProvisionError) {
        self.cx
            .config
            .metrics
            .provisioned("failure", Duration::ZERO);
        self.events
            .warning(
                &claim_reference(pvc),
                "ProvisioningFailed",
                &format!(
                    "failed to provision volume with StorageClass {:?}: {why}",
                    class_of(pvc)
                ),
            )
            .await;
    }

    fn claims_api(&self, pvc: &PersistentVolumeClaim) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.cx.client.clone(), &pvc.namespace().unwrap_or_default())
    }
}

impl Stepped for Provisioner {
    fn steps(&self) -> &Steps {
        &self.steps
    }
    fn pass(self: &Arc<Self>) {
        self.start_work();
    }
}

/// The class name of a claim that needs a volume made: unbound, not being deleted.
fn wants_volume(pvc: &PersistentVolumeClaim) -> Option<String> {
    let spec = pvc.spec.as_ref()?;
    let unbound = spec.volume_name.as_deref().is_none_or(str::is_empty);
    let pending = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_none_or(|p| p == "Pending");
    (unbound && pending && pvc.metadata.deletion_timestamp.is_none())
        .then(|| claim_class(pvc))?
        .filter(|name| !name.is_empty())
}

fn class_of(pvc: &PersistentVolumeClaim) -> String {
    claim_class(pvc).unwrap_or_default()
}
