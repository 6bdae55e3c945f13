//! What to ask the driver for a claim, and the PersistentVolume that records the
//! answer: pure functions of the claim, its class and the CreateVolume response,
//! as external-provisioner builds them.

use std::collections::{BTreeMap, HashMap};

use csi_proto::v1::volume_capability::{
    AccessMode, AccessType, BlockVolume, MountVolume, access_mode::Mode,
};
use csi_proto::v1::{
    CapacityRange, CreateVolumeRequest, Topology, TopologyRequirement, VolumeCapability,
    VolumeContentSource,
};
use driver_contract::{DRIVER_NAME, TOPOLOGY_NODE_KEY};
use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use stowage_common::quantity::{Quantity, QuantityError};

use super::secrets::{DELETION_SECRET_NAME, DELETION_SECRET_NAMESPACE, SecretRefs, TemplateError};
use crate::binder::model::annotations;
use crate::reclaim::PROVISIONER_FINALIZER;

/// Class parameters with this prefix are for the provisioner, not the driver.
const RESERVED_PREFIX: &str = "csi.storage.k8s.io/";
const FSTYPE_KEY: &str = "csi.storage.k8s.io/fstype";
/// The API group of VolumeSnapshots, as a claim's data source names it.
pub const SNAPSHOT_GROUP: &str = "snapshot.storage.k8s.io";

/// Why a claim cannot be provisioned as it is: retrying will not help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unprovisionable {
    /// The claim has no access mode.
    #[error("the claim names no access mode")]
    NoAccessMode,
    /// An access mode CSI has no capability for.
    #[error("unknown access mode {0:?}")]
    UnknownAccessMode(String),
    /// The request is zero or missing.
    #[error("the claim requests no storage")]
    NoStorage,
    /// A storage request or limit that is not a quantity.
    #[error("storage {quantity:?}: {error}")]
    BadQuantity {
        /// The quantity as the claim writes it.
        quantity: String,
        /// What is wrong with it.
        error: QuantityError,
    },
    /// A storage request or limit beyond CSI's 64-bit byte counts.
    #[error("storage {0:?} is larger than CSI can ask for")]
    TooLarge(String),
    /// The class's secret parameters do not resolve for the claim.
    #[error(transparent)]
    Secrets(#[from] TemplateError),
}

/// The deterministic name of a claim's volume: a retry after a crash finds it.
pub fn volume_name(pvc: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", pvc.metadata.uid.as_deref().unwrap_or_default())
}

/// What a claim asks its new volume to be filled from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// A clone of another claim in the same namespace.
    Claim(String),
    /// A restore of a VolumeSnapshot in the same namespace.
    Snapshot(String),
    /// Anything else: `group/kind` as the claim names it.
    Unsupported(String),
}

/// The claim's `dataSource`, or else its `dataSourceRef`.
pub fn data_source(pvc: &PersistentVolumeClaim) -> Option<DataSource> {
    let spec = pvc.spec.as_ref()?;
    let (group, kind, name) = match (spec.data_source.as_ref(), spec.data_source_ref.as_ref()) {
        (Some(s), _) => (s.api_group.as_deref(), s.kind.as_str(), s.name.clone()),
        (None, Some(r)) => (r.api_group.as_deref(), r.kind.as_str(), r.name.clone()),
        (None, None) => return None,
    };
    Some(match (group.unwrap_or_default(), kind) {
        ("", "PersistentVolumeClaim") => DataSource::Claim(name),
        (SNAPSHOT_GROUP, "VolumeSnapshot") => DataSource::Snapshot(name),
        ("", kind) => DataSource::Unsupported(kind.to_string()),
        (group, kind) => DataSource::Unsupported(format!("{group}/{kind}")),
    })
}

/// The claim's storage request in bytes, when it has a valid one.
pub fn requested_bytes(pvc: &PersistentVolumeClaim) -> Option<u128> {
    let request = pvc
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?;
    Some(Quantity::parse(&request.0).ok()?.bytes())
}

