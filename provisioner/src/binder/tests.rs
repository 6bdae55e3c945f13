//! Table-driven checks of matching, one rule of upstream's PV controller per case.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use serde_json::{Value, json};

use super::sync::{ClaimAction, ClassInfo, Classes, VolumeAction, sync_claim, sync_volume};
use super::{Claim, ReclaimPolicy, Volume, VolumeIndex, VolumePhase};

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

fn index_of(volumes: Vec<Volume>) -> VolumeIndex {
    let mut index = VolumeIndex::new();
    for volume in volumes {
        index.upsert(volume);
    }
    index
}

fn reason(action: &ClaimAction) -> String {
    match action {
        ClaimAction::Bind { volume } => format!("bind {volume}"),
        ClaimAction::Pending(Some(event)) => format!("pending {}", event.reason),
        ClaimAction::Pending(None) => "pending".into(),
        ClaimAction::Provision => "provision".into(),
        ClaimAction::Lost(event) => format!("lost {}", event.reason),
        ClaimAction::AssignClass(class) => format!("assign {class}"),
    }
}

/// Name, volumes, claim, its class, and the expected decision.
type ClaimCase<'a> = (&'a str, Vec<Volume>, Claim, Option<&'a ClassInfo>, &'a str);

/// The classes a case sees: the claim's own (if it exists) under its name.
fn classes_for(claim: &Claim, class: Option<&ClassInfo>) -> Classes {
    Classes {
        by_name: class
            .map(|info| (claim.class.clone(), info.clone()))
            .into_iter()
            .collect(),
        default: None,
    }
}

#[test]
fn claims_are_bound_provisioned_or_left_pending_with_a_reason() {
    let none = json!({});
    let immediate = ClassInfo {
        wait_for_first_consumer: false,
        provisioner: "csi.stowage.io".into(),
    };
    let wffc = ClassInfo {
        wait_for_first_consumer: true,
        provisioner: "csi.stowage.io".into(),
    };
    let static_only = ClassInfo {
        wait_for_first_consumer: false,
        provisioner: super::sync::NO_PROVISIONER.into(),
    };
    let free = || volume("free", "1Gi", RWO, none.clone());
    let fast_claim = |extra: Value| {
        let mut spec = json!({"spec": {"storageClassName": "fast"}});
        json_patch::merge(&mut spec, &extra);
        claim("1Gi", RWO, spec)
    };
    let fast_free = || {
        volume(
            "fast-free",
            "1Gi",
            RWO,
            json!({"spec": {"storageClassName": "fast"}}),
        )
    };
    let cases: Vec<ClaimCase> = vec![
        (
            "a matching volume is bound",
            vec![free()],
            claim("1Gi", RWO, none.clone()),
            None,
            "bind free",
        ),
        (
            "no class and no volume",
            vec![],
            claim("1Gi", RWO, json!({"spec": {"storageClassName": ""}})),
            None,
            "pending FailedBinding",
        ),
        (
            "a missing class",
            vec![],
            fast_claim(none.clone()),
            None,
            "pending ProvisioningFailed",
        ),
        (
            "a provisioner class with no volume",
            vec![],
            fast_claim(none.clone()),
            Some(&immediate),
            "provision",
        ),
        (
            "a static-only class with no volume",
            vec![],
            fast_claim(none.clone()),
            Some(&static_only),
            "pending ProvisioningFailed",
        ),
        (
            "WaitForFirstConsumer waits",
            vec![fast_free()],
            fast_claim(none.clone()),
            Some(&wffc),
            "pending WaitForFirstConsumer",
        ),
        (
            "a selected node hands the claim to the provisioner",
            vec![fast_free()],
            fast_claim(
                json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": "n1"}}}),
            ),
            Some(&wffc),
            "provision",
        ),
        (
            "spec.volumeName binds that volume",
            vec![free(), volume("named", "5Gi", RWO, none.clone())],
            claim("1Gi", RWO, json!({"spec": {"volumeName": "named"}})),
            None,
            "bind named",
        ),
        (
            "spec.volumeName of a missing volume waits",
            vec![],
            claim("1Gi", RWO, json!({"spec": {"volumeName": "later"}})),
            None,
            "pending",
        ),
        (
            "spec.volumeName of a too small volume",
            vec![volume("named", "1Mi", RWO, none.clone())],
            claim("1Gi", RWO, json!({"spec": {"volumeName": "named"}})),
            None,
            "pending VolumeMismatch",
        ),
        (
            "spec.volumeName of a volume bound elsewhere",
            vec![volume(
                "named",
                "5Gi",
                RWO,
                json!({"spec": {"claimRef": {"namespace": "ns", "name": "other", "uid": "u9"}}}),
            )],
            claim("1Gi", RWO, json!({"spec": {"volumeName": "named"}})),
            None,
            "pending FailedBinding",
        ),
        (
            "a bound claim whose volume is gone is Lost",
            vec![],
            claim(
                "1Gi",
                RWO,
                json!({"spec": {"volumeName": "gone"}, "metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes"}}}),
            ),
            None,
            "lost ClaimLost",
        ),
        (
            "a bound claim whose volume is bound elsewhere is misbound",
            vec![volume(
                "v",
                "5Gi",
                RWO,
                json!({"spec": {"claimRef": {"namespace": "ns", "name": "other", "uid": "u9"}}}),
            )],
            claim(
                "1Gi",
                RWO,
                json!({"spec": {"volumeName": "v"}, "metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes"}}}),
            ),
            None,
            "lost ClaimMisbound",
        ),
        (
            "a half-bound claim is completed (crash between the two writes)",
            vec![volume(
                "v",
                "5Gi",
                RWO,
                json!({"spec": {"claimRef": {"namespace": "ns", "name": "claim", "uid": "uid-1"}}, "status": {"phase": "Bound"}}),
            )],
            claim("1Gi", RWO, none.clone()),
            None,
            "bind v",
        ),
    ];
    for (name, volumes, wanted, class, expected) in cases {
        let index = index_of(volumes);
        let classes = classes_for(&wanted, class);
        assert_eq!(
            reason(&sync_claim(&wanted, &classes, &index)),
            expected,
            "{name}"
        );
    }
}

