//! core/v1: PersistentVolume, PersistentVolumeClaim, Event, Node, Namespace, Pod.

use k8s_openapi::api::core::v1::{
    Event, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};

use super::{PLAIN, decode_named, default_at, roundtrip};
use crate::error::Result;
use crate::meta;
use crate::registry::{Behaviour, Resource};
use crate::store::Reader;
use crate::table::{self, Column, or_none, text};
use crate::validation::{
    FieldError, check_label_name, check_one_of, check_positive_quantity, check_subdomain,
    check_unchanged,
};

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];
const RECLAIM_POLICIES: &[&str] = &["Delete", "Recycle", "Retain"];
const PV_PHASES: &[&str] = &["Available", "Bound", "Failed", "Pending", "Released"];
const PVC_PHASES: &[&str] = &["Bound", "Lost", "Pending"];
const HOST_PATH_TYPES: &[&str] = &[
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];
/// PV spec fields that are not a volume source; every other spec field is one.
const PV_SPEC_NON_SOURCES: &[&str] = &[
    "accessModes",
    "capacity",
    "claimRef",
    "mountOptions",
    "nodeAffinity",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "volumeMode",
    "volumeAttributesClassName",
];
/// The annotations that make a StorageClass the default (GA first, then beta).
pub const DEFAULT_CLASS_ANNOTATIONS: &[&str] = &[
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];

