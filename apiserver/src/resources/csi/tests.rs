//! Upstream's validation of the CSI kinds, case by case: what is accepted, and which
//! fields a refusal names.

use serde_json::{Value, json};

use super::*;

fn node(drivers: Value) -> Value {
    json!({"metadata": {"name": "node1"}, "spec": {"drivers": drivers}})
}

fn driver(name: &str, node_id: &str, keys: Value) -> Value {
    json!({"name": name, "nodeID": node_id, "topologyKeys": keys})
}

fn attachment(source: Value, node: &str) -> Value {
    json!({"metadata": {"name": "csi-0123"},
           "spec": {"attacher": "csi.stowage.io", "nodeName": node, "source": source}})
}

fn capacity(class: &str, capacity: &str) -> Value {
    json!({"metadata": {"name": "cap-1", "namespace": "default"},
           "storageClassName": class, "capacity": capacity,
           "nodeTopology": {"matchLabels": {"topology.stowage.io/node": "node1"}}})
}

fn attributes(driver: &str, parameters: Value) -> Value {
    json!({"metadata": {"name": "gold"}, "driverName": driver, "parameters": parameters})
}

/// The fields the validation names, or the decode error.
fn refused(
    validate: fn(&Value, Option<&Value>) -> Result<Vec<FieldError>>,
    object: &Value,
    old: Option<&Value>,
) -> Vec<String> {
    match validate(object, old) {
        Ok(errors) => errors.into_iter().map(|e| e.field).collect(),
        Err(e) => vec![format!("error: {e}")],
    }
}

#[test]
fn csi_nodes() {
    let good = node(json!([driver(
        "csi.stowage.io",
        "node1",
        json!(["topology.stowage.io/node"])
    )]));
    let long_id = "n".repeat(MAX_NODE_ID + 1);
    let cases: Vec<(&str, Value, Option<Value>, Vec<&str>)> = vec![
        ("a registered driver", good.clone(), None, vec![]),
        ("no drivers yet", node(json!([])), None, vec![]),
        (
            "driver name required",
            node(json!([driver("", "n", json!([]))])),
            None,
            vec!["spec.drivers[0].name"],
        ),
        (
            "driver name a subdomain",
            node(json!([driver("CSI_Driver", "n", json!([]))])),
            None,
            vec!["spec.drivers[0].name"],
        ),
        (
            "nodeID required",
            node(json!([driver("d.io", "", json!([]))])),
            None,
            vec!["spec.drivers[0].nodeID"],
        ),
        (
            "nodeID at most 192",
            node(json!([driver("d.io", &long_id, json!([]))])),
            None,
            vec!["spec.drivers[0].nodeID"],
        ),
        (
            "duplicate drivers",
            node(json!([
                driver("d.io", "a", json!([])),
                driver("d.io", "b", json!([]))
            ])),
            None,
            vec!["spec.drivers[1].name"],
        ),
        (
            "duplicate topology keys",
            node(json!([driver("d.io", "a", json!(["k", "k"]))])),
            None,
            vec!["spec.drivers[0]"],
        ),
        (
            "topology keys are qualified names",
            node(json!([driver("d.io", "a", json!(["-bad-"]))])),
            None,
            vec!["spec.drivers[0]"],
        ),
        (
            "negative allocatable",
            node(json!([{"name": "d.io", "nodeID": "a", "allocatable": {"count": -1}}])),
            None,
            vec!["spec.drivers[0].allocatable.count"],
        ),
        (
            "an existing driver's nodeID is immutable",
            node(json!([driver(
                "csi.stowage.io",
                "node2",
                json!(["topology.stowage.io/node"])
            )])),
            Some(good.clone()),
            vec!["spec.drivers"],
        ),
        (
            "drivers may be added and removed",
            node(json!([driver("other.io", "x", json!([]))])),
            Some(good.clone()),
            vec![],
        ),
        (
            "a wrongly typed field is a decode error",
            json!({"metadata": {"name": "n"}, "spec": {"drivers": "x"}}),
            None,
            vec!["error"],
        ),
    ];
    for (what, object, old, expected) in cases {
        let fields = refused(validate_csi_node, &object, old.as_ref());
        let fields: Vec<&str> = fields
            .iter()
            .map(|f| {
                if f.starts_with("error") {
                    "error"
                } else {
                    f.as_str()
                }
            })
            .collect();
        assert_eq!(fields, expected, "{what}");
    }
}

