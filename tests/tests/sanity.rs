//! CSI conformance checks in the manner of kubernetes-csi's csi-sanity, with both the
//! controller and the node endpoint pointed at the node plugin's one socket (as the
//! DaemonSet serves them). csi-sanity itself is a Go program that cannot be fetched on
//! this machine; these checks follow its controller, node and identity specs.

use std::path::Path;

use csi_proto::v1::{self as v1, CapacityRange};
use stowage_tests::csi::{assert_code, create_request, mount_rwo, snapshot_request, string_map};
use stowage_tests::driver::{Driver, Launch};
use stowage_tests::mounts::mounts_under;
use stowage_tests::refusal::{assert_refused, refusal};
use tonic::Code;

const MIB: i64 = 1 << 20;

/// The node plugin's one socket serves both endpoints, as the DaemonSet's does.
async fn start() -> Driver {
    Launch::node("sanity-node").kubelet_dir().start().await
}

#[tokio::test]
async fn identity_plugin_info_capabilities_and_probe() {
    let s = start().await;
    let info = s.csi.plugin_info().await.expect("info");
    assert!(!info.name.is_empty() && info.name.len() <= 63 && !info.vendor_version.is_empty());
    assert!(
        info.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    );
    let caps = s.csi.plugin_capabilities().await.expect("caps");
    assert!(!caps.capabilities.is_empty());
    assert!(s.csi.probe().await.expect("probe"));
}

#[tokio::test]
async fn controller_create_volume_checks() {
    let s = start().await;
    assert_code(
        s.csi.create(create_request("", MIB, &[])).await,
        Code::InvalidArgument,
        "name",
    );
    let no_caps = v1::CreateVolumeRequest {
        volume_capabilities: vec![],
        ..create_request("sanity-nocaps", MIB, &[])
    };
    assert_code(
        s.csi.create(no_caps).await,
        Code::InvalidArgument,
        "volume_capabilities",
    );
    let minimal = v1::CreateVolumeRequest {
        capacity_range: None,
        ..create_request("sanity-minimal", 0, &[])
    };
    let volume = s.csi.create(minimal).await.expect("minimal create");
    assert!(!volume.volume_id.is_empty());
    let sized = s
        .csi
        .create(create_request("sanity-sized", 10 * MIB, &[]))
        .await
        .expect("sized");
    assert!(sized.capacity_bytes == 0 || sized.capacity_bytes >= 10 * MIB);
    assert_eq!(
        s.csi
            .create(create_request("sanity-sized", 10 * MIB, &[]))
            .await
            .expect("same again")
            .volume_id,
        sized.volume_id
    );
    let bigger = v1::CreateVolumeRequest {
        capacity_range: Some(CapacityRange {
            required_bytes: 20 * MIB,
            limit_bytes: 20 * MIB,
        }),
        ..create_request("sanity-sized", 0, &[])
    };
    assert_code(s.csi.create(bigger).await, Code::AlreadyExists, "");
    let longest = "n".repeat(128);
    let long = s
        .csi
        .create(create_request(&longest, MIB, &[]))
        .await
        .expect("128-byte name");
    for id in [&volume.volume_id, &sized.volume_id, &long.volume_id] {
        s.csi.delete(id).await.expect("delete");
    }
}