/// The PersistentVolume kind.
pub const PERSISTENT_VOLUME: Resource = Resource {
    group: "",
    version: "v1",
    kind: "PersistentVolume",
    plural: "persistentvolumes",
    singular: "persistentvolume",
    short_names: &["pv"],
    namespaced: false,
    has_status: true,
    behaviour: Behaviour {
        decode: roundtrip::<PersistentVolume>,
        normalize: Ok,
        prepare_create: prepare_pv,
        validate: validate_pv,
        columns: &[
            Column::name(),
            Column::new("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity."),
            Column::new("Access Modes", "string", "accessModes contains all ways the volume can be mounted."),
            Column::new("Reclaim Policy", "string", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."),
            Column::new("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim."),
            Column::new("Claim", "string", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."),
            Column::new("StorageClass", "string", "storageClassName is the name of StorageClass to which this persistent volume belongs."),
            Column::new("Reason", "string", "reason is a brief CamelCase string that describes any failure."),
            Column::age(),
            Column::new("VolumeMode", "string", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.").wide(),
        ],
        cells: pv_cells,
        fields: &[("status.phase", "/status/phase")],
    },
};

/// The PersistentVolumeClaim kind.
pub const PERSISTENT_VOLUME_CLAIM: Resource = Resource {
    group: "",
    version: "v1",
    kind: "PersistentVolumeClaim",
    plural: "persistentvolumeclaims",
    singular: "persistentvolumeclaim",
    short_names: &["pvc"],
    namespaced: true,
    has_status: true,
    behaviour: Behaviour {
        decode: roundtrip::<PersistentVolumeClaim>,
        normalize: Ok,
        prepare_create: prepare_pvc,
        validate: validate_pvc,
        columns: &[
            Column::name(),
            Column::new(
                "Status",
                "string",
                "phase represents the current phase of PersistentVolumeClaim.",
            ),
            Column::new(
                "Volume",
                "string",
                "volumeName is the binding reference to the PersistentVolume backing this claim.",
            ),
            Column::new(
                "Capacity",
                "string",
                "capacity represents the actual resources of the underlying volume.",
            ),
            Column::new(
                "Access Modes",
                "string",
                "accessModes contains the actual access modes the volume backing the PVC has.",
            ),
            Column::new(
                "StorageClass",
                "string",
                "storageClassName is the name of the StorageClass required by the claim.",
            ),
            Column::age(),
            Column::new(
                "VolumeMode",
                "string",
                "volumeMode defines what type of volume is required by the claim.",
            )
            .wide(),
        ],
        cells: pvc_cells,
        fields: &[
            ("status.phase", "/status/phase"),
            ("spec.volumeName", "/spec/volumeName"),
        ],
    },
};

/// The Event kind.
pub const EVENT: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    short_names: &["ev"],
    namespaced: true,
    has_status: false,
    behaviour: Behaviour {
        decode: roundtrip::<Event>,
        columns: &[
            Column::new(
                "Last Seen",
                "string",
                "lastTimestamp is the time when this Event was last observed.",
            ),
            Column::new("Type", "string", "Type of this event (Normal, Warning)."),
            Column::new("Reason", "string", "reason is why the action was taken."),
            Column::new("Object", "string", "The object that this event is about."),
            Column::new(
                "Message",
                "string",
                "A human-readable description of the status of this operation.",
            ),
        ],
        cells: event_cells,
        fields: &[
            ("involvedObject.kind", "/involvedObject/kind"),
            ("involvedObject.namespace", "/involvedObject/namespace"),
            ("involvedObject.name", "/involvedObject/name"),
            ("involvedObject.uid", "/involvedObject/uid"),
            ("involvedObject.apiVersion", "/involvedObject/apiVersion"),
            (
                "involvedObject.resourceVersion",
                "/involvedObject/resourceVersion",
            ),
            ("involvedObject.fieldPath", "/involvedObject/fieldPath"),
            ("reason", "/reason"),
            ("reportingComponent", "/reportingComponent"),
            ("source", "/source/component"),
            ("type", "/type"),
        ],
        ..PLAIN
    },
};

/// The Node kind.
pub const NODE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Node",
    plural: "nodes",
    singular: "node",
    short_names: &["no"],
    namespaced: false,
    has_status: true,
    behaviour: Behaviour {
        decode: roundtrip::<Node>,
        columns: &[
            Column::name(),
            Column::new("Status", "string", "The status of the node"),
            Column::new("Roles", "string", "The roles of the node"),
            Column::age(),
            Column::new("Version", "string", "Kubelet Version reported by the node."),
        ],
        cells: node_cells,
        fields: &[("spec.unschedulable", "/spec/unschedulable")],
        ..PLAIN
    },
};

/// The Namespace kind.
pub const NAMESPACE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Namespace",
    plural: "namespaces",
    singular: "namespace",
    short_names: &["ns"],
    namespaced: false,
    has_status: true,
    behaviour: Behaviour {
        decode: roundtrip::<Namespace>,
        normalize: Ok,
        prepare_create: prepare_namespace,
        validate: validate_namespace,
        columns: &[
            Column::name(),
            Column::new("Status", "string", "The status of the namespace"),
            Column::age(),
        ],
        cells: namespace_cells,
        fields: &[("status.phase", "/status/phase")],
    },
};

/// Served so that `kubectl describe pvc` can look for the pods using a claim;
/// nothing runs them.
pub const POD: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Pod",
    plural: "pods",
    singular: "pod",
    short_names: &["po"],
    namespaced: true,
    has_status: true,
    behaviour: Behaviour {
        decode: roundtrip::<Pod>,
        fields: &[
            ("spec.nodeName", "/spec/nodeName"),
            ("status.phase", "/status/phase"),
        ],
        ..PLAIN
    },
};

/// Upstream's PV strategy and defaults: status starts Pending, reclaim Retain, Filesystem mode.
fn prepare_pv(object: &mut Value, _: &dyn Reader) -> Result<()> {
    object["status"] = json!({"phase": "Pending"});
    default_at(
        object,
        &["spec", "persistentVolumeReclaimPolicy"],
        json!("Retain"),
    );
    default_at(object, &["spec", "volumeMode"], json!("Filesystem"));
    Ok(())
}

/// The class annotation from before `storageClassName`; upstream still honours it.
const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

/// The beta class annotation of an object, if it has one.
fn beta_class(object: &Value) -> Option<&Value> {
    object
        .pointer("/metadata/annotations")?
        .get(BETA_STORAGE_CLASS)
}