#[test]
fn volumes_follow_their_claims_through_the_phases() {
    let bound_to = |uid: &str, extra: Value| {
        let mut object = json!({"spec": {"claimRef": {"namespace": "ns", "name": "claim", "uid": uid}}, "status": {"phase": "Bound"}});
        json_patch::merge(&mut object, &extra);
        volume("v", "1Gi", RWO, object)
    };
    let bound_claim = claim("1Gi", RWO, json!({"spec": {"volumeName": "v"}}));
    let elsewhere = claim("1Gi", RWO, json!({"spec": {"volumeName": "other"}}));
    let cases: Vec<(&str, Volume, Option<Claim>, VolumeAction)> = vec![
        (
            "an unclaimed Pending volume becomes Available",
            volume("v", "1Gi", RWO, json!({"status": {"phase": "Pending"}})),
            None,
            VolumeAction::SetPhase(VolumePhase::Available),
        ),
        (
            "an Available volume stays",
            volume("v", "1Gi", RWO, json!({})),
            None,
            VolumeAction::Nothing,
        ),
        (
            "pre-bound by name only stays Available",
            volume(
                "v",
                "1Gi",
                RWO,
                json!({"spec": {"claimRef": {"namespace": "ns", "name": "claim"}}, "status": {"phase": "Pending"}}),
            ),
            None,
            VolumeAction::SetPhase(VolumePhase::Available),
        ),
        (
            "bound to its claim: Bound",
            bound_to("uid-1", json!({"status": {"phase": "Available"}})),
            Some(bound_claim.clone()),
            VolumeAction::SetPhase(VolumePhase::Bound),
        ),
        (
            "claim deleted: reclaim by Retain",
            bound_to("uid-1", json!({})),
            None,
            VolumeAction::Reclaim(ReclaimPolicy::Retain),
        ),
        (
            "claim re-created with a new uid: reclaim by Delete",
            bound_to(
                "uid-0",
                json!({"spec": {"persistentVolumeReclaimPolicy": "Delete"}}),
            ),
            Some(bound_claim.clone()),
            VolumeAction::Reclaim(ReclaimPolicy::Delete),
        ),
        (
            "half-bound: wait for the claim's sync",
            bound_to("uid-1", json!({})),
            Some(claim("1Gi", RWO, json!({}))),
            VolumeAction::Nothing,
        ),
        (
            "claim bound elsewhere: unbind",
            bound_to("uid-1", json!({})),
            Some(elsewhere.clone()),
            VolumeAction::Unbind,
        ),
        (
            "a provisioned volume whose claim went elsewhere is deleted",
            bound_to(
                "uid-1",
                json!({"metadata": {"annotations": {"pv.kubernetes.io/provisioned-by": "csi.stowage.io"}}, "spec": {"persistentVolumeReclaimPolicy": "Delete"}}),
            ),
            Some(elsewhere),
            VolumeAction::Reclaim(ReclaimPolicy::Delete),
        ),
    ];
    for (name, subject, owner, expected) in cases {
        assert_eq!(sync_volume(&subject, owner.as_ref()), expected, "{name}");
    }
}