/// The claim's first access mode as a capability (what ControllerExpandVolume asks about).
pub fn capability(pvc: &PersistentVolumeClaim) -> Result<VolumeCapability, Unprovisionable> {
    let spec = pvc.spec.clone().unwrap_or_default();
    let mode = spec
        .access_modes
        .unwrap_or_default()
        .first()
        .cloned()
        .ok_or(Unprovisionable::NoAccessMode)?;
    let access_type = if spec.volume_mode.as_deref() == Some("Block") {
        AccessType::Block(BlockVolume {})
    } else {
        AccessType::Mount(MountVolume::default())
    };
    Ok(VolumeCapability {
        access_mode: Some(AccessMode {
            mode: csi_mode(&mode)? as i32,
        }),
        access_type: Some(access_type),
    })
}

/// The CreateVolume request for `pvc` of `class`, placed on `node` when given.
pub fn create_request(
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    node: Option<&str>,
    source: Option<VolumeContentSource>,
) -> Result<CreateVolumeRequest, Unprovisionable> {
    let spec = pvc.spec.clone().unwrap_or_default();
    let resources = spec.resources.unwrap_or_default();
    let bytes = |q: Option<&ApiQuantity>| -> Result<i64, Unprovisionable> {
        let Some(q) = q else { return Ok(0) };
        let parsed = Quantity::parse(&q.0).map_err(|error| Unprovisionable::BadQuantity {
            quantity: q.0.clone(),
            error,
        })?;
        i64::try_from(parsed.bytes()).map_err(|_| Unprovisionable::TooLarge(q.0.clone()))
    };
    let required = bytes(resources.requests.as_ref().and_then(|r| r.get("storage")))?;
    if required <= 0 {
        return Err(Unprovisionable::NoStorage);
    }
    let limit = bytes(resources.limits.as_ref().and_then(|r| r.get("storage")))?;
    let parameters = class.parameters.clone().unwrap_or_default();
    let block = spec.volume_mode.as_deref() == Some("Block");
    let access_type = if block {
        AccessType::Block(BlockVolume {})
    } else {
        AccessType::Mount(MountVolume {
            fs_type: parameters.get(FSTYPE_KEY).cloned().unwrap_or_default(),
            mount_flags: class.mount_options.clone().unwrap_or_default(),
            volume_mount_group: String::new(),
        })
    };
    let modes = spec.access_modes.unwrap_or_default();
    if modes.is_empty() {
        return Err(Unprovisionable::NoAccessMode);
    }
    let volume_capabilities = modes
        .iter()
        .map(|mode| {
            Ok(VolumeCapability {
                access_mode: Some(AccessMode {
                    mode: csi_mode(mode)? as i32,
                }),
                access_type: Some(access_type.clone()),
            })
        })
        .collect::<Result<Vec<_>, Unprovisionable>>()?;
    let mut driver_parameters: HashMap<String, String> = parameters
        .into_iter()
        .filter(|(k, _)| !k.starts_with(RESERVED_PREFIX))
        .collect();
    for (key, value) in [
        ("csi.storage.k8s.io/pvc/name", pvc.metadata.name.clone()),
        (
            "csi.storage.k8s.io/pvc/namespace",
            pvc.metadata.namespace.clone(),
        ),
        ("csi.storage.k8s.io/pv/name", Some(volume_name(pvc))),
    ] {
        driver_parameters.insert(key.into(), value.unwrap_or_default());
    }
    Ok(CreateVolumeRequest {
        name: volume_name(pvc),
        capacity_range: Some(CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        }),
        volume_capabilities,
        parameters: driver_parameters,
        accessibility_requirements: topology(class, node),
        volume_content_source: source,
        ..Default::default()
    })
}

