//! Who reclaims a released volume and how, decided from the PersistentVolume and,
//! for a node-local volume with no node affinity, the number of nodes.
//!
//! As upstream: Delete of a volume we provisioned calls the driver's DeleteVolume
//! first; a volume another provisioner made is left to it; a hostPath volume is
//! removed when its path is below `/tmp/` (upstream's testing deleter); anything
//! else has no deleter. Recycle scrubs NFS exports (from the central instance,
//! through the userspace client) and hostPath/local directories (from the instance
//! of the node that holds them); anything else has no recycler.
//!
//! Which node holds a hostPath directory: the one its node affinity names; with no
//! affinity, the cluster's only node when there is exactly one (`stowage up`, or any
//! one-node cluster). With several nodes upstream's recycler pod scrubs wherever it
//! lands, which may be a node that never held the data; here such a volume goes
//! Failed asking for node affinity instead.

use driver_contract::export::Export;
use driver_contract::ids::Location;
use driver_contract::{DRIVER_NAME, TOPOLOGY_NODE_KEY};
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

impl Scope {
    /// Whether this instance holds the data at `location`: a local one's node, the
    /// central instance for NFS.
    pub fn holds(&self, location: Option<Location>) -> bool {
        match (location, self) {
            (Some(Location::Local { node }), Self::Node(me)) => node == *me,
            (Some(Location::Nfs(_)), Self::Central) => true,
            _ => false,
        }
    }

    /// Whether this instance holds the data of `pv`, read from the volume itself: a
    /// volume of this driver that a node affinity pins to one node is that node's
    /// (local), one that none pins is the central instance's (NFS); any other driver's
    /// is neither's.
    pub fn holds_volume(&self, pv: &PersistentVolume) -> bool {
        let ours = pv
            .spec
            .as_ref()
            .and_then(|spec| spec.csi.as_ref())
            .is_some_and(|csi| csi.driver == DRIVER_NAME);
        match (ours, pinned_node(pv), self) {
            (true, Some(node), Self::Node(me)) => node == *me,
            (true, None, Self::Central) => true,
            _ => false,
        }
    }
}

/// What an instance knows of the cluster's nodes, asked only when a volume's
/// owner depends on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nodes {
    /// Not asked yet, or asked too long ago.
    Unknown,
    /// Exactly one Node exists, named so.
    One(String),
    /// None, or more than one.
    NotOne,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Not for this instance: another one, an external provisioner or an administrator.
    NotOurs,
    /// Who acts depends on the number of nodes, which this instance must ask first.
    AskNodes,
    /// Nobody can: the volume goes Failed with this message (and an event with this reason).
    Impossible {
        reason: &'static str,
        message: String,
    },
    /// DeleteVolume through CSI, then remove the PersistentVolume.
    DeleteCsi { handle: String },
    /// Remove a directory (or file) of this node, then the PersistentVolume.
    DeleteLocal { path: String },
    /// Empty a directory of an NFS export; `path` is relative to the share.
    RecycleNfs { export: Export, path: Vec<String> },
    /// Empty a directory of this node.
    RecycleLocal { path: String },
}

pub const FAILED_DELETE: &str = "VolumeFailedDelete";
pub const FAILED_RECYCLE: &str = "VolumeFailedRecycle";

/// Who acts on a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    Central,
    Node(String),
    /// The node holding a hostPath directory that no node affinity pins.
    SoleNode,
}

/// What `scope` should do about `pv`, a Released or Failed volume with `policy`.
pub fn plan(pv: &PersistentVolume, policy: ReclaimPolicy, scope: &Scope, nodes: &Nodes) -> Plan {
    let (owner, plan) = match policy {
        ReclaimPolicy::Retain => return Plan::NotOurs,
        ReclaimPolicy::Delete => delete_plan(pv),
        ReclaimPolicy::Recycle => recycle_plan(pv),
    };
    let owner = match (owner, nodes) {
        (Owner::Central, _) => Scope::Central,
        (Owner::Node(node), _) => Scope::Node(node),
        (Owner::SoleNode, Nodes::Unknown) => return Plan::AskNodes,
        (Owner::SoleNode, Nodes::One(node)) => Scope::Node(node.clone()),
        (Owner::SoleNode, Nodes::NotOne) => {
            let reason = match policy {
                ReclaimPolicy::Delete => FAILED_DELETE,
                _ => FAILED_RECYCLE,
            };
            return if *scope == Scope::Central {
                Plan::Impossible {
                    reason,
                    message: UNPINNED.into(),
                }
            } else {
                Plan::NotOurs
            };
        }
    };
    if owner == *scope { plan } else { Plan::NotOurs }
}

