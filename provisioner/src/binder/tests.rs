//! Table-driven checks of matching, one rule of upstream's PV controller per case.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use serde_json::{Value, json};

use super::sync::{ClaimAction, ClassInfo, VolumeAction, sync_claim, sync_volume};
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
    }
}

/// Name, volumes, claim, its class, and the expected decision.
type ClaimCase<'a> = (&'a str, Vec<Volume>, Claim, Option<&'a ClassInfo>, &'a str);

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
            "pending FailedBinding",
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
        assert_eq!(
            reason(&sync_claim(&wanted, class, &index)),
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
