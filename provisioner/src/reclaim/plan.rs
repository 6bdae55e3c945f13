//! Who reclaims a released volume and how, decided from the PersistentVolume alone.
//!
//! As upstream: Delete of a volume we provisioned calls the driver's DeleteVolume
//! first; a volume another provisioner made is left to it; anything else has no
//! deleter. Recycle scrubs NFS exports (from the central instance, through the
//! userspace client) and hostPath/local directories (from the instance of the node
//! the volume is pinned to); anything else has no recycler.

use csi_controller::ids::{Location, VolumeId};
use csi_controller::nfs::Export;
use csi_proto::{DRIVER_NAME, TOPOLOGY_NODE_KEY};
use k8s_openapi::api::core::v1::PersistentVolume;

use crate::binder::ReclaimPolicy;
use crate::binder::model::annotations;

/// The node label upstream's local volumes are pinned with.
const HOSTNAME_KEY: &str = "kubernetes.io/hostname";

/// Which provisioner instance acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The cluster-wide instance (the StatefulSet).
    Central,
    /// The instance on this node (the DaemonSet).
    Node(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Not for this instance: another one, an external provisioner or an administrator.
    NotOurs,
    /// Nobody can: the volume goes Failed with this reason and message.
    Impossible {
        reason: &'static str,
        message: String,
    },
    /// DeleteVolume through CSI, then remove the PersistentVolume.
    DeleteCsi { handle: String },
    /// Empty a directory of an NFS export; `path` is relative to the share.
    RecycleNfs { export: Export, path: Vec<String> },
    /// Empty a directory of this node.
    RecycleLocal { path: String },
}

pub const FAILED_DELETE: &str = "VolumeFailedDelete";
pub const FAILED_RECYCLE: &str = "VolumeFailedRecycle";

/// What `scope` should do about `pv`, a Released or Failed volume with `policy`.
pub fn plan(pv: &PersistentVolume, policy: ReclaimPolicy, scope: &Scope) -> Plan {
    let (owner, plan) = match policy {
        ReclaimPolicy::Retain => return Plan::NotOurs,
        ReclaimPolicy::Delete => delete_plan(pv),
        ReclaimPolicy::Recycle => recycle_plan(pv),
    };
    if owner == *scope { plan } else { Plan::NotOurs }
}

fn delete_plan(pv: &PersistentVolume) -> (Scope, Plan) {
    let spec = pv.spec.clone().unwrap_or_default();
    let provisioned_by = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::PROVISIONED_BY))
        .map(String::as_str);
    let ours = provisioned_by == Some(DRIVER_NAME);
    match (spec.csi, provisioned_by) {
        (Some(csi), _) if ours && csi.driver == DRIVER_NAME => {
            let owner = match VolumeId::parse(&csi.volume_handle).map(|id| id.location) {
                Some(Location::Local { node }) => Scope::Node(node),
                _ => Scope::Central,
            };
            (
                owner,
                Plan::DeleteCsi {
                    handle: csi.volume_handle,
                },
            )
        }
        (_, Some(other)) if other != DRIVER_NAME => (Scope::Central, Plan::NotOurs),
        _ => (
            Scope::Central,
            Plan::Impossible {
                reason: FAILED_DELETE,
                message: format!(
                    "error getting deleter volume plugin for volume {:?}: no deletable volume plugin matched",
                    pv.metadata.name.as_deref().unwrap_or_default()
                ),
            },
        ),
    }
}