#[tokio::test]
async fn controller_delete_validate_get_and_expand_checks() {
    let s = start().await;
    assert_code(s.csi.delete("").await, Code::InvalidArgument, "volume_id");
    s.csi
        .delete("reallyfakevolumeid")
        .await
        .expect("an unknown ID deletes fine");
    let volume = s
        .csi
        .create(create_request("sanity-v", MIB, &[]))
        .await
        .expect("create");

    let validate =
        |id: &str, caps: Vec<v1::VolumeCapability>| v1::ValidateVolumeCapabilitiesRequest {
            volume_id: id.into(),
            volume_capabilities: caps,
            ..Default::default()
        };
    let get = |id: &str| v1::ControllerGetVolumeRequest {
        volume_id: id.into(),
    };
    let expand = |id: &str, range: Option<CapacityRange>| v1::ControllerExpandVolumeRequest {
        volume_id: id.into(),
        capacity_range: range,
        ..Default::default()
    };
    let range = Some(CapacityRange {
        required_bytes: 2 * MIB,
        limit_bytes: 0,
    });
    let invalid = Code::InvalidArgument;
    let rows = vec![
        refusal(
            "validate: no volume ID",
            validate("", vec![mount_rwo()]),
            invalid,
            "volume_id",
        ),
        refusal(
            "validate: no capabilities",
            validate(&volume.volume_id, vec![]),
            invalid,
            "volume_capabilities",
        ),
        refusal(
            "validate: an unknown volume",
            validate("some-vol-id", vec![mount_rwo()]),
            Code::NotFound,
            "",
        ),
        refusal("get: no volume ID", get(""), invalid, "volume_id"),
        refusal(
            "get: an unknown volume",
            get("some-vol-id"),
            Code::NotFound,
            "",
        ),
        refusal(
            "expand: no volume ID",
            expand("", range),
            invalid,
            "volume_id",
        ),
        refusal(
            "expand: no range",
            expand(&volume.volume_id, None),
            invalid,
            "capacity_range",
        ),
    ];
    assert_refused(&s.csi, rows).await;
    let confirmed = s
        .csi
        .controller
        .clone()
        .validate_volume_capabilities(validate(&volume.volume_id, vec![mount_rwo()]))
        .await
        .expect("validate")
        .into_inner();
    assert!(confirmed.confirmed.is_some());

    let got = s.csi.get_volume(&volume.volume_id).await.expect("get");
    assert_eq!(got.volume.expect("volume").volume_id, volume.volume_id);

    let grown = s
        .csi
        .controller
        .clone()
        .controller_expand_volume(expand(&volume.volume_id, range))
        .await
        .expect("expand")
        .into_inner();
    assert!(grown.capacity_bytes >= 2 * MIB);
    assert!(
        s.csi
            .controller
            .clone()
            .get_capacity(v1::GetCapacityRequest::default())
            .await
            .expect("capacity")
            .into_inner()
            .available_capacity
            > 0
    );
    s.csi.delete(&volume.volume_id).await.expect("delete");
}

#[tokio::test]
async fn controller_list_volumes_pages_through_changes() {
    let s = start().await;
    let bad = s.csi.list_page(0, "invalid-token").await;
    assert_code(bad, Code::Aborted, "");
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            s.csi
                .create(create_request(&format!("sanity-list-{i}"), MIB, &[]))
                .await
                .expect("create")
                .volume_id,
        );
    }
    let first = s.csi.list_page(2, "").await.expect("page");
    assert_eq!(first.entries.len(), 2);
    // csi-sanity deletes a volume between pages and adds one: paging must go on.
    s.csi.delete(&ids[4]).await.expect("delete");
    s.csi
        .create(create_request("sanity-list-new", MIB, &[]))
        .await
        .expect("create");
    let rest = s.csi.list_page(0, &first.next_token).await.expect("rest");
    assert!(!rest.entries.is_empty() && rest.next_token.is_empty());
    assert_eq!(s.csi.list_all(0).await.expect("all").len(), 5);
}