fn pvc_of(extra: Value) -> PersistentVolumeClaim {
    let mut object = json!({
        "metadata": {"name": "claim", "namespace": "ns", "uid": "uid-1"},
        "spec": {"accessModes": RWO, "resources": {"requests": {"storage": "1Gi"}}},
    });
    json_patch::merge(&mut object, &extra);
    serde_json::from_value(object).unwrap_or_else(|e| panic!("claim: {e}"))
}

fn pv_of(extra: Value) -> PersistentVolume {
    let mut object = json!({
        "metadata": {"name": "v"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": RWO, "hostPath": {"path": "/x"}},
    });
    json_patch::merge(&mut object, &extra);
    serde_json::from_value(object).unwrap_or_else(|e| panic!("volume: {e}"))
}

/// The status fields the binder owns, as JSON, for comparison.
fn status_json(status: Option<k8s_openapi::api::core::v1::PersistentVolumeClaimStatus>) -> Value {
    status.map_or(
        Value::Null,
        |s| json!({"phase": s.phase, "accessModes": s.access_modes, "capacity": s.capacity}),
    )
}

#[test]
fn a_bound_claims_access_modes_follow_its_volume_and_capacity_is_written_once() {
    use super::status::bound_status;
    let rwx = json!({"spec": {"accessModes": ["ReadWriteMany"]}});
    let bound = |modes: Value, capacity: &str| json!({"status": {"phase": "Bound", "accessModes": modes, "capacity": {"storage": capacity}}});
    let cases = [
        (
            "becoming Bound: modes and capacity from the volume",
            pvc_of(json!({"status": {"phase": "Pending"}})),
            pv_of(json!({"spec": {"capacity": {"storage": "2Gi"}}})),
            json!({"phase": "Bound", "accessModes": RWO, "capacity": {"storage": "2Gi"}}),
        ),
        (
            "already Bound, same modes: nothing to write",
            pvc_of(bound(json!(RWO), "1Gi")),
            pv_of(json!({})),
            Value::Null,
        ),
        (
            "the volume's modes changed: the claim's follow",
            pvc_of(bound(json!(RWO), "1Gi")),
            pv_of(rwx.clone()),
            json!({"phase": "Bound", "accessModes": ["ReadWriteMany"], "capacity": {"storage": "1Gi"}}),
        ),
        (
            "the modes follow but a Bound claim's capacity is the resizer's",
            pvc_of(bound(json!(RWO), "1Gi")),
            pv_of(
                json!({"spec": {"accessModes": ["ReadWriteMany"], "capacity": {"storage": "5Gi"}}}),
            ),
            json!({"phase": "Bound", "accessModes": ["ReadWriteMany"], "capacity": {"storage": "1Gi"}}),
        ),
        (
            "a different capacity alone is not rewritten",
            pvc_of(bound(json!(RWO), "1Gi")),
            pv_of(json!({"spec": {"capacity": {"storage": "5Gi"}}})),
            Value::Null,
        ),
    ];
    for (name, pvc, pv, expected) in cases {
        assert_eq!(status_json(bound_status(&pvc, &pv)), expected, "{name}");
    }
}

#[test]
fn a_claim_that_is_not_bound_has_no_access_modes_or_capacity() {
    use super::status::unbound_status;
    let was_bound =
        json!({"status": {"phase": "Bound", "accessModes": RWO, "capacity": {"storage": "1Gi"}}});
    let cases = [
        (
            "Lost (volume gone or misbound): modes and capacity cleared",
            pvc_of(was_bound.clone()),
            "Lost",
            json!({"phase": "Lost", "accessModes": null, "capacity": null}),
        ),
        (
            "Lost already but with stale modes: cleared",
            pvc_of(json!({"status": {"phase": "Lost", "accessModes": RWO}})),
            "Lost",
            json!({"phase": "Lost", "accessModes": null, "capacity": null}),
        ),
        (
            "Lost and clean: nothing to write",
            pvc_of(json!({"status": {"phase": "Lost"}})),
            "Lost",
            Value::Null,
        ),
        (
            "Pending and clean: nothing to write",
            pvc_of(json!({"status": {"phase": "Pending"}})),
            "Pending",
            Value::Null,
        ),
        (
            "empty lists count as cleared",
            pvc_of(json!({"status": {"phase": "Pending", "accessModes": [], "capacity": {}}})),
            "Pending",
            Value::Null,
        ),
    ];
    for (name, pvc, phase, expected) in cases {
        assert_eq!(status_json(unbound_status(&pvc, phase)), expected, "{name}");
    }
    let misbound = claim(
        "1Gi",
        RWO,
        json!({"spec": {"volumeName": "v"}, "metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes"}}}),
    );
    let elsewhere = volume(
        "v",
        "1Gi",
        RWO,
        json!({"spec": {"claimRef": {"namespace": "ns", "name": "claim", "uid": "uid-0"}}}),
    );
    assert_eq!(
        reason(&sync_claim(
            &misbound,
            &Classes::default(),
            &index_of(vec![elsewhere])
        )),
        "lost ClaimMisbound",
        "a claimRef naming another uid makes the claim Lost"
    );
}