/// Upstream's PVC strategy, defaults and the DefaultStorageClass admission plugin,
/// which leaves a claim alone when it names a class in the field or the annotation.
fn prepare_pvc(object: &mut Value, reader: &dyn Reader) -> Result<()> {
    object["status"] = json!({"phase": "Pending"});
    default_at(object, &["spec", "volumeMode"], json!("Filesystem"));
    if object
        .pointer("/spec/storageClassName")
        .is_none_or(Value::is_null)
        && beta_class(object).is_none()
        && let Some(class) = default_class(reader)?
    {
        default_at(object, &["spec", "storageClassName"], json!(class));
    }
    Ok(())
}

/// The default StorageClass; with several, the newest wins, as upstream since 1.28.
fn default_class(reader: &dyn Reader) -> Result<Option<String>> {
    let mut best: Option<(String, String)> = None;
    reader.scan(
        &super::storage::STORAGE_CLASS.prefix(None),
        None,
        &mut |_, class| {
            let annotations = class.pointer("/metadata/annotations");
            let is_default = DEFAULT_CLASS_ANNOTATIONS.iter().any(|a| {
                annotations.and_then(|m| m.get(*a)).and_then(Value::as_str) == Some("true")
            });
            if is_default {
                let created = meta::string(&class, "creationTimestamp").to_string();
                let name = meta::name(&class).to_string();
                // Equal timestamps: the first name, as upstream's GetDefaultClass sorts.
                if best
                    .as_ref()
                    .is_none_or(|(c, n)| created > *c || (created == *c && name < *n))
                {
                    best = Some((created, name));
                }
            }
            true
        },
    )?;
    Ok(best.map(|(_, name)| name))
}

fn validate_pv(object: &Value, old: Option<&Value>) -> Result<Vec<FieldError>> {
    let (pv, mut errors) = decode_named::<PersistentVolume>(object)?;
    let spec = pv.spec.unwrap_or_default();
    match spec.capacity.as_ref().filter(|c| !c.is_empty()) {
        None => errors.push(FieldError::required("spec.capacity", "")),
        Some(capacity) => {
            for (resource, quantity) in capacity {
                if resource == "storage" {
                    check_positive_quantity("spec.capacity[storage]", &quantity.0, &mut errors);
                } else {
                    errors.push(FieldError::not_supported(
                        "spec.capacity",
                        resource.as_str(),
                        &["storage"],
                    ));
                }
            }
        }
    }
    check_access_modes(
        "spec.accessModes",
        spec.access_modes.as_deref(),
        &mut errors,
    );
    if let Some(policy) = &spec.persistent_volume_reclaim_policy {
        check_one_of(
            "spec.persistentVolumeReclaimPolicy",
            policy,
            RECLAIM_POLICIES,
            &mut errors,
        );
    }
    if let Some(mode) = &spec.volume_mode {
        check_one_of("spec.volumeMode", mode, VOLUME_MODES, &mut errors);
    }
    if let Some(class) = spec.storage_class_name.as_deref().filter(|c| !c.is_empty()) {
        check_subdomain("spec.storageClassName", class, &mut errors);
    }
    check_pv_source(object, &spec, &mut errors);
    if let Some(phase) = pv.status.and_then(|s| s.phase) {
        check_one_of("status.phase", &phase, PV_PHASES, &mut errors);
    }
    if let Some(old) = old {
        if pv_source(object) != pv_source(old) {
            errors.push(FieldError::forbidden(
                "spec.persistentvolumesource",
                "spec.persistentvolumesource is immutable after creation",
            ));
        }
        check_unchanged(
            "spec.volumeMode",
            &object["spec"]["volumeMode"],
            &old["spec"]["volumeMode"],
            &mut errors,
        );
    }
    Ok(errors)
}

/// The spec fields that make up the volume source, for the immutability check.
fn pv_source(object: &Value) -> Vec<(&String, &Value)> {
    let spec = object.get("spec").and_then(Value::as_object);
    spec.into_iter()
        .flatten()
        .filter(|(field, value)| !PV_SPEC_NON_SOURCES.contains(&field.as_str()) && !value.is_null())
        .collect()
}