fn csi_mode(mode: &str) -> Result<Mode, Unprovisionable> {
    Ok(match mode {
        "ReadWriteOnce" => Mode::SingleNodeWriter,
        "ReadOnlyMany" => Mode::MultiNodeReaderOnly,
        "ReadWriteMany" => Mode::MultiNodeMultiWriter,
        "ReadWriteOncePod" => Mode::SingleNodeSingleWriter,
        other => return Err(Unprovisionable::UnknownAccessMode(other.to_string())),
    })
}

/// The selected node when there is one; else the class's allowed topologies for our key.
fn topology(class: &StorageClass, node: Option<&str>) -> Option<TopologyRequirement> {
    let segment = |value: &str| Topology {
        segments: HashMap::from([(TOPOLOGY_NODE_KEY.to_string(), value.to_string())]),
    };
    let allowed: Vec<Topology> = match node {
        Some(node) => vec![segment(node)],
        None => class
            .allowed_topologies
            .iter()
            .flatten()
            .flat_map(|term| term.match_label_expressions.iter().flatten())
            .filter(|e| e.key == TOPOLOGY_NODE_KEY)
            .flat_map(|e| e.values.iter().map(|v| segment(v)))
            .collect(),
    };
    (!allowed.is_empty()).then(|| TopologyRequirement {
        preferred: allowed.clone(),
        requisite: allowed,
    })
}

/// The PersistentVolume for a created volume, pre-bound to its claim.
pub fn persistent_volume(
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    volume: &csi_proto::v1::Volume,
    secrets: &SecretRefs,
) -> PersistentVolume {
    let spec = pvc.spec.clone().unwrap_or_default();
    let requested = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned());
    let capacity = u128::try_from(volume.capacity_bytes)
        .ok()
        .filter(|b| *b > 0)
        .and_then(Quantity::from_bytes)
        .map(|q| ApiQuantity(q.to_string()))
        .or(requested)
        .unwrap_or_else(|| ApiQuantity("0".into()));
    let fs_type = class
        .parameters
        .as_ref()
        .and_then(|p| p.get(FSTYPE_KEY).cloned());
    let mut pv_annotations = BTreeMap::from([(
        annotations::PROVISIONED_BY.to_string(),
        DRIVER_NAME.to_string(),
    )]);
    if let Some(reference) = &secrets.provisioner {
        for (key, value) in [
            (DELETION_SECRET_NAME, &reference.name),
            (DELETION_SECRET_NAMESPACE, &reference.namespace),
        ] {
            pv_annotations.insert(key.to_string(), value.clone().unwrap_or_default());
        }
    }
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(volume_name(pvc)),
            annotations: Some(pv_annotations),
            finalizers: Some(vec![PROVISIONER_FINALIZER.to_string()]),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_string(), capacity)])),
            access_modes: spec.access_modes.clone(),
            volume_mode: spec.volume_mode.clone(),
            storage_class_name: class.metadata.name.clone(),
            mount_options: class.mount_options.clone(),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            claim_ref: Some(crate::events::claim_reference(pvc)),
            csi: Some(CSIPersistentVolumeSource {
                driver: DRIVER_NAME.into(),
                volume_handle: volume.volume_id.clone(),
                volume_attributes: Some(volume.volume_context.clone().into_iter().collect()),
                fs_type: if spec.volume_mode.as_deref() == Some("Block") {
                    None
                } else {
                    fs_type
                },
                controller_publish_secret_ref: secrets.controller_publish.clone(),
                node_stage_secret_ref: secrets.node_stage.clone(),
                node_publish_secret_ref: secrets.node_publish.clone(),
                controller_expand_secret_ref: secrets.controller_expand.clone(),
                ..Default::default()
            }),
            node_affinity: node_affinity(&volume.accessible_topology),
            ..Default::default()
        }),
        status: None,
    }
}