#[test]
fn the_beta_class_annotation_is_read_before_the_field() {
    let beta = |class: &str| json!({"metadata": {"annotations": {"volume.beta.kubernetes.io/storage-class": class}}});
    let cases: Vec<(&str, Value, &str, bool)> = vec![
        (
            "field only",
            json!({"spec": {"storageClassName": "fast"}}),
            "fast",
            true,
        ),
        ("annotation only", beta("slow"), "slow", true),
        (
            "annotation wins over the field",
            {
                let mut both = beta("slow");
                json_patch::merge(&mut both, &json!({"spec": {"storageClassName": "fast"}}));
                both
            },
            "slow",
            true,
        ),
        (
            "an empty field is a class: none",
            json!({"spec": {"storageClassName": ""}}),
            "",
            true,
        ),
        ("neither: no class set", json!({}), "", false),
    ];
    for (name, extra, class, has_class) in cases {
        let wanted = claim("1Gi", RWO, extra.clone());
        assert_eq!(
            (wanted.class.as_str(), wanted.has_class),
            (class, has_class),
            "claim: {name}"
        );
        let found = volume("v", "1Gi", RWO, extra);
        assert_eq!(found.class, class, "volume: {name}");
    }
    let annotated = volume("beta", "1Gi", RWO, beta("slow"));
    let index = index_of(vec![annotated, volume("plain", "1Gi", RWO, json!({}))]);
    assert_eq!(
        index
            .find_match(&claim("1Gi", RWO, beta("slow")), false)
            .map(|v| v.name.as_str()),
        Some("beta"),
        "claim and volume of the annotated class match"
    );
}

