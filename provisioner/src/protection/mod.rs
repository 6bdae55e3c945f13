//! kube-controller-manager's `pvc-protection` and `pv-protection` controllers: the
//! StorageObjectInUseProtection admission (`stowage apiserver
//! --storage-object-in-use-protection`) puts `kubernetes.io/pvc-protection` on every new
//! claim and `kubernetes.io/pv-protection` on every new volume; these let a deleted one
//! go once nothing uses it (a claim: no unfinished Pod names it; a volume: not Bound).
//! Decisions are in [`plan`]; a claim is let go only after a live list of its
//! namespace's Pods agrees with the cache, as upstream checks before removing.

pub mod plan;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use serde_json::json;

use self::plan::{ClaimUsers, PV_FINALIZER, PVC_FINALIZER};
use crate::Context;
use crate::steps::{Stepped, Steps};

/// Which of the two controllers run.
#[derive(Debug, Clone, Copy)]
pub struct Protections {
    pub claims: bool,
    pub volumes: bool,
}

pub struct Protector {
    cx: Context,
    pods: Store<Pod>,
    protections: Protections,
    steps: Arc<Steps>,
}

impl Protector {
    pub fn new(cx: &Context, protections: Protections) -> Arc<Self> {
        Arc::new(Self {
            pods: crate::watch::reflect(Api::all(cx.client.clone()), &cx.changes),
            cx: cx.clone(),
            protections,
            steps: Arc::new(Steps::new("releasing a protection finalizer")),
        })
    }

    /// Lets a claim go if a live list of its namespace's Pods finds no user either
    /// (the cache may not have seen a Pod created just now).
    async fn release_claim(&self, claim: &PersistentVolumeClaim) -> kube::Result<()> {
        let namespace = claim.metadata.namespace.as_deref().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.cx.client.clone(), namespace);
        let live = pods.list(&ListParams::default()).await?.items;
        if !plan::claim_releasable(claim, &ClaimUsers::new(&live)) {
            return Ok(());
        }
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.cx.client.clone(), namespace);
        remove_finalizer(&api, &claim.metadata, PVC_FINALIZER).await
    }
}

/// Removes `finalizer`, guarded by the resourceVersion the decision saw.
async fn remove_finalizer<K>(api: &Api<K>, meta: &ObjectMeta, finalizer: &str) -> kube::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let finalizers: Vec<&String> = meta
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .collect();
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": meta.resource_version,
    }});
    let name = meta.name.as_deref().unwrap_or_default();
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

impl Stepped for Protector {
    fn steps(&self) -> &Steps {
        &self.steps
    }
    fn pass(self: &Arc<Self>) {
        if self.protections.claims {
            let held: Vec<_> = self
                .cx
                .claims
                .state()
                .into_iter()
                .filter(|claim| plan::claim_held(claim))
                .collect();
            // Built only when a claim waits, once per pass: claims + pods, not claims × pods.
            let users = if held.is_empty() {
                ClaimUsers::default()
            } else {
                ClaimUsers::new(self.pods.state().iter().map(|pod| &**pod))
            };
            for claim in held {
                if plan::claim_releasable(&claim, &users) {
                    let key = format!("pvc/{}", claim.metadata.uid.as_deref().unwrap_or(""));
                    let this = self.clone();
                    self.steps
                        .start(key, async move { this.release_claim(&claim).await });
                }
            }
        }
        if self.protections.volumes {
            for volume in self.cx.volumes.state() {
                if plan::volume_releasable(&volume) {
                    let key = format!("pv/{}", volume.metadata.uid.as_deref().unwrap_or(""));
                    let api: Api<PersistentVolume> = Api::all(self.cx.client.clone());
                    self.steps.start(key, async move {
                        remove_finalizer(&api, &volume.metadata, PV_FINALIZER).await
                    });
                }
            }
        }
    }
}