#[tokio::test]
async fn controller_snapshot_checks() {
    let s = start().await;
    let volume = s
        .csi
        .create(create_request("sanity-snap-src", MIB, &[]))
        .await
        .expect("create");
    let rows = vec![
        refusal(
            "no name",
            snapshot_request("", &volume.volume_id),
            Code::InvalidArgument,
            "name",
        ),
        refusal(
            "no source",
            snapshot_request("snap", ""),
            Code::InvalidArgument,
            "source_volume_id",
        ),
    ];
    assert_refused(&s.csi, rows).await;
    let snap = s
        .csi
        .snapshot("sanity-snap", &volume.volume_id)
        .await
        .expect("snapshot");
    assert!(snap.ready_to_use && snap.creation_time.is_some());
    assert_eq!(
        s.csi
            .snapshot("sanity-snap", &volume.volume_id)
            .await
            .expect("again")
            .snapshot_id,
        snap.snapshot_id
    );
    let other = s
        .csi
        .create(create_request("sanity-snap-other", MIB, &[]))
        .await
        .expect("create");
    assert_code(
        s.csi
            .controller
            .clone()
            .create_snapshot(snapshot_request("sanity-snap", &other.volume_id))
            .await,
        Code::AlreadyExists,
        "",
    );
    s.csi
        .snapshot(&"s".repeat(128), &volume.volume_id)
        .await
        .expect("128-byte snapshot name");

    let list = |req: v1::ListSnapshotsRequest| {
        let mut c = s.csi.controller.clone();
        async move { c.list_snapshots(req).await }
    };
    assert_eq!(
        list(v1::ListSnapshotsRequest::default())
            .await
            .expect("list")
            .into_inner()
            .entries
            .len(),
        2
    );
    let by_id = list(v1::ListSnapshotsRequest {
        snapshot_id: snap.snapshot_id.clone(),
        ..Default::default()
    })
    .await
    .expect("by id")
    .into_inner();
    assert_eq!(by_id.entries.len(), 1);
    assert!(
        list(v1::ListSnapshotsRequest {
            snapshot_id: "none".into(),
            ..Default::default()
        })
        .await
        .expect("by unknown id")
        .into_inner()
        .entries
        .is_empty()
    );
    assert!(
        list(v1::ListSnapshotsRequest {
            source_volume_id: "none".into(),
            ..Default::default()
        })
        .await
        .expect("by unknown source")
        .into_inner()
        .entries
        .is_empty()
    );
    let paged = list(v1::ListSnapshotsRequest {
        max_entries: 1,
        ..Default::default()
    })
    .await
    .expect("page")
    .into_inner();
    assert_eq!(paged.entries.len(), 1);
    assert!(!paged.next_token.is_empty());
    assert_code(
        list(v1::ListSnapshotsRequest {
            starting_token: "invalid".into(),
            ..Default::default()
        })
        .await,
        Code::Aborted,
        "",
    );

    let delete = |id: &str| {
        let (mut c, id) = (s.csi.controller.clone(), id.to_string());
        async move {
            c.delete_snapshot(v1::DeleteSnapshotRequest {
                snapshot_id: id,
                ..Default::default()
            })
            .await
        }
    };
    assert_code(delete("").await, Code::InvalidArgument, "snapshot_id");
    delete("reallyfakesnapshotid")
        .await
        .expect("an unknown ID deletes fine");
    delete(&snap.snapshot_id).await.expect("delete");
}