fn storage_class(
    name: &str,
    created: &str,
    default: Option<&str>,
) -> k8s_openapi::api::storage::v1::StorageClass {
    let mut object = json!({
        "metadata": {"name": name, "creationTimestamp": created},
        "provisioner": "csi.stowage.io",
    });
    if let Some(key) = default {
        object["metadata"]["annotations"] = json!({key: "true"});
    }
    serde_json::from_value(object).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn the_default_class_is_the_newest_default_then_the_first_name() {
    const GA: &str = "storageclass.kubernetes.io/is-default-class";
    const BETA: &str = "storageclass.beta.kubernetes.io/is-default-class";
    let cases = [
        (
            "no default",
            vec![storage_class("a", "2026-01-01T00:00:00Z", None)],
            None,
        ),
        (
            "the one default",
            vec![
                storage_class("a", "2026-01-01T00:00:00Z", None),
                storage_class("b", "2026-01-01T00:00:00Z", Some(GA)),
            ],
            Some("b"),
        ),
        (
            "the beta annotation counts",
            vec![storage_class("old", "2026-01-01T00:00:00Z", Some(BETA))],
            Some("old"),
        ),
        (
            "the newest default wins",
            vec![
                storage_class("new", "2026-02-01T00:00:00Z", Some(GA)),
                storage_class("old", "2026-01-01T00:00:00Z", Some(GA)),
            ],
            Some("new"),
        ),
        (
            "equal times: the first name",
            vec![
                storage_class("zeta", "2026-01-01T00:00:00Z", Some(GA)),
                storage_class("alpha", "2026-01-01T00:00:00Z", Some(GA)),
            ],
            Some("alpha"),
        ),
    ];
    for (name, classes, expected) in cases {
        assert_eq!(
            Classes::from_api(classes.iter()).default.as_deref(),
            expected,
            "{name}"
        );
    }
}

#[test]
fn a_claim_without_a_class_gets_the_default_once_nothing_matches() {
    let with_default = Classes {
        by_name: [(
            "std".to_string(),
            ClassInfo {
                wait_for_first_consumer: false,
                provisioner: "csi.stowage.io".into(),
            },
        )]
        .into_iter()
        .collect(),
        default: Some("std".into()),
    };
    let no_default = Classes::default();
    let cases: Vec<(&str, Vec<Volume>, Claim, &Classes, &str)> = vec![
        (
            "no class set, a default exists: assign it",
            vec![],
            claim("1Gi", RWO, json!({})),
            &with_default,
            "assign std",
        ),
        (
            "a matching classless volume binds first, as upstream matches first",
            vec![volume("classless", "1Gi", RWO, json!({}))],
            claim("1Gi", RWO, json!({})),
            &with_default,
            "bind classless",
        ),
        (
            "an empty class is a choice: never defaulted",
            vec![],
            claim("1Gi", RWO, json!({"spec": {"storageClassName": ""}})),
            &with_default,
            "pending FailedBinding",
        ),
        (
            "a class in the beta annotation is a choice too",
            vec![],
            claim(
                "1Gi",
                RWO,
                json!({"metadata": {"annotations": {"volume.beta.kubernetes.io/storage-class": "std"}}}),
            ),
            &with_default,
            "provision",
        ),
        (
            "no default: the claim waits saying no class is set",
            vec![],
            claim("1Gi", RWO, json!({})),
            &no_default,
            "pending FailedBinding",
        ),
        (
            "once assigned, the class provisions",
            vec![],
            claim("1Gi", RWO, json!({"spec": {"storageClassName": "std"}})),
            &with_default,
            "provision",
        ),
    ];
    for (name, volumes, wanted, classes, expected) in cases {
        let index = index_of(volumes);
        assert_eq!(
            reason(&sync_claim(&wanted, classes, &index)),
            expected,
            "{name}"
        );
    }
}

#[test]
fn events_say_what_upstream_says() {
    let static_only = Classes {
        by_name: [(
            "manual".to_string(),
            ClassInfo {
                wait_for_first_consumer: false,
                provisioner: super::sync::NO_PROVISIONER.into(),
            },
        )]
        .into_iter()
        .collect(),
        default: None,
    };
    let deleting = volume(
        "going",
        "5Gi",
        RWO,
        json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["x"]}, "status": {"phase": "Available"}}),
    );
    let cases = [
        (
            "a static-only class that matches nothing",
            claim("1Gi", RWO, json!({"spec": {"storageClassName": "manual"}})),
            vec![],
            (true, "ProvisioningFailed", "no volume plugin matched name: kubernetes.io/no-provisioner".to_string()),
        ),
        (
            "pre-bound to a volume being deleted",
            claim("1Gi", RWO, json!({"spec": {"volumeName": "going"}})),
            vec![deleting.clone()],
            (true, "VolumeMismatch", "Cannot bind to requested volume \"going\": the volume is marked for deletion \"going\"".to_string()),
        ),
        (
            "deletion is checked before size",
            claim("10Gi", RWO, json!({"spec": {"volumeName": "going"}})),
            vec![deleting],
            (true, "VolumeMismatch", "Cannot bind to requested volume \"going\": the volume is marked for deletion \"going\"".to_string()),
        ),
        (
            "no class and nothing to bind",
            claim("1Gi", RWO, json!({"spec": {"storageClassName": ""}})),
            vec![],
            (false, "FailedBinding", "no persistent volumes available for this claim and no storage class is set".to_string()),
        ),
    ];
    for (name, wanted, volumes, (warning, why, message)) in cases {
        let ClaimAction::Pending(Some(event)) =
            sync_claim(&wanted, &static_only, &index_of(volumes))
        else {
            panic!("{name}: expected a Pending claim with an event");
        };
        assert_eq!(
            (event.warning, event.reason, event.message),
            (warning, why, message),
            "{name}"
        );
    }
}