const UNPINNED: &str = "the volume has no node affinity naming one node and the cluster has more than one node, so no node instance knows it holds the data; give the volume a node affinity";

fn impossible(reason: &'static str, message: impl Into<String>) -> (Owner, Plan) {
    (
        Owner::Central,
        Plan::Impossible {
            reason,
            message: message.into(),
        },
    )
}

fn delete_plan(pv: &PersistentVolume) -> (Owner, Plan) {
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
            // A local volume's PV names its node (CreateVolume's accessible topology);
            // the handle stays opaque here.
            let owner = pinned_node(pv).map_or(Owner::Central, Owner::Node);
            (
                owner,
                Plan::DeleteCsi {
                    handle: csi.volume_handle,
                },
            )
        }
        (_, Some(other)) if other != DRIVER_NAME => (Owner::Central, Plan::NotOurs),
        _ => match spec.host_path {
            Some(host_path) => host_path_delete_plan(pv, host_path.path),
            None => impossible(
                FAILED_DELETE,
                format!(
                    "error getting deleter volume plugin for volume {:?}: no deletable volume plugin matched",
                    pv.metadata.name.as_deref().unwrap_or_default()
                ),
            ),
        },
    }
}

/// Upstream's hostPath deleter, meant for testing: only paths below `/tmp/`. Its
/// pattern is unanchored (`/var/tmp/x` passes); here it must be the path's start.
fn host_path_delete_plan(pv: &PersistentVolume, path: String) -> (Owner, Plan) {
    let below_tmp = path
        .strip_prefix("/tmp/")
        .is_some_and(|rest| !rest.is_empty());
    if !below_tmp {
        return impossible(
            FAILED_DELETE,
            format!("host_path deleter only supports /tmp/.+ but received provided {path}"),
        );
    }
    (local_owner(pv), Plan::DeleteLocal { path })
}