#[tokio::test]
async fn node_argument_checks() {
    let s = start().await;
    let target = s.kubelet("target").display().to_string();
    let staging = s.kubelet("staging").display().to_string();
    let publish =
        |id: &str, target: &str, cap: Option<v1::VolumeCapability>| v1::NodePublishVolumeRequest {
            volume_id: id.into(),
            target_path: target.into(),
            volume_capability: cap,
            ..Default::default()
        };
    let unpublish = |id: &str, target: &str| v1::NodeUnpublishVolumeRequest {
        volume_id: id.into(),
        target_path: target.into(),
    };
    let stage =
        |id: &str, staging: &str, cap: Option<v1::VolumeCapability>| v1::NodeStageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: staging.into(),
            volume_capability: cap,
            ..Default::default()
        };
    let unstage = |id: &str, staging: &str| v1::NodeUnstageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: staging.into(),
    };
    let stats = |id: &str, path: &str| v1::NodeGetVolumeStatsRequest {
        volume_id: id.into(),
        volume_path: path.into(),
        ..Default::default()
    };
    std::fs::create_dir_all(s.kubelet("exists")).expect("mkdir");
    let exists = s.kubelet("exists").display().to_string();
    let (invalid, rwo) = (Code::InvalidArgument, || Some(mount_rwo()));
    let rows = vec![
        refusal(
            "publish: no volume ID",
            publish("", &target, rwo()),
            invalid,
            "volume_id",
        ),
        refusal(
            "publish: no target",
            publish("id", "", rwo()),
            invalid,
            "target_path",
        ),
        refusal(
            "publish: no capability",
            publish("id", &target, None),
            invalid,
            "volume_capability",
        ),
        refusal(
            "unpublish: no volume ID",
            unpublish("", &target),
            invalid,
            "volume_id",
        ),
        refusal(
            "unpublish: no target",
            unpublish("id", ""),
            invalid,
            "target_path",
        ),
        refusal(
            "stage: no volume ID",
            stage("", &staging, rwo()),
            invalid,
            "volume_id",
        ),
        refusal(
            "stage: no staging path",
            stage("id", "", rwo()),
            invalid,
            "staging_target_path",
        ),
        refusal(
            "stage: no capability",
            stage("id", &staging, None),
            invalid,
            "volume_capability",
        ),
        refusal(
            "unstage: no volume ID",
            unstage("", &staging),
            invalid,
            "volume_id",
        ),
        refusal(
            "unstage: no staging path",
            unstage("id", ""),
            invalid,
            "staging_target_path",
        ),
        refusal(
            "stats: no volume ID",
            stats("", &target),
            invalid,
            "volume_id",
        ),
        refusal("stats: no path", stats("id", ""), invalid, "volume_path"),
        refusal(
            "stats: a path that does not exist",
            stats("id", "/no/such/path"),
            Code::NotFound,
            "",
        ),
        refusal(
            "stats: a volume that does not exist",
            stats("some-vol-id", &exists),
            Code::NotFound,
            "some-vol-id",
        ),
    ];
    assert_refused(&s.csi, rows).await;
    let info = s.csi.node_info().await.expect("info");
    assert_eq!(info.node_id, "sanity-node");
}

#[tokio::test]
async fn full_lifecycle_create_stage_publish_stats_unpublish_unstage_delete() {
    let s = start().await;
    let volume = s
        .csi
        .create(create_request("sanity-life", MIB, &[]))
        .await
        .expect("create");
    let staging = s.kubelet("plugins/staging/life");
    std::fs::create_dir_all(&staging).expect("staging");
    let target = s.kubelet("pods/life/mount");
    s.csi
        .node_stage(&volume, &staging, mount_rwo())
        .await
        .expect("stage");
    s.csi
        .node_stage(&volume, &staging, mount_rwo())
        .await
        .expect("stage twice");
    let publish = v1::NodePublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(mount_rwo()),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    };
    s.csi.node_publish(publish.clone()).await.expect("publish");
    s.csi.node_publish(publish).await.expect("publish twice");
    let stats = s.csi.node_stats(&volume.volume_id, &target).await;
    assert!(!stats.expect("stats").usage.is_empty());
    s.csi
        .release_twice(&volume.volume_id, &[&target], &staging)
        .await;
    s.csi.delete(&volume.volume_id).await.expect("delete");
    assert!(mounts_under(s.dir()).is_empty());
    assert!(!Path::new(&target).exists());
}