#[test]
fn a_claim_to_provision_names_its_provisioner_as_kube_controller_manager_does() {
    use super::status::provisioner_annotations;
    const GA: &str = "volume.kubernetes.io/storage-provisioner";
    const BETA: &str = "volume.beta.kubernetes.io/storage-provisioner";
    let cases: [(&str, Value, Option<Value>); 4] = [
        (
            "both keys are written",
            json!({"team": "blue"}),
            Some(json!({"team": "blue", GA: "csi.stowage.io", BETA: "csi.stowage.io"})),
        ),
        (
            "already named: no write",
            json!({GA: "csi.stowage.io", BETA: "csi.stowage.io"}),
            None,
        ),
        (
            "only the beta key: the GA one is added",
            json!({BETA: "csi.stowage.io"}),
            Some(json!({GA: "csi.stowage.io", BETA: "csi.stowage.io"})),
        ),
        (
            "another provisioner named before (the class changed): replaced",
            json!({GA: "other.csi.io", BETA: "other.csi.io"}),
            Some(json!({GA: "csi.stowage.io", BETA: "csi.stowage.io"})),
        ),
    ];
    for (name, annotations, expected) in cases {
        let object = json!({
            "metadata": {"name": "claim", "namespace": "ns", "annotations": annotations},
            "spec": {},
        });
        let pvc: PersistentVolumeClaim =
            serde_json::from_value(object).unwrap_or_else(|e| panic!("{name}: {e}"));
        let written = provisioner_annotations(&pvc, "csi.stowage.io")
            .map(|a| serde_json::to_value(a).unwrap_or_default());
        assert_eq!(written, expected, "{name}");
    }
}

/// A pass's steps in words, in their order.
fn steps_in_words(steps: &[super::plan::Step]) -> Vec<String> {
    use super::plan::Step;
    use kube::ResourceExt;
    steps
        .iter()
        .map(|step| match step {
            Step::Bind(pv, pvc) => format!("bind {} to {}", pvc.name_any(), pv.name_any()),
            Step::Claim(pvc, action) => format!("{}: {}", pvc.name_any(), reason(action)),
            Step::Volume(pv, _, VolumeAction::SetPhase(phase)) => {
                format!("{}: {phase:?}", pv.name_any())
            }
            Step::Volume(pv, _, action) => format!("{}: {action:?}", pv.name_any()),
        })
        .collect()
}

/// Name, the cached volumes and claims, and the pass's steps in words.
type PassCase<'a> = (
    &'a str,
    Vec<std::sync::Arc<PersistentVolume>>,
    Vec<std::sync::Arc<PersistentVolumeClaim>>,
    Vec<&'a str>,
);