#[test]
fn volume_attachments() {
    let by_pv = attachment(json!({"persistentVolumeName": "pv1"}), "node1");
    let cases: Vec<(&str, Value, Option<Value>, Vec<&str>)> = vec![
        ("a PV on a node", by_pv.clone(), None, vec![]),
        (
            "an inline volume",
            attachment(
                json!({"inlineVolumeSpec": {"csi": {"driver": "d.io", "volumeHandle": "h"}}}),
                "node1",
            ),
            None,
            vec![],
        ),
        (
            "a source is required",
            attachment(json!({}), "node1"),
            None,
            vec!["spec.source"],
        ),
        (
            "not both sources",
            attachment(
                json!({"persistentVolumeName": "pv1", "inlineVolumeSpec": {}}),
                "node1",
            ),
            None,
            vec!["spec.source"],
        ),
        (
            "an empty PV name",
            attachment(json!({"persistentVolumeName": ""}), "node1"),
            None,
            vec!["spec.source.persistentVolumeName"],
        ),
        (
            "a PV name is a subdomain",
            attachment(json!({"persistentVolumeName": "PV_1"}), "node1"),
            None,
            vec!["spec.source.persistentVolumeName"],
        ),
        (
            "a node is required",
            attachment(json!({"persistentVolumeName": "pv1"}), ""),
            None,
            vec!["spec.nodeName"],
        ),
        (
            "attacher required",
            json!({"metadata": {"name": "a"}, "spec": {"attacher": "", "nodeName": "n", "source": {"persistentVolumeName": "p"}}}),
            None,
            vec!["spec.attacher"],
        ),
        (
            "status is free to change",
            {
                let mut v = by_pv.clone();
                v["status"] = json!({"attached": true, "attachmentMetadata": {"lun": "1"}});
                v
            },
            Some(by_pv.clone()),
            vec![],
        ),
        (
            "a long attach error",
            {
                let mut v = by_pv.clone();
                v["status"] = json!({"attached": false, "attachError": {"message": "x".repeat(MAX_ERROR_MESSAGE + 1)}});
                v
            },
            None,
            vec!["status.attachError.message"],
        ),
        (
            "a negative error code",
            {
                let mut v = by_pv.clone();
                v["status"] = json!({"attached": false, "detachError": {"errorCode": -1}});
                v
            },
            None,
            vec!["status.detachError.errorCode"],
        ),
        (
            "spec is immutable",
            attachment(json!({"persistentVolumeName": "pv1"}), "node2"),
            Some(by_pv.clone()),
            vec!["spec"],
        ),
    ];
    for (what, object, old, expected) in cases {
        assert_eq!(
            refused(validate_attachment, &object, old.as_ref()),
            expected,
            "{what}"
        );
    }
}

#[test]
fn storage_capacities() {
    let good = capacity("fast", "10Gi");
    let cases: Vec<(&str, Value, Option<Value>, Vec<&str>)> = vec![
        ("a capacity", good.clone(), None, vec![]),
        ("zero is allowed", capacity("fast", "0"), None, vec![]),
        (
            "negative is not",
            capacity("fast", "-1Gi"),
            None,
            vec!["capacity"],
        ),
        (
            "a class is required",
            capacity("", "1Gi"),
            None,
            vec!["storageClassName"],
        ),
        (
            "the class is a subdomain",
            capacity("Fast", "1Gi"),
            None,
            vec!["storageClassName"],
        ),
        (
            "a bad selector",
            {
                let mut v = good.clone();
                v["nodeTopology"] = json!({"matchExpressions": [{"key": "k", "operator": "In"}]});
                v
            },
            None,
            vec!["nodeTopology.matchExpressions[0].values"],
        ),
        (
            "capacity may change",
            capacity("fast", "5Gi"),
            Some(good.clone()),
            vec![],
        ),
        (
            "the class may not",
            capacity("slow", "10Gi"),
            Some(good.clone()),
            vec!["storageClassName"],
        ),
        (
            "the topology may not",
            {
                let mut v = good.clone();
                v["nodeTopology"] = json!({"matchLabels": {"topology.stowage.io/node": "node2"}});
                v
            },
            Some(good.clone()),
            vec!["nodeTopology"],
        ),
    ];
    for (what, object, old, expected) in cases {
        assert_eq!(
            refused(validate_capacity, &object, old.as_ref()),
            expected,
            "{what}"
        );
    }
}

#[test]
fn volume_attributes_classes() {
    let good = attributes("csi.stowage.io", json!({"onDelete": "retain"}));
    let cases: Vec<(&str, Value, Option<Value>, Vec<&str>)> = vec![
        ("a class", good.clone(), None, vec![]),
        (
            "a driver is required",
            attributes("", json!({"a": "b"})),
            None,
            vec!["driverName"],
        ),
        (
            "the driver is a qualified name",
            attributes("csi stowage", json!({"a": "b"})),
            None,
            vec!["driverName"],
        ),
        (
            "at least one parameter",
            attributes("csi.stowage.io", json!({})),
            None,
            vec!["parameters"],
        ),
        (
            "no empty keys",
            attributes("csi.stowage.io", json!({"": "x"})),
            None,
            vec!["parameters"],
        ),
        (
            "parameters are immutable",
            attributes("csi.stowage.io", json!({"onDelete": "delete"})),
            Some(good.clone()),
            vec!["parameters"],
        ),
        (
            "the driver is immutable",
            attributes("other.io", json!({"onDelete": "retain"})),
            Some(good.clone()),
            vec!["driverName"],
        ),
        (
            "labels may change",
            {
                let mut v = good.clone();
                v["metadata"]["labels"] = json!({"tier": "gold"});
                v
            },
            Some(good.clone()),
            vec![],
        ),
    ];
    for (what, object, old, expected) in cases {
        assert_eq!(
            refused(validate_attributes_class, &object, old.as_ref()),
            expected,
            "{what}"
        );
    }
}

#[test]
fn kubectl_cells() {
    let mut va = attachment(json!({"persistentVolumeName": "pv1"}), "node1");
    va["status"] = json!({"attached": true});
    let cells = attachment_cells(&va);
    assert_eq!(
        &cells[..5],
        &[
            json!("csi-0123"),
            json!("csi.stowage.io"),
            json!("pv1"),
            json!("node1"),
            json!(true)
        ]
    );
    assert_eq!(
        capacity_cells(&capacity("fast", "10Gi")),
        vec![json!("cap-1"), json!("fast"), json!("10Gi")]
    );
    let unset = json!({"metadata": {"name": "c"}, "storageClassName": "fast"});
    assert_eq!(capacity_cells(&unset)[2], json!("<unset>"));
    let two = node(json!([
        driver("a.io", "1", json!([])),
        driver("b.io", "2", json!([]))
    ]));
    assert_eq!(csi_node_cells(&two)[1], json!(2));
}
