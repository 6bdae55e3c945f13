//! Table-driven checks of matching, one rule of upstream's PV controller per case.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use serde_json::{Value, json};

use super::{Claim, Volume, VolumeIndex};

fn volume(name: &str, size: &str, modes: &[&str], extra: Value) -> Volume {
    let mut object = json!({
        "metadata": {"name": name},
        "spec": {"capacity": {"storage": size}, "accessModes": modes, "hostPath": {"path": "/x"}},
        "status": {"phase": "Available"},
    });
    json_patch::merge(&mut object, &extra);
    let pv: PersistentVolume =
        serde_json::from_value(object).unwrap_or_else(|e| panic!("{name}: {e}"));
    Volume::from_api(&pv)
}

fn claim(size: &str, modes: &[&str], extra: Value) -> Claim {
    let mut object = json!({
        "metadata": {"name": "claim", "namespace": "ns", "uid": "uid-1"},
        "spec": {"accessModes": modes, "resources": {"requests": {"storage": size}}},
    });
    json_patch::merge(&mut object, &extra);
    let pvc: PersistentVolumeClaim =
        serde_json::from_value(object).unwrap_or_else(|e| panic!("claim: {e}"));
    Claim::from_api(&pvc)
}

const RWO: &[&str] = &["ReadWriteOnce"];
const RWO_RWX: &[&str] = &["ReadWriteOnce", "ReadWriteMany"];

struct Case {
    name: &'static str,
    volumes: Vec<Volume>,
    claim: Claim,
    delay_binding: bool,
    expected: Option<&'static str>,
}

fn case(
    name: &'static str,
    volumes: Vec<Volume>,
    claim: Claim,
    expected: Option<&'static str>,
) -> Case {
    Case {
        name,
        volumes,
        claim,
        delay_binding: false,
        expected,
    }
}