#[test]
fn a_pass_binds_new_volumes_at_once_and_says_failed_binding_only_when_nothing_fits() {
    use std::sync::Arc;
    let new_volume = |name: &str, size: &str, extra: Value| {
        let mut object = json!({
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": size}, "storageClassName": ""},
            "status": {"phase": "Pending"},
        });
        json_patch::merge(&mut object, &extra);
        Arc::new(pv_of(object))
    };
    let classless = |name: &str, size: &str, created: &str| {
        Arc::new(pvc_of(json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"), "creationTimestamp": created},
            "spec": {"storageClassName": "", "resources": {"requests": {"storage": size}}},
            "status": {"phase": "Pending"},
        })))
    };
    let earlier = "2026-01-01T00:00:00Z";
    let later = "2026-01-01T00:00:01Z";
    let none = json!({});
    // A provisioned volume: its claimRef names the claim as its provisioner wrote it.
    let made_for_a = json!({"spec": {"claimRef": {
        "namespace": "ns", "name": "a", "uid": "uid-a", "resourceVersion": "9"
    }}});
    let claim_at = |version: &str| {
        let mut claim = (*classless("a", "1Gi", earlier)).clone();
        claim.metadata.resource_version = Some(version.into());
        Arc::new(claim)
    };
    let bound_to_a = json!({
        "spec": {"claimRef": {"namespace": "ns", "name": "a", "uid": "uid-a"}},
        "status": {"phase": "Bound"},
    });
    let bound_a = |extra: Value| {
        let mut object = json!({
            "metadata": {"name": "a", "uid": "uid-a", "creationTimestamp": earlier,
                "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
            "spec": {"storageClassName": "", "volumeName": "v1",
                "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound", "accessModes": RWO},
        });
        json_patch::merge(&mut object, &extra);
        Arc::new(pvc_of(object))
    };
    let cases: Vec<PassCase> = vec![
        (
            "a new volume and its claim bind in one pass: no Available write, no FailedBinding",
            vec![new_volume("v1", "1Gi", none.clone())],
            vec![classless("a", "1Gi", earlier)],
            vec!["bind a to v1"],
        ),
        (
            "a new volume no claim takes becomes Available",
            vec![new_volume("v1", "1Gi", none.clone())],
            vec![],
            vec!["v1: Available"],
        ),
        (
            "a claim nothing fits is told FailedBinding; the new volume becomes Available",
            vec![new_volume("v1", "1Gi", none.clone())],
            vec![classless("a", "5Gi", earlier)],
            vec!["a: pending FailedBinding", "v1: Available"],
        ),
        (
            "one new volume, two claims: the older binds, only the newer is told FailedBinding",
            vec![new_volume("v1", "1Gi", none.clone())],
            vec![classless("b", "1Gi", later), classless("a", "1Gi", earlier)],
            vec!["bind a to v1", "b: pending FailedBinding"],
        ),
        (
            "an Available volume binds as before",
            vec![new_volume(
                "v1",
                "1Gi",
                json!({"status": {"phase": "Available"}}),
            )],
            vec![classless("a", "1Gi", earlier)],
            vec!["bind a to v1"],
        ),
        (
            "a new volume being deleted is not taken",
            vec![new_volume(
                "v1",
                "1Gi",
                json!({"metadata": {"deletionTimestamp": earlier, "finalizers": ["x"]}}),
            )],
            vec![classless("a", "1Gi", earlier)],
            vec!["a: pending FailedBinding", "v1: Available"],
        ),
        (
            "a Released volume whose claimRef was removed binds at once too (upstream: Available, then Bound)",
            vec![new_volume(
                "v1",
                "1Gi",
                json!({"status": {"phase": "Released"}}),
            )],
            vec![classless("a", "1Gi", earlier)],
            vec!["bind a to v1"],
        ),
        (
            "a Released volume still bound to its deleted claim is not a candidate",
            vec![new_volume(
                "v1",
                "1Gi",
                json!({"spec": {"claimRef": {"namespace": "ns", "name": "gone", "uid": "uid-gone"}}, "status": {"phase": "Released"}}),
            )],
            vec![classless("a", "1Gi", earlier)],
            vec!["a: pending FailedBinding", "v1: Reclaim(Retain)"],
        ),
        (
            "a volume naming a later version of its claim than the cache holds waits for it",
            vec![new_volume("v1", "1Gi", made_for_a.clone())],
            vec![claim_at("7")],
            vec![],
        ),
        (
            "once the cache holds that version the volume binds",
            vec![new_volume("v1", "1Gi", made_for_a.clone())],
            vec![claim_at("9")],
            vec!["bind a to v1"],
        ),
        (
            "a claim past that version (bound since) binds too",
            vec![new_volume("v1", "1Gi", made_for_a)],
            vec![claim_at("12")],
            vec!["bind a to v1"],
        ),
        (
            "a pair bound in full writes nothing",
            vec![new_volume("v1", "1Gi", bound_to_a.clone())],
            vec![bound_a(json!({}))],
            vec![],
        ),
        (
            "a bound claim whose access modes lag its volume's is written",
            vec![new_volume("v1", "1Gi", bound_to_a.clone())],
            vec![bound_a(
                json!({"status": {"accessModes": ["ReadWriteMany"]}}),
            )],
            vec!["bind a to v1"],
        ),
        (
            "a bound claim not yet marked bind-completed is written",
            vec![new_volume("v1", "1Gi", bound_to_a.clone())],
            vec![bound_a(
                json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": null}}}),
            )],
            vec!["bind a to v1"],
        ),
        (
            "a volume not yet Bound whose claim is is written",
            vec![new_volume(
                "v1",
                "1Gi",
                json!({"spec": bound_to_a["spec"], "status": {"phase": "Available"}}),
            )],
            vec![bound_a(json!({}))],
            vec!["bind a to v1"],
        ),
    ];
    for (name, volumes, claims, expected) in cases {
        let steps = super::plan::plan(volumes, claims, &Classes::default());
        assert_eq!(steps_in_words(&steps), expected, "{name}");
    }
}