fn check_pv_source(
    object: &Value,
    spec: &k8s_openapi::api::core::v1::PersistentVolumeSpec,
    errors: &mut Vec<FieldError>,
) {
    match pv_source(object).len() {
        0 => errors.push(FieldError::required("spec", "must specify a volume type")),
        1 => {}
        _ => errors.push(FieldError::forbidden(
            "spec",
            "may not specify more than 1 volume type",
        )),
    }
    if let Some(csi) = &spec.csi {
        if csi.driver.is_empty() {
            errors.push(FieldError::required("spec.csi.driver", ""));
        }
        if csi.volume_handle.is_empty() {
            errors.push(FieldError::required("spec.csi.volumeHandle", ""));
        }
    }
    if let Some(nfs) = &spec.nfs {
        if nfs.server.is_empty() {
            errors.push(FieldError::required("spec.nfs.server", ""));
        }
        if nfs.path.is_empty() {
            errors.push(FieldError::required("spec.nfs.path", ""));
        } else if !nfs.path.starts_with('/') {
            errors.push(FieldError::invalid(
                "spec.nfs.path",
                nfs.path.as_str(),
                "must be an absolute path",
            ));
        }
    }
    if let Some(host_path) = &spec.host_path {
        if host_path.path.is_empty() {
            errors.push(FieldError::required("spec.hostPath.path", ""));
        }
        if let Some(kind) = &host_path.type_ {
            check_one_of("spec.hostPath.type", kind, HOST_PATH_TYPES, errors);
        }
    }
    if let Some(local) = &spec.local {
        if local.path.is_empty() {
            errors.push(FieldError::required("spec.local.path", ""));
        }
        if spec.node_affinity.is_none() {
            errors.push(FieldError::required(
                "spec.nodeAffinity",
                "Local volume requires node affinity",
            ));
        }
    }
    if let Some(affinity) = &spec.node_affinity {
        match affinity.required.as_ref() {
            Some(required) if required.node_selector_terms.is_empty() => {
                errors.push(FieldError::required(
                    "spec.nodeAffinity.required.nodeSelectorTerms",
                    "must have at least one node selector term",
                ))
            }
            Some(required) => {
                for (i, term) in required.node_selector_terms.iter().enumerate() {
                    for (j, requirement) in term.match_expressions.iter().flatten().enumerate() {
                        check_one_of(
                            &format!(
                                "spec.nodeAffinity.required.nodeSelectorTerms[{i}].matchExpressions[{j}].operator"
                            ),
                            &requirement.operator,
                            &["DoesNotExist", "Exists", "Gt", "In", "Lt", "NotIn"],
                            errors,
                        );
                    }
                }
            }
            None => errors.push(FieldError::required("spec.nodeAffinity.required", "")),
        }
    }
}

fn validate_pvc(object: &Value, old: Option<&Value>) -> Result<Vec<FieldError>> {
    let (pvc, mut errors) = decode_named::<PersistentVolumeClaim>(object)?;
    let spec = pvc.spec.unwrap_or_default();
    check_access_modes(
        "spec.accessModes",
        spec.access_modes.as_deref(),
        &mut errors,
    );
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"));
    match storage {
        None => errors.push(FieldError::required("spec.resources[storage]", "")),
        Some(quantity) => {
            check_positive_quantity("spec.resources[storage]", &quantity.0, &mut errors)
        }
    }
    if let Some(mode) = &spec.volume_mode {
        check_one_of("spec.volumeMode", mode, VOLUME_MODES, &mut errors);
    }
    if let Some(class) = spec.storage_class_name.as_deref().filter(|c| !c.is_empty()) {
        check_subdomain("spec.storageClassName", class, &mut errors);
    }
    if let Some(selector) = &spec.selector {
        check_selector("spec.selector", selector, &mut errors);
    }
    if let Some(phase) = pvc.status.and_then(|s| s.phase) {
        check_one_of("status.phase", &phase, PVC_PHASES, &mut errors);
    }
    if let Some(old) = old {
        check_pvc_update(object, old, &mut errors);
    }
    Ok(errors)
}