/// One node-selector term per accessible topology (any of them will do).
fn node_affinity(topologies: &[Topology]) -> Option<VolumeNodeAffinity> {
    let terms: Vec<NodeSelectorTerm> = topologies
        .iter()
        .filter(|t| !t.segments.is_empty())
        .map(|t| {
            let mut expressions: Vec<NodeSelectorRequirement> = t
                .segments
                .iter()
                .map(|(key, value)| NodeSelectorRequirement {
                    key: key.clone(),
                    operator: "In".into(),
                    values: Some(vec![value.clone()]),
                })
                .collect();
            expressions.sort_by(|a, b| a.key.cmp(&b.key));
            NodeSelectorTerm {
                match_expressions: Some(expressions),
                match_fields: None,
            }
        })
        .collect();
    (!terms.is_empty()).then_some(VolumeNodeAffinity {
        required: Some(NodeSelector {
            node_selector_terms: terms,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn claim(extra: serde_json::Value) -> PersistentVolumeClaim {
        let mut object = json!({
            "metadata": {"name": "data", "namespace": "apps", "uid": "1234"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
        });
        json_patch::merge(&mut object, &extra);
        serde_json::from_value(object).expect("pvc")
    }

    fn class(extra: serde_json::Value) -> StorageClass {
        let mut object = json!({
            "metadata": {"name": "fast"},
            "provisioner": "csi.stowage.io",
            "reclaimPolicy": "Retain",
            "mountOptions": ["noatime"],
            "parameters": {"type": "local", "csi.storage.k8s.io/fstype": "ext4"}
        });
        json_patch::merge(&mut object, &extra);
        serde_json::from_value(object).expect("class")
    }

    #[test]
    fn the_request_carries_size_modes_parameters_and_the_node() {
        let pvc = claim(
            json!({"spec": {"accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
            "resources": {"limits": {"storage": "2Gi"}}}}),
        );
        let request = create_request(&pvc, &class(json!({})), Some("n1"), None).expect("request");
        assert_eq!(request.name, "pvc-1234");
        let range = request.capacity_range.expect("range");
        assert_eq!(
            (range.required_bytes, range.limit_bytes),
            (1 << 30, 2 << 30)
        );
        let modes: Vec<i32> = request
            .volume_capabilities
            .iter()
            .map(|c| c.access_mode.expect("mode").mode)
            .collect();
        assert_eq!(
            modes,
            [
                Mode::SingleNodeWriter as i32,
                Mode::MultiNodeReaderOnly as i32
            ]
        );
        let Some(AccessType::Mount(mount)) = &request.volume_capabilities[0].access_type else {
            panic!("a filesystem claim mounts");
        };
        assert_eq!(
            (mount.fs_type.as_str(), mount.mount_flags.as_slice()),
            ("ext4", &["noatime".to_string()][..])
        );
        let wanted: HashMap<String, String> = [
            ("type", "local"),
            ("csi.storage.k8s.io/pvc/name", "data"),
            ("csi.storage.k8s.io/pvc/namespace", "apps"),
            ("csi.storage.k8s.io/pv/name", "pvc-1234"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            request.parameters, wanted,
            "reserved keys stripped, metadata added"
        );
        let topology = request.accessibility_requirements.expect("topology");
        assert_eq!(topology.requisite[0].segments[TOPOLOGY_NODE_KEY], "n1");
    }

    #[test]
    fn block_claims_and_allowed_topologies() {
        let pvc = claim(json!({"spec": {"volumeMode": "Block"}}));
        let class = class(json!({"allowedTopologies": [{"matchLabelExpressions": [
            {"key": "topology.stowage.io/node", "values": ["a", "b"]}]}]}));
        let request = create_request(&pvc, &class, None, None).expect("request");
        assert!(matches!(
            request.volume_capabilities[0].access_type,
            Some(AccessType::Block(_))
        ));
        let topology = request.accessibility_requirements.expect("topology");
        assert_eq!(topology.requisite.len(), 2);
    }

    #[test]
    fn data_sources_are_told_apart() {
        let source = |value: Value| data_source(&claim(json!({"spec": value})));
        assert_eq!(
            source(json!({"dataSource": {"kind": "PersistentVolumeClaim", "name": "origin"}})),
            Some(DataSource::Claim("origin".into()))
        );
        assert_eq!(
            source(
                json!({"dataSourceRef": {"apiGroup": "snapshot.storage.k8s.io",
                "kind": "VolumeSnapshot", "name": "s"}})
            ),
            Some(DataSource::Snapshot("s".into()))
        );
        assert_eq!(
            source(
                json!({"dataSource": {"apiGroup": "example.com", "kind": "Backup", "name": "b"}})
            ),
            Some(DataSource::Unsupported("example.com/Backup".into()))
        );
        assert_eq!(
            source(json!({"dataSource": {"kind": "VolumeSnapshot", "name": "s"}})),
            Some(DataSource::Unsupported("VolumeSnapshot".into())),
            "a snapshot without its API group is not one"
        );
        assert_eq!(source(json!({})), None);
    }

    #[test]
    fn what_cannot_be_asked_is_refused() {
        let class = class(json!({}));
        let cases = [
            (
                claim(json!({"spec": {"resources": {"requests": {"storage": "0"}}}})),
                Unprovisionable::NoStorage,
                "the claim requests no storage",
            ),
            (
                claim(json!({"spec": {"resources": {"requests": {"storage": "800Ei"}}}})),
                Unprovisionable::TooLarge("800Ei".into()),
                "storage \"800Ei\" is larger than CSI can ask for",
            ),
            (
                claim(json!({"spec": {"resources": {"limits": {"storage": "lots"}}}})),
                Unprovisionable::BadQuantity {
                    quantity: "lots".into(),
                    error: QuantityError::Malformed,
                },
                "storage \"lots\": quantities must match the regular expression",
            ),
            (
                claim(json!({"spec": {"accessModes": ["ReadWriteSometimes"]}})),
                Unprovisionable::UnknownAccessMode("ReadWriteSometimes".into()),
                "unknown access mode \"ReadWriteSometimes\"",
            ),
            (
                claim(json!({"spec": {"accessModes": []}})),
                Unprovisionable::NoAccessMode,
                "the claim names no access mode",
            ),
        ];
        for (pvc, expected, message) in cases {
            let error = create_request(&pvc, &class, None, None).expect_err(message);
            assert_eq!(error, expected);
            assert!(error.to_string().starts_with(message), "{error}");
        }
    }

    #[test]
    fn the_volume_is_pre_bound_pinned_and_finalized() {
        let pvc = claim(json!({}));
        let volume = csi_proto::v1::Volume {
            capacity_bytes: 1 << 30,
            volume_id: "local:abc:n1".into(),
            volume_context: HashMap::from([("type".to_string(), "local".to_string())]),
            accessible_topology: vec![Topology {
                segments: HashMap::from([(TOPOLOGY_NODE_KEY.to_string(), "n1".to_string())]),
            }],
            ..Default::default()
        };
        let pv = persistent_volume(&pvc, &class(json!({})), &volume, &SecretRefs::default());
        let value = serde_json::to_value(&pv).expect("json");
        assert_eq!(value["metadata"]["name"], "pvc-1234");
        assert_eq!(
            value["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
            "csi.stowage.io"
        );
        assert_eq!(value["metadata"]["finalizers"][0], PROVISIONER_FINALIZER);
        assert_eq!(value["spec"]["capacity"]["storage"], "1Gi");
        assert_eq!(value["spec"]["claimRef"]["uid"], "1234");
        assert_eq!(value["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(value["spec"]["storageClassName"], "fast");
        assert_eq!(value["spec"]["mountOptions"][0], "noatime");
        assert_eq!(value["spec"]["csi"]["volumeHandle"], "local:abc:n1");
        assert_eq!(value["spec"]["csi"]["fsType"], "ext4");
        assert_eq!(
            value["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"]
                [0]["values"][0],
            "n1"
        );
    }
}