fn recycle_plan(pv: &PersistentVolume) -> (Owner, Plan) {
    let spec = pv.spec.clone().unwrap_or_default();
    let no_recycler = |message: &str| impossible(FAILED_RECYCLE, message);
    if let Some(nfs) = &spec.nfs {
        return nfs_plan(&nfs.server, &nfs.path, "")
            .unwrap_or_else(|e| no_recycler(&e.to_string()));
    }
    if let Some(csi) = &spec.csi
        && csi.driver == DRIVER_NAME
        && let Some(context) = &csi.volume_attributes
        && let (Some(server), Some(share)) = (context.get("server"), context.get("share"))
    {
        let sub_dir = context.get("subDir").map(String::as_str).unwrap_or("");
        return nfs_plan(server, share, sub_dir).unwrap_or_else(|e| no_recycler(&e.to_string()));
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
    (local_owner(pv), Plan::RecycleLocal { path })
}

/// The node instance that holds a node-local path.
fn local_owner(pv: &PersistentVolume) -> Owner {
    pinned_node(pv).map_or(Owner::SoleNode, Owner::Node)
}

/// Why an NFS volume cannot be recycled; the message goes to the volume's Failed phase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum NfsPlanError {
    /// The export's address is not one.
    #[error(transparent)]
    Export(#[from] driver_contract::export::BadExport),
    #[error("subDir {0:?} must not contain '..'")]
    UpwardSubDir(String),
}

fn nfs_plan(server: &str, share: &str, sub_dir: &str) -> Result<(Owner, Plan), NfsPlanError> {
    let export = Export::parse(server, share).map_err(NfsPlanError::Export)?;
    let path: Vec<String> = sub_dir
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect();
    if path.iter().any(|c| c == "..") {
        return Err(NfsPlanError::UpwardSubDir(sub_dir.to_string()));
    }
    Ok((Owner::Central, Plan::RecycleNfs { export, path }))
}

/// The one node a volume's required node affinity admits, if it names exactly one.
pub(crate) fn pinned_node(pv: &PersistentVolume) -> Option<String> {
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

    /// The affinity CreateVolume's accessible topology gives a local volume.
    fn topology_pinned(node: &str) -> serde_json::Value {
        json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "topology.stowage.io/node", "operator": "In", "values": [node]}
        ]}]}})
    }

    #[test]
    fn an_instance_holds_its_node_s_local_data_and_the_central_one_nfs_data() {
        let local = |node: &str| {
            Some(Location::Local {
                node: node.to_string(),
            })
        };
        let nfs = Some(Location::Nfs(
            Export::parse("10.0.0.1", "/exports").expect("export"),
        ));
        let n1 = Scope::Node("n1".into());
        let cases = [
            (&n1, local("n1"), true),
            (&n1, local("n2"), false),
            (&n1, nfs.clone(), false),
            (&Scope::Central, local("n1"), false),
            (&Scope::Central, nfs, true),
            (&Scope::Central, None, false),
            (&n1, None, false),
        ];
        for (scope, location, holds) in cases {
            assert_eq!(
                scope.holds(location.clone()),
                holds,
                "{scope:?} {location:?}"
            );
        }
    }

    #[test]
    fn an_instance_holds_a_volume_by_its_node_affinity() {
        let csi = |driver: &str| json!({"driver": driver, "volumeHandle": "local:v1:n1"});
        let local = |node: &str| {
            pv(
                json!({"spec": {"csi": csi("csi.stowage.io"), "nodeAffinity": topology_pinned(node)}}),
            )
        };
        let nfs = pv(json!({"spec": {"csi": csi("csi.stowage.io")}}));
        let foreign = pv(json!({"spec": {"csi": csi("other.example.com")}}));
        let foreign_pinned =
            pv(json!({"spec": {"csi": csi("other.example.com"), "nodeAffinity": pinned("n1")}}));
        let not_csi = pv(json!({"spec": {"nodeAffinity": pinned("n1")}}));
        let n1 = Scope::Node("n1".into());
        let cases = [
            ("a local volume on this node", &n1, &local("n1"), true),
            ("a local volume on another node", &n1, &local("n2"), false),
            (
                "a local volume, central instance",
                &Scope::Central,
                &local("n1"),
                false,
            ),
            ("an unpinned volume, node instance", &n1, &nfs, false),
            (
                "an unpinned volume, central instance",
                &Scope::Central,
                &nfs,
                true,
            ),
            (
                "another driver's, central",
                &Scope::Central,
                &foreign,
                false,
            ),
            ("another driver's, pinned here", &n1, &foreign_pinned, false),
            ("not a CSI volume", &n1, &not_csi, false),
        ];
        for (what, scope, volume, holds) in cases {
            assert_eq!(scope.holds_volume(volume), holds, "{what}");
        }
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
                json!({"metadata": {"annotations": ours}, "spec": {"csi": {"driver": "csi.stowage.io", "volumeHandle": "local:0123456789abcdef0123456789abcdef:a"}, "nodeAffinity": topology_pinned("a")}}),
                Scope::Central,
                Plan::NotOurs,
            ),
            (
                "our local volume: its node's instance",
                json!({"metadata": {"annotations": ours}, "spec": {"csi": {"driver": "csi.stowage.io", "volumeHandle": "local:0123456789abcdef0123456789abcdef:a"}, "nodeAffinity": topology_pinned("a")}}),
                node_a.clone(),
                Plan::DeleteCsi {
                    handle: "local:0123456789abcdef0123456789abcdef:a".into(),
                },
            ),
            (
                "the node is the PV's, whatever the opaque handle holds",
                json!({"metadata": {"annotations": ours}, "spec": {"csi": {"driver": "csi.stowage.io", "volumeHandle": "made-by-another-version"}, "nodeAffinity": topology_pinned("a")}}),
                node_a.clone(),
                Plan::DeleteCsi {
                    handle: "made-by-another-version".into(),
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
                "a hostPath volume outside /tmp is for the central instance to fail",
                json!({"spec": {"hostPath": {"path": "/srv/x"}}}),
                node_a,
                Plan::NotOurs,
            ),
        ];
        for (what, object, scope, wanted) in cases {
            assert_eq!(
                plan(&pv(object), ReclaimPolicy::Delete, &scope, &Nodes::Unknown),
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
                plan(&pv(object), ReclaimPolicy::Recycle, &scope, &Nodes::Unknown),
                wanted,
                "{what}"
            );
        }
    }

    #[test]
    fn retain_is_never_acted_on() {
        let object = pv(json!({"spec": {"nfs": {"server": "s", "path": "/e"}}}));
        assert_eq!(
            plan(
                &object,
                ReclaimPolicy::Retain,
                &Scope::Central,
                &Nodes::Unknown
            ),
            Plan::NotOurs
        );
    }

    #[test]
    fn node_local_paths_without_affinity_belong_to_the_only_node() {
        let unpinned = |path: &str| json!({"spec": {"hostPath": {"path": path}}});
        let one = Nodes::One("a".into());
        let node_a = Scope::Node("a".into());
        let node_b = Scope::Node("b".into());
        let failed = |reason| Plan::Impossible {
            reason,
            message: UNPINNED.into(),
        };
        let recycle = ReclaimPolicy::Recycle;
        let delete = ReclaimPolicy::Delete;
        let cases = [
            (
                "recycle, one node: that node's instance scrubs",
                unpinned("/srv/x"),
                recycle,
                node_a.clone(),
                one.clone(),
                Plan::RecycleLocal {
                    path: "/srv/x".into(),
                },
            ),
            (
                "recycle, one node: not the central instance's",
                unpinned("/srv/x"),
                recycle,
                Scope::Central,
                one.clone(),
                Plan::NotOurs,
            ),
            (
                "recycle, one node: not another node's",
                unpinned("/srv/x"),
                recycle,
                node_b.clone(),
                one.clone(),
                Plan::NotOurs,
            ),
            (
                "recycle, several nodes: the central instance fails it",
                unpinned("/srv/x"),
                recycle,
                Scope::Central,
                Nodes::NotOne,
                failed(FAILED_RECYCLE),
            ),
            (
                "recycle, several nodes: no node instance acts",
                unpinned("/srv/x"),
                recycle,
                node_a.clone(),
                Nodes::NotOne,
                Plan::NotOurs,
            ),
            (
                "recycle, nodes not known yet: ask",
                unpinned("/srv/x"),
                recycle,
                node_a.clone(),
                Nodes::Unknown,
                Plan::AskNodes,
            ),
            (
                "delete below /tmp, one node: that node removes it",
                unpinned("/tmp/vol"),
                delete,
                node_a.clone(),
                one.clone(),
                Plan::DeleteLocal {
                    path: "/tmp/vol".into(),
                },
            ),
            (
                "delete below /tmp, pinned: its node, whatever the count",
                json!({"spec": {"hostPath": {"path": "/tmp/vol"}, "nodeAffinity": pinned("b")}}),
                delete,
                node_b,
                Nodes::Unknown,
                Plan::DeleteLocal {
                    path: "/tmp/vol".into(),
                },
            ),
            (
                "delete below /tmp, several nodes: the central instance fails it",
                unpinned("/tmp/vol"),
                delete,
                Scope::Central,
                Nodes::NotOne,
                failed(FAILED_DELETE),
            ),
            (
                "delete outside /tmp: upstream's refusal, at once",
                unpinned("/srv/x"),
                delete,
                Scope::Central,
                Nodes::Unknown,
                Plan::Impossible {
                    reason: FAILED_DELETE,
                    message: "host_path deleter only supports /tmp/.+ but received provided /srv/x"
                        .into(),
                },
            ),
            (
                "/tmp itself is not below /tmp",
                unpinned("/tmp/"),
                delete,
                Scope::Central,
                one.clone(),
                Plan::Impossible {
                    reason: FAILED_DELETE,
                    message: "host_path deleter only supports /tmp/.+ but received provided /tmp/"
                        .into(),
                },
            ),
            (
                "/var/tmp passes upstream's unanchored pattern, not here",
                unpinned("/var/tmp/x"),
                delete,
                Scope::Central,
                one,
                Plan::Impossible {
                    reason: FAILED_DELETE,
                    message:
                        "host_path deleter only supports /tmp/.+ but received provided /var/tmp/x"
                            .into(),
                },
            ),
        ];
        for (what, object, policy, scope, nodes, wanted) in cases {
            assert_eq!(plan(&pv(object), policy, &scope, &nodes), wanted, "{what}");
        }
    }
}