fn recycle_plan(pv: &PersistentVolume) -> (Scope, Plan) {
    let spec = pv.spec.clone().unwrap_or_default();
    let no_recycler = |message: &str| {
        (
            Scope::Central,
            Plan::Impossible {
                reason: FAILED_RECYCLE,
                message: message.to_string(),
            },
        )
    };
    if let Some(nfs) = &spec.nfs {
        return nfs_plan(&nfs.server, &nfs.path, "").unwrap_or_else(|m| no_recycler(&m));
    }
    if let Some(csi) = &spec.csi
        && csi.driver == DRIVER_NAME
        && let Some(context) = &csi.volume_attributes
        && let (Some(server), Some(share)) = (context.get("server"), context.get("share"))
    {
        let sub_dir = context.get("subDir").map(String::as_str).unwrap_or("");
        return nfs_plan(server, share, sub_dir).unwrap_or_else(|m| no_recycler(&m));
    }
    // A static hostPath volume of our driver names its `path` in the attributes.
    let csi_path = spec
        .csi
        .as_ref()
        .filter(|csi| csi.driver == DRIVER_NAME)
        .and_then(|csi| csi.volume_attributes.as_ref()?.get("path").cloned());
    let path = match (&spec.host_path, &spec.local, csi_path) {
        (Some(host_path), _, _) => host_path.path.clone(),
        (None, Some(local), _) => local.path.clone(),
        (None, None, Some(path)) => path,
        (None, None, None) => return no_recycler("No recycler plugin found for the volume!"),
    };
    match pinned_node(pv) {
        Some(node) => (Scope::Node(node), Plan::RecycleLocal { path }),
        None => no_recycler(
            "the volume has no node affinity naming one node, so no node instance can scrub it",
        ),
    }
}

fn nfs_plan(server: &str, share: &str, sub_dir: &str) -> Result<(Scope, Plan), String> {
    let export = Export::parse(server, share)?;
    let path: Vec<String> = sub_dir
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect();
    if path.iter().any(|c| c == "..") {
        return Err(format!("subDir {sub_dir:?} must not contain '..'"));
    }
    Ok((Scope::Central, Plan::RecycleNfs { export, path }))
}