/// csi-sanity's "already mounted at a different target path": a single-writer volume is
/// published at one target only (the second target, as csi-sanity picks it, lies inside
/// the first); the other single-node modes may be published at many.
#[tokio::test]
async fn node_publish_at_a_second_target_follows_the_access_mode() {
    use stowage_tests::csi::{AccessModeKind as Mode, capability};
    let s = start().await;
    let rows = [
        (
            Mode::SingleNodeSingleWriter,
            "first/other_target",
            Some(Code::FailedPrecondition),
        ),
        (
            Mode::SingleNodeSingleWriter,
            "second",
            Some(Code::FailedPrecondition),
        ),
        (Mode::SingleNodeWriter, "second", None),
        (Mode::SingleNodeMultiWriter, "first/other_target", None),
        (Mode::SingleNodeReaderOnly, "second", None),
    ];
    for (i, (mode, second, refused)) in rows.into_iter().enumerate() {
        let row = format!("row {i} ({mode:?}, {second})");
        let cap = capability(false, mode);
        let mut create = create_request(&format!("sanity-second-{i}"), MIB, &[]);
        create.volume_capabilities = vec![cap.clone()];
        let volume = s.csi.create(create).await.expect("create");
        let base = s.kubelet(&format!("pods/second-{i}"));
        let publish = |target: &Path| v1::NodePublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            target_path: target.display().to_string(),
            volume_capability: Some(cap.clone()),
            volume_context: volume.volume_context.clone(),
            readonly: mode == Mode::SingleNodeReaderOnly,
            ..Default::default()
        };
        let (first, other) = (base.join("first"), base.join(second));
        s.csi
            .node
            .clone()
            .node_publish_volume(publish(&first))
            .await
            .unwrap_or_else(|e| panic!("{row}: first publish: {e}"));
        let result = s
            .csi
            .node
            .clone()
            .node_publish_volume(publish(&other))
            .await;
        match refused {
            Some(code) => {
                assert_code(result, code, "already published");
                assert!(!other.exists(), "{row}: the refused target was left behind");
            }
            None => {
                result.unwrap_or_else(|e| panic!("{row}: second publish: {e}"));
            }
        }
        for target in [&other, &first] {
            s.csi
                .node_unpublish(&volume.volume_id, target)
                .await
                .unwrap_or_else(|e| panic!("{row}: unpublish: {e}"));
        }
        assert!(mounts_under(&base).is_empty(), "{row}: mounts left");
        s.csi.delete(&volume.volume_id).await.expect("delete");
    }
}