/// A claim's spec is immutable except its storage request once bound (growing only),
/// a volumeName set for the first time, and a storageClassName set for the first
/// time (a retroactive default class, or the beta annotation's class moved into
/// the field), as upstream.
fn check_pvc_update(new: &Value, old: &Value, errors: &mut Vec<FieldError>) {
    let mut comparable = new.get("spec").cloned().unwrap_or(Value::Null);
    let old_spec = old.get("spec").cloned().unwrap_or(Value::Null);
    let unset = |v: Option<&Value>| v.is_none_or(|v| v.is_null() || v.as_str() == Some(""));
    if unset(old_spec.get("volumeName")) && comparable.is_object() {
        comparable["volumeName"] = old_spec.get("volumeName").cloned().unwrap_or(Value::Null);
    }
    if class_set_first_time(new, old, errors) && comparable.is_object() {
        comparable["storageClassName"] = Value::Null;
    }
    let bound = old.pointer("/status/phase").and_then(Value::as_str) == Some("Bound");
    if bound && comparable.is_object() {
        let new_request = new
            .pointer("/spec/resources/requests/storage")
            .and_then(Value::as_str);
        let old_request = old
            .pointer("/spec/resources/requests/storage")
            .and_then(Value::as_str);
        let parse =
            |q: Option<&str>| q.and_then(|q| stowage_common::quantity::Quantity::parse(q).ok());
        if let (Some(new_q), Some(old_q)) = (parse(new_request), parse(old_request))
            && new_q < old_q
        {
            errors.push(FieldError::forbidden(
                "spec.resources.requests.storage",
                "field can not be less than previous value",
            ));
        }
        comparable["resources"] = old_spec.get("resources").cloned().unwrap_or(Value::Null);
        // As upstream: a bound claim may name another VolumeAttributesClass (not
        // drop its class), which the modifier then applies to the volume.
        if !unset(new.pointer("/spec/volumeAttributesClassName")) {
            comparable["volumeAttributesClassName"] = old_spec
                .get("volumeAttributesClassName")
                .cloned()
                .unwrap_or(Value::Null);
        }
    }
    strip_nulls(&mut comparable);
    let mut old_spec = old_spec;
    strip_nulls(&mut old_spec);
    if comparable != old_spec {
        errors.push(FieldError::forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
}

/// Upstream's two allowed changes of a claim's class: from the beta annotation to
/// the same class in the field, and from nothing at all to a class. Otherwise the
/// annotation is immutable.
fn class_set_first_time(new: &Value, old: &Value, errors: &mut Vec<FieldError>) -> bool {
    let field = |object: &Value| {
        object
            .pointer("/spec/storageClassName")
            .filter(|v| !v.is_null())
            .cloned()
    };
    let (old_class, new_class) = (field(old), field(new));
    let (old_beta, new_beta) = (beta_class(old), beta_class(new));
    if let Some(old_beta) = old_beta
        && new_beta.is_none_or(|b| b == old_beta)
        && old_class.is_none()
        && new_class.as_ref() == Some(old_beta)
    {
        return true;
    }
    if old_beta != new_beta {
        errors.push(FieldError::invalid(
            format!("metadata.annotations.{BETA_STORAGE_CLASS}"),
            new_beta.cloned().unwrap_or(Value::Null),
            "field is immutable",
        ));
    }
    old_beta.is_none()
        && old_class.is_none()
        && new_class.is_some_and(|c| c.as_str().is_some_and(|c| !c.is_empty()))
}

fn strip_nulls(value: &mut Value) {
    if let Value::Object(map) = value {
        map.retain(|_, v| !v.is_null());
        map.values_mut().for_each(strip_nulls);
    }
}

/// Access modes are given, known, and ReadWriteOncePod alone, as upstream checks them.
pub fn check_access_modes(field: &str, modes: Option<&[String]>, errors: &mut Vec<FieldError>) {
    let modes = modes.unwrap_or_default();
    if modes.is_empty() {
        errors.push(FieldError::required(
            field,
            "at least 1 access mode is required",
        ));
    }
    for (i, mode) in modes.iter().enumerate() {
        check_one_of(&format!("{field}[{i}]"), mode, ACCESS_MODES, errors);
    }
    if modes.len() > 1 && modes.iter().any(|m| m == "ReadWriteOncePod") {
        errors.push(FieldError::forbidden(
            field,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

pub(crate) fn check_selector(field: &str, selector: &LabelSelector, errors: &mut Vec<FieldError>) {
    for (i, requirement) in selector.match_expressions.iter().flatten().enumerate() {
        let at = format!("{field}.matchExpressions[{i}]");
        let values = requirement.values.as_deref().unwrap_or_default();
        match requirement.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => errors.push(FieldError::required(
                format!("{at}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => errors.push(FieldError::forbidden(
                format!("{at}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errors.push(FieldError::not_supported(
                format!("{at}.operator"),
                other,
                &["DoesNotExist", "Exists", "In", "NotIn"],
            )),
        }
    }
}

fn prepare_namespace(object: &mut Value, _: &dyn Reader) -> Result<()> {
    object["status"] = json!({"phase": "Active"});
    Ok(())
}

fn validate_namespace(object: &Value, _: Option<&Value>) -> Result<Vec<FieldError>> {
    let mut errors = Vec::new();
    check_label_name("metadata.name", meta::name(object), &mut errors);
    Ok(errors)
}

fn pv_cells(object: &Value) -> Vec<Value> {
    let claim = match (
        text(object, "/spec/claimRef/namespace"),
        text(object, "/spec/claimRef/name"),
    ) {
        (_, name) if name.is_empty() => String::new(),
        (namespace, name) => format!("{namespace}/{name}"),
    };
    vec![
        json!(meta::name(object)),
        json!(text(object, "/spec/capacity/storage")),
        json!(table::access_modes(object, "/spec/accessModes")),
        json!(text(object, "/spec/persistentVolumeReclaimPolicy")),
        json!(table::phase(object)),
        json!(claim),
        json!(text(object, "/spec/storageClassName")),
        json!(text(object, "/status/reason")),
        table::age(object),
        json!(text(object, "/spec/volumeMode")),
    ]
}

fn pvc_cells(object: &Value) -> Vec<Value> {
    vec![
        json!(meta::name(object)),
        json!(table::phase(object)),
        json!(text(object, "/spec/volumeName")),
        json!(text(object, "/status/capacity/storage")),
        json!(table::access_modes(object, "/status/accessModes")),
        json!(text(object, "/spec/storageClassName")),
        table::age(object),
        json!(text(object, "/spec/volumeMode")),
    ]
}

fn event_cells(object: &Value) -> Vec<Value> {
    let last_seen = [
        "/lastTimestamp",
        "/eventTime",
        "/firstTimestamp",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .map(|p| text(object, p))
    .find(|t| !t.is_empty())
    .map(|t| meta::age(&t))
    .unwrap_or_else(|| "<unknown>".into());
    let involved = format!(
        "{}/{}",
        text(object, "/involvedObject/kind").to_lowercase(),
        text(object, "/involvedObject/name")
    );
    vec![
        json!(last_seen),
        json!(text(object, "/type")),
        json!(text(object, "/reason")),
        json!(involved),
        json!(text(object, "/message")),
    ]
}

fn node_cells(object: &Value) -> Vec<Value> {
    let ready = object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map(|c| {
            if c["status"] == "True" {
                "Ready"
            } else {
                "NotReady"
            }
        })
        .unwrap_or("Unknown");
    vec![
        json!(meta::name(object)),
        json!(ready),
        or_none(String::new()),
        table::age(object),
        json!(text(object, "/status/nodeInfo/kubeletVersion")),
    ]
}

fn namespace_cells(object: &Value) -> Vec<Value> {
    vec![
        json!(meta::name(object)),
        json!(table::phase(object)),
        table::age(object),
    ]
}