/// The one node a volume's required node affinity admits, if it names exactly one.
fn pinned_node(pv: &PersistentVolume) -> Option<String> {
    let terms = pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms
        .clone();
    let [term] = terms.as_slice() else {
        return None;
    };
    term.match_expressions
        .iter()
        .flatten()
        .find(|e| {
            (e.key == HOSTNAME_KEY || e.key == TOPOLOGY_NODE_KEY)
                && e.operator == "In"
                && e.values.as_ref().is_some_and(|v| v.len() == 1)
        })
        .and_then(|e| e.values.as_ref()?.first().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(value: serde_json::Value) -> PersistentVolume {
        let mut object = json!({"metadata": {"name": "pv-1"}, "spec": {}});
        json_patch::merge(&mut object, &value);
        serde_json::from_value(object).expect("pv")
    }

    fn pinned(node: &str) -> serde_json::Value {
        json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
        ]}]}})
    }

    #[test]
    fn delete_plans() {
        let node_a = Scope::Node("a".into());
        let ours = json!({"pv.kubernetes.io/provisioned-by": "csi.stowage.io"});
        let cases = [
            (
                "our NFS volume: the central instance calls DeleteVolume",
                json!({"metadata": {"annotations": ours}, "spec": {"csi": {"driver": "csi.stowage.io", "volumeHandle": "nfs:0123456789abcdef0123456789abcdef:srv/export"}}}),
                Scope::Central,
                Plan::DeleteCsi {
                    handle: "nfs:0123456789abcdef0123456789abcdef:srv/export".into(),
                },
            ),
            (
                "our local volume: not for the central instance",
                json!({"metadata": {"annotations": ours}, "spec": {"csi": {"driver": "csi.stowage.io", "volumeHandle": "local:0123456789abcdef0123456789abcdef:a"}}}),
                Scope::Central,
                Plan::NotOurs,
            ),
            (
                "our local volume: its node's instance",
                json!({"metadata": {"annotations": ours}, "spec": {"csi": {"driver": "csi.stowage.io", "volumeHandle": "local:0123456789abcdef0123456789abcdef:a"}}}),
                node_a.clone(),
                Plan::DeleteCsi {
                    handle: "local:0123456789abcdef0123456789abcdef:a".into(),
                },
            ),
            (
                "another provisioner's volume is left to it",
                json!({"metadata": {"annotations": {"pv.kubernetes.io/provisioned-by": "ebs.csi.aws.com"}}, "spec": {"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"}}}),
                Scope::Central,
                Plan::NotOurs,
            ),
            (
                "a static volume of our driver has no deleter",
                json!({"spec": {"csi": {"driver": "csi.stowage.io", "volumeHandle": "anything"}}}),
                Scope::Central,
                Plan::Impossible {
                    reason: FAILED_DELETE,
                    message: "error getting deleter volume plugin for volume \"pv-1\": no deletable volume plugin matched".into(),
                },
            ),
            (
                "a hostPath volume has no deleter; node instances leave it",
                json!({"spec": {"hostPath": {"path": "/srv/x"}}}),
                node_a,
                Plan::NotOurs,
            ),
        ];
        for (what, object, scope, wanted) in cases {
            assert_eq!(
                plan(&pv(object), ReclaimPolicy::Delete, &scope),
                wanted,
                "{what}"
            );
        }
    }

    #[test]
    fn recycle_plans() {
        let export = Export::parse("nfs.example:2049", "/exports").expect("export");
        let cases = [
            (
                "an upstream NFS volume: the whole path",
                json!({"spec": {"nfs": {"server": "nfs.example:2049", "path": "/exports"}}}),
                Scope::Central,
                Plan::RecycleNfs {
                    export: export.clone(),
                    path: vec![],
                },
            ),
            (
                "a static NFS volume of our driver: its subDir",
                json!({"spec": {"csi": {"driver": "csi.stowage.io", "volumeHandle": "h", "volumeAttributes": {"server": "nfs.example:2049", "share": "/exports", "subDir": "a/b/"}}}}),
                Scope::Central,
                Plan::RecycleNfs {
                    export,
                    path: vec!["a".into(), "b".into()],
                },
            ),
            (
                "a subDir climbing out is refused",
                json!({"spec": {"csi": {"driver": "csi.stowage.io", "volumeHandle": "h", "volumeAttributes": {"server": "s", "share": "/e", "subDir": "../etc"}}}}),
                Scope::Central,
                Plan::Impossible {
                    reason: FAILED_RECYCLE,
                    message: "subDir \"../etc\" must not contain '..'".into(),
                },
            ),
            (
                "a pinned hostPath volume: its node's instance",
                json!({"spec": {"hostPath": {"path": "/srv/x"}, "nodeAffinity": pinned("a")}}),
                Scope::Node("a".into()),
                Plan::RecycleLocal {
                    path: "/srv/x".into(),
                },
            ),
            (
                "a static hostPath volume of our driver: its node's instance",
                json!({"spec": {"csi": {"driver": "csi.stowage.io", "volumeHandle": "h", "volumeAttributes": {"path": "/srv/y", "hostPathType": "Directory"}}, "nodeAffinity": pinned("a")}}),
                Scope::Node("a".into()),
                Plan::RecycleLocal {
                    path: "/srv/y".into(),
                },
            ),
            (
                "a pinned local volume: not another node's",
                json!({"spec": {"local": {"path": "/srv/x"}, "nodeAffinity": pinned("a")}}),
                Scope::Node("b".into()),
                Plan::NotOurs,
            ),
            (
                "an unpinned hostPath volume cannot be scrubbed",
                json!({"spec": {"hostPath": {"path": "/srv/x"}}}),
                Scope::Central,
                Plan::Impossible {
                    reason: FAILED_RECYCLE,
                    message: "the volume has no node affinity naming one node, so no node instance can scrub it".into(),
                },
            ),
            (
                "a CSI volume has no recycler",
                json!({"spec": {"csi": {"driver": "csi.stowage.io", "volumeHandle": "local:0123456789abcdef0123456789abcdef:a"}}}),
                Scope::Central,
                Plan::Impossible {
                    reason: FAILED_RECYCLE,
                    message: "No recycler plugin found for the volume!".into(),
                },
            ),
        ];
        for (what, object, scope, wanted) in cases {
            assert_eq!(
                plan(&pv(object), ReclaimPolicy::Recycle, &scope),
                wanted,
                "{what}"
            );
        }
    }

    #[test]
    fn retain_is_never_acted_on() {
        let object = pv(json!({"spec": {"nfs": {"server": "s", "path": "/e"}}}));
        assert_eq!(
            plan(&object, ReclaimPolicy::Retain, &Scope::Central),
            Plan::NotOurs
        );
    }
}