fn cases() -> Vec<Case> {
    let none = json!({});
    vec![
        case(
            "smallest sufficient volume wins",
            vec![
                volume("big", "10Gi", RWO, none.clone()),
                volume("small", "2Gi", RWO, none.clone()),
                volume("too-small", "1Gi", RWO, none.clone()),
            ],
            claim("1500Mi", RWO, none.clone()),
            Some("small"),
        ),
        case(
            "capacity equal to the request is sufficient",
            vec![volume("exact", "1Gi", RWO, none.clone())],
            claim("1073741824", RWO, none.clone()),
            Some("exact"),
        ),
        case(
            "fewer access modes beat a smaller volume",
            vec![
                volume("rwo-10", "10Gi", RWO, none.clone()),
                volume("rwo-rwx-2", "2Gi", RWO_RWX, none.clone()),
            ],
            claim("1Gi", RWO, none.clone()),
            Some("rwo-10"),
        ),
        case(
            "a claim's modes must all be offered",
            vec![
                volume("rwo", "10Gi", RWO, none.clone()),
                volume("both", "20Gi", RWO_RWX, none.clone()),
            ],
            claim("1Gi", &["ReadWriteMany"], none.clone()),
            Some("both"),
        ),
        case(
            "the class must be the same; empty matches only empty",
            vec![
                volume(
                    "fast",
                    "1Gi",
                    RWO,
                    json!({"spec": {"storageClassName": "fast"}}),
                ),
                volume("classless", "5Gi", RWO, none.clone()),
            ],
            claim("1Gi", RWO, json!({"spec": {"storageClassName": ""}})),
            Some("classless"),
        ),
        case(
            "a classed claim ignores classless volumes",
            vec![volume("classless", "5Gi", RWO, none.clone())],
            claim("1Gi", RWO, json!({"spec": {"storageClassName": "fast"}})),
            None,
        ),
        case(
            "volume mode must match, unset meaning Filesystem",
            vec![
                volume(
                    "block",
                    "1Gi",
                    RWO,
                    json!({"spec": {"volumeMode": "Block"}}),
                ),
                volume("fs", "2Gi", RWO, none.clone()),
            ],
            claim("1Gi", RWO, none.clone()),
            Some("fs"),
        ),
        case(
            "matchLabels and matchExpressions select",
            vec![
                volume(
                    "gold-a",
                    "1Gi",
                    RWO,
                    json!({"metadata": {"labels": {"tier": "gold", "zone": "a"}}}),
                ),
                volume(
                    "gold-b",
                    "2Gi",
                    RWO,
                    json!({"metadata": {"labels": {"tier": "gold", "zone": "b"}}}),
                ),
                volume(
                    "silver",
                    "1Gi",
                    RWO,
                    json!({"metadata": {"labels": {"tier": "silver"}}}),
                ),
            ],
            claim(
                "1Gi",
                RWO,
                json!({"spec": {"selector": {
                    "matchLabels": {"tier": "gold"},
                    "matchExpressions": [
                        {"key": "zone", "operator": "NotIn", "values": ["a"]},
                        {"key": "zone", "operator": "Exists"},
                        {"key": "retired", "operator": "DoesNotExist"},
                        {"key": "zone", "operator": "In", "values": ["b", "c"]}
                    ]
                }}}),
            ),
            Some("gold-b"),
        ),
        case(
            "a volume being deleted is skipped",
            vec![
                volume(
                    "going",
                    "1Gi",
                    RWO,
                    json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["x"]}}),
                ),
                volume("staying", "3Gi", RWO, none.clone()),
            ],
            claim("1Gi", RWO, none.clone()),
            Some("staying"),
        ),
        case(
            "only Available volumes are candidates",
            vec![
                volume(
                    "released",
                    "1Gi",
                    RWO,
                    json!({"status": {"phase": "Released"}}),
                ),
                volume(
                    "pending",
                    "1Gi",
                    RWO,
                    json!({"status": {"phase": "Pending"}}),
                ),
                volume("available", "4Gi", RWO, none.clone()),
            ],
            claim("1Gi", RWO, none.clone()),
            Some("available"),
        ),
        case(
            "a volume pre-bound to another claim is not a candidate",
            vec![
                volume(
                    "theirs",
                    "1Gi",
                    RWO,
                    json!({"spec": {"claimRef": {"namespace": "ns", "name": "other"}}}),
                ),
                volume("free", "8Gi", RWO, none.clone()),
            ],
            claim("1Gi", RWO, none.clone()),
            Some("free"),
        ),
        case(
            "a volume pre-bound to this claim wins over a smaller free one",
            vec![
                volume("free", "1Gi", RWO, none.clone()),
                volume(
                    "mine",
                    "8Gi",
                    RWO,
                    json!({"spec": {"claimRef": {"namespace": "ns", "name": "claim"}}}),
                ),
            ],
            claim("1Gi", RWO, none.clone()),
            Some("mine"),
        ),
        case(
            "pre-binding ignores class and phase but not size",
            vec![
                volume(
                    "mine-small",
                    "1Mi",
                    RWO,
                    json!({"spec": {"claimRef": {"namespace": "ns", "name": "claim"}}}),
                ),
                volume(
                    "mine",
                    "8Gi",
                    RWO,
                    json!({"spec": {"storageClassName": "other", "claimRef": {"namespace": "ns", "name": "claim"}}, "status": {"phase": "Pending"}}),
                ),
            ],
            claim("1Gi", RWO, none.clone()),
            Some("mine"),
        ),
        case(
            "a claimRef with another uid is another claim",
            vec![volume(
                "old",
                "1Gi",
                RWO,
                json!({"spec": {"claimRef": {"namespace": "ns", "name": "claim", "uid": "uid-0"}}}),
            )],
            claim("1Gi", RWO, none.clone()),
            None,
        ),
        case(
            "a claimRef with this uid matches",
            vec![volume(
                "mine",
                "1Gi",
                RWO,
                json!({"spec": {"claimRef": {"namespace": "ns", "name": "claim", "uid": "uid-1"}}}),
            )],
            claim("1Gi", RWO, none.clone()),
            Some("mine"),
        ),
        case(
            "a free volume in a smaller access group beats a pre-bound one in a larger group",
            vec![
                volume("free-rwo", "1Gi", RWO, none.clone()),
                volume(
                    "mine-rwx",
                    "1Gi",
                    RWO_RWX,
                    json!({"spec": {"claimRef": {"namespace": "ns", "name": "claim"}}}),
                ),
            ],
            claim("1Gi", RWO, none.clone()),
            Some("free-rwo"),
        ),
        case(
            "ties of capacity break by name",
            vec![
                volume("b", "1Gi", RWO, none.clone()),
                volume("a", "1Gi", RWO, none.clone()),
            ],
            claim("1Gi", RWO, none.clone()),
            Some("a"),
        ),
        case(
            "quantities compare exactly at the top of the range",
            vec![
                volume("huge", "800Ei", RWO, none.clone()),
                volume("bigger", "801Ei", RWO, none.clone()),
            ],
            claim("800Ei", RWO, none.clone()),
            Some("huge"),
        ),
        case(
            "a claim with a malformed request matches nothing",
            vec![volume("any", "1Gi", RWO, none.clone())],
            claim("lots", RWO, none.clone()),
            None,
        ),
        Case {
            delay_binding: true,
            ..case(
                "WaitForFirstConsumer leaves unbound volumes to the scheduler",
                vec![volume("free", "1Gi", RWO, none.clone())],
                claim("1Gi", RWO, none.clone()),
                None,
            )
        },
        Case {
            delay_binding: true,
            ..case(
                "WaitForFirstConsumer still takes a pre-bound volume",
                vec![
                    volume("free", "1Gi", RWO, none.clone()),
                    volume(
                        "mine",
                        "2Gi",
                        RWO,
                        json!({"spec": {"claimRef": {"namespace": "ns", "name": "claim"}}}),
                    ),
                ],
                claim("1Gi", RWO, none.clone()),
                Some("mine"),
            )
        },
    ]
}

#[test]
fn matching_follows_upstream_rules() {
    for case in cases() {
        let mut index = VolumeIndex::new();
        for volume in case.volumes {
            index.upsert(volume);
        }
        let found = index
            .find_match(&case.claim, case.delay_binding)
            .map(|v| v.name.as_str());
        assert_eq!(found, case.expected, "{}", case.name);
    }
}

#[test]
fn the_index_forgets_volumes_that_stop_being_available() {
    let mut index = VolumeIndex::new();
    index.upsert(volume("a", "1Gi", RWO, json!({})));
    index.upsert(volume("b", "2Gi", RWO, json!({})));
    let wanted = claim("1Gi", RWO, json!({}));
    assert_eq!(
        index.find_match(&wanted, false).map(|v| v.name.clone()),
        Some("a".into())
    );
    index.upsert(volume("a", "1Gi", RWO, json!({"spec": {"claimRef": {"namespace": "x", "name": "y", "uid": "u"}}, "status": {"phase": "Bound"}})));
    assert_eq!(
        index.find_match(&wanted, false).map(|v| v.name.clone()),
        Some("b".into())
    );
    index.remove("b");
    assert_eq!(index.find_match(&wanted, false), None);
    assert_eq!(index.len(), 1);
}