type ModifyRow<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<(Code, &'a str)>);

/// csi-sanity's ModifyVolume specs, and the mutable parameters CreateVolume takes.
#[tokio::test]
async fn controller_modify_volume_checks() {
    let s = start().await;
    let params = string_map;
    let mut create = create_request("sanity-modify", MIB, &[]);
    create.mutable_parameters = params(&[("onDelete", "retain")]);
    let volume = s
        .csi
        .create(create)
        .await
        .expect("create with mutable parameters");
    for (pairs, needle) in [
        (
            &[("XXX_FakeKey", "XXX_FakeValue")][..],
            "not a mutable parameter",
        ),
        (&[("onDelete", "archive")][..], "onDelete"),
    ] {
        let mut create = create_request("sanity-modify-bad", MIB, &[]);
        create.mutable_parameters = params(pairs);
        assert_code(s.csi.create(create).await, Code::InvalidArgument, needle);
    }
    let modify = |volume_id: &str, pairs: &[(&str, &str)]| v1::ControllerModifyVolumeRequest {
        volume_id: volume_id.into(),
        mutable_parameters: params(pairs),
        ..Default::default()
    };
    // (volume ID, mutable parameters, refusal)
    let rows: [ModifyRow; 6] = [
        (
            "",
            &[("onDelete", "delete")],
            Some((Code::InvalidArgument, "volume_id")),
        ),
        (
            "non-existing-volume-id",
            &[("onDelete", "delete")],
            Some((Code::NotFound, "does not exist")),
        ),
        (
            &volume.volume_id,
            &[("XXX_FakeKey", "XXX_FakeValue")],
            Some((Code::InvalidArgument, "not a mutable parameter")),
        ),
        (
            &volume.volume_id,
            &[("onDelete", "burn")],
            Some((Code::InvalidArgument, "onDelete")),
        ),
        (&volume.volume_id, &[("onDelete", "delete")], None),
        (&volume.volume_id, &[], None),
    ];
    for (i, (volume_id, pairs, refused)) in rows.into_iter().enumerate() {
        let result = s
            .csi
            .controller
            .clone()
            .controller_modify_volume(modify(volume_id, pairs))
            .await;
        match refused {
            Some((code, needle)) => assert_code(result, code, needle),
            None => {
                result.unwrap_or_else(|e| panic!("row {i}: {e}"));
            }
        }
    }
    s.csi.delete(&volume.volume_id).await.expect("delete");
}

/// csi-sanity's GroupController specs, and the rules they imply: members live and die
/// with their group.
#[tokio::test]
async fn group_controller_checks() {
    let s = start().await;
    let group = || s.csi.group.clone();
    let caps = group()
        .group_controller_get_capabilities(v1::GroupControllerGetCapabilitiesRequest {})
        .await
        .expect("capabilities")
        .into_inner();
    assert_eq!(caps.capabilities.len(), 1);
    let volumes = s
        .csi
        .create_volumes(&["sanity-group-a", "sanity-group-b"], MIB)
        .await;
    let ids: Vec<&str> = volumes.iter().map(String::as_str).collect();
    let create = |name: &str, sources: &[&str]| v1::CreateVolumeGroupSnapshotRequest {
        name: name.into(),
        source_volume_ids: sources.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    };
    let missing = "local:00000000000000000000000000000000:sanity-node";
    let invalid = Code::InvalidArgument;
    let rows = vec![
        refusal("create: no name", create("", &ids), invalid, "name"),
        refusal(
            "create: no sources",
            create("g", &[]),
            invalid,
            "source_volume_ids",
        ),
        refusal(
            "create: a source twice",
            create("g", &[ids[0], ids[0]]),
            invalid,
            "more than once",
        ),
        refusal(
            "create: a source that does not exist",
            create("g", &[ids[0], missing]),
            Code::NotFound,
            "does not exist",
        ),
    ];
    assert_refused(&s.csi, rows).await;
    let taken = s
        .csi
        .group_snapshot("sanity-group", &ids)
        .await
        .expect("group snapshot");
    assert_eq!(taken.snapshots.len(), 2);
    assert!(taken.ready_to_use);
    assert!(
        taken
            .snapshots
            .iter()
            .all(|m| m.group_snapshot_id == taken.group_snapshot_id)
    );
    let again = s
        .csi
        .group_snapshot("sanity-group", &[ids[1], ids[0]])
        .await
        .expect("again");
    assert_eq!(again, taken, "a retried create finds the same group");
    assert_code(
        s.csi.group_snapshot("sanity-group", &ids[..1]).await,
        Code::AlreadyExists,
        "other source volumes",
    );
    let member = taken.snapshots[0].snapshot_id.clone();
    assert_code(
        s.csi
            .controller
            .clone()
            .delete_snapshot(v1::DeleteSnapshotRequest {
                snapshot_id: member.clone(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "delete the group",
    );
    let get = |id: &str, members: Vec<String>| v1::GetVolumeGroupSnapshotRequest {
        group_snapshot_id: id.into(),
        snapshot_ids: members,
        ..Default::default()
    };
    let got = group()
        .get_volume_group_snapshot(get(&taken.group_snapshot_id, vec![]))
        .await
        .expect("get")
        .into_inner()
        .group_snapshot;
    assert_eq!(got.as_ref(), Some(&taken));
    let delete = |id: &str| v1::DeleteVolumeGroupSnapshotRequest {
        group_snapshot_id: id.into(),
        ..Default::default()
    };
    let rows = vec![
        refusal("get: no ID", get("", vec![]), invalid, ""),
        refusal(
            "get: an unknown group",
            get("not-a-group", vec![]),
            Code::NotFound,
            "",
        ),
        refusal(
            "get: members that are not the group's all",
            get(&taken.group_snapshot_id, vec![member.clone()]),
            invalid,
            "",
        ),
        refusal("delete: no ID", delete(""), invalid, ""),
    ];
    assert_refused(&s.csi, rows).await;
    group()
        .delete_volume_group_snapshot(delete("not-a-group"))
        .await
        .expect("unknown is gone");
    for _ in 0..2 {
        group()
            .delete_volume_group_snapshot(delete(&taken.group_snapshot_id))
            .await
            .expect("delete, twice");
    }
    let listed = s
        .csi
        .controller
        .clone()
        .list_snapshots(v1::ListSnapshotsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(
        listed.entries.is_empty(),
        "members outlived their group: {listed:?}"
    );
    for id in &volumes {
        s.csi.delete(id).await.expect("delete volume");
    }
}
