//! The modifier: plays external-resizer's VolumeAttributesClass part. When a bound
//! claim's `spec.volumeAttributesClassName` differs from its
//! `status.currentVolumeAttributesClassName`, it marks the claim's
//! `modifyVolumeStatus` InProgress, calls ControllerModifyVolume with the class's
//! parameters, then records the class on the volume (`spec.volumeAttributesClassName`)
//! and on the claim (current class, modify status cleared). The instance where the
//! volume lives does it (a local volume's node, central for NFS). Every write is
//! idempotent and the call is too, so a restart between them converges.

pub mod plan;

use std::sync::Arc;

use csi_proto::v1::ControllerModifyVolumeRequest;
use csi_proto::v1::controller_client::ControllerClient;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::VolumeAttributesClass;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use serde_json::json;

use self::plan::{ModifyStep, failure_status, modify_step};
use crate::Context;
use crate::Result;
use crate::steps::{Stepped, Steps};

/// Why one modification failed; the claim is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ModifyError {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("no CSI endpoint configured")]
    NoCsi,
    #[error("ControllerModifyVolume failed: {0}")]
    Csi(tonic::Status),
}

pub struct Modifier {
    cx: Context,
    classes: Store<VolumeAttributesClass>,
    steps: Arc<Steps>,
}

impl Modifier {
    pub fn new(cx: &Context) -> Arc<Self> {
        Arc::new(Self {
            classes: crate::watch::reflect(Api::all(cx.client.clone()), &cx.changes),
            cx: cx.clone(),
            steps: Arc::new(Steps::new("modify")),
        })
    }

    /// The volume's handle, if this instance is where it lives (the PV's node
    /// affinity says, not the opaque handle).
    fn mine(&self, pv: &PersistentVolume) -> Option<String> {
        let handle = pv.spec.as_ref()?.csi.as_ref()?.volume_handle.clone();
        self.cx.config.scope.holds_volume(pv).then_some(handle)
    }

    async fn apply(
        &self,
        pvc: &PersistentVolumeClaim,
        pv: &PersistentVolume,
        handle: &str,
        step: ModifyStep,
    ) -> Result<(), ModifyError> {
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.cx.client.clone(), &pvc.namespace().unwrap_or_default());
        let name = pvc.name_any();
        let (target, parameters) = match step {
            ModifyStep::Nothing => return Ok(()),
            ModifyStep::Pending(target) => {
                return self.mark(&claims, &name, &target, "Pending").await;
            }
            ModifyStep::Modify { target, parameters } => (target, parameters),
        };
        self.mark(&claims, &name, &target, "InProgress").await?;
        let channel = self.cx.config.csi.clone().ok_or(ModifyError::NoCsi)?;
        let request = ControllerModifyVolumeRequest {
            volume_id: handle.to_string(),
            mutable_parameters: parameters.into_iter().collect(),
            ..Default::default()
        };
        if let Err(status) = ControllerClient::new(channel)
            .controller_modify_volume(request)
            .await
        {
            self.mark(&claims, &name, &target, failure_status(status.code()))
                .await?;
            return Err(ModifyError::Csi(status));
        }
        let volumes: Api<PersistentVolume> = Api::all(self.cx.client.clone());
        let patch = json!({"spec": {"volumeAttributesClassName": target}});
        volumes
            .patch(
                &pv.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        let patch = json!({"status": {
            "currentVolumeAttributesClassName": target,
            "modifyVolumeStatus": null,
        }});
        claims
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        tracing::info!(claim = %name, class = %target, "modified");
        Ok(())
    }

    /// Writes the claim's modifyVolumeStatus, as external-resizer does.
    async fn mark(
        &self,
        claims: &Api<PersistentVolumeClaim>,
        name: &str,
        target: &str,
        status: &str,
    ) -> Result<(), ModifyError> {
        let patch = json!({"status": {"modifyVolumeStatus": {
            "status": status,
            "targetVolumeAttributesClassName": target,
        }}});
        claims
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }
}

impl Stepped for Modifier {
    fn steps(&self) -> &Steps {
        &self.steps
    }
    fn pass(self: &Arc<Self>) {
        for pvc in self.cx.claims.state() {
            let Some(pv) = pvc
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .and_then(|name| self.cx.volumes.get(&ObjectRef::new(name)))
            else {
                continue;
            };
            let Some(handle) = self.mine(&pv) else {
                continue;
            };
            let class = pvc
                .spec
                .as_ref()
                .and_then(|s| s.volume_attributes_class_name.as_deref())
                .and_then(|name| self.classes.get(&ObjectRef::new(name)));
            let step = modify_step(&pvc, &pv, class.as_deref());
            tracing::debug!(claim = %pvc.name_any(), ?step, "modify");
            if step == ModifyStep::Nothing {
                continue;
            }
            // The name is for the log line of a failed step; the uid keeps a claim
            // made again under the same name apart.
            let key = format!(
                "claim/{}/{}/{}",
                pvc.namespace().unwrap_or_default(),
                pvc.name_any(),
                pvc.uid().unwrap_or_default()
            );
            let this = self.clone();
            self.steps.start(
                key,
                async move { this.apply(&pvc, &pv, &handle, step).await },
            );
        }
    }
}
