//! The controller binary over its unix socket, against a real local root.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use csi_proto::v1::{self as v1, CapacityRange, Topology, TopologyRequirement};
use stowage_tests::csi::{
    AccessModeKind, Csi, assert_code, capability, controller_publish_request, create_request,
    enforced, from_snapshot, from_volume, mount_rwo,
};
use stowage_tests::driver::{Driver, Launch};
use stowage_tests::refusal::{assert_refused, refusal};
use stowage_tests::wait_for;
use tonic::Code;

const NODE: &str = "node-a";
const MIB: i64 = 1 << 20;

/// `stowage controller` serving the local volumes of [`NODE`], with more flags.
async fn start(flags: &[&str]) -> Driver {
    Launch::controller().local(NODE).flags(flags).start().await
}

#[tokio::test]
async fn identity_reports_name_version_capabilities_and_readiness() {
    let s = start(&[]).await;
    let info = s.csi.plugin_info().await.expect("info");
    assert_eq!(info.name, "csi.stowage.io");
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
    let caps = s.csi.plugin_capabilities().await.expect("caps");
    let services: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(v1::plugin_capability::Type::Service(s)) => Some(s.r#type),
            _ => None,
        })
        .collect();
    use v1::plugin_capability::service::Type;
    assert!(services.contains(&(Type::ControllerService as i32)));
    assert!(services.contains(&(Type::VolumeAccessibilityConstraints as i32)));
    assert!(s.csi.probe().await.expect("probe"));
}

#[tokio::test]
async fn controller_capabilities_match_the_design_and_attach_is_behind_a_flag() {
    use v1::controller_service_capability::rpc::Type as Cap;
    let caps = async |csi: &Csi| -> Vec<i32> {
        csi.controller
            .clone()
            .controller_get_capabilities(v1::ControllerGetCapabilitiesRequest {})
            .await
            .expect("caps")
            .into_inner()
            .capabilities
            .iter()
            .filter_map(|c| {
                c.r#type.as_ref().map(|t| {
                    let v1::controller_service_capability::Type::Rpc(r) = t;
                    r.r#type
                })
            })
            .collect()
    };
    let s = start(&[]).await;
    let got = caps(&s.csi).await;
    for want in [
        Cap::CreateDeleteVolume,
        Cap::ListVolumes,
        Cap::GetCapacity,
        Cap::GetVolume,
        Cap::VolumeCondition,
        Cap::ExpandVolume,
        Cap::CreateDeleteSnapshot,
        Cap::ListSnapshots,
        Cap::CloneVolume,
        Cap::SingleNodeMultiWriter,
    ] {
        assert!(got.contains(&(want as i32)), "missing {want:?}");
    }
    assert!(!got.contains(&(Cap::PublishUnpublishVolume as i32)));
    let publish = s
        .csi
        .controller
        .clone()
        .controller_publish_volume(v1::ControllerPublishVolumeRequest::default())
        .await;
    assert_code(publish, Code::Unimplemented, "--enable-attach");

    let attach = start(&["--enable-attach"]).await;
    assert!(
        caps(&attach.csi)
            .await
            .contains(&(Cap::PublishUnpublishVolume as i32))
    );
}

#[tokio::test]
async fn create_volume_is_idempotent_and_makes_a_directory_with_node_topology() {
    let s = start(&[]).await;
    let volume = s
        .csi
        .create(create_request("pvc-1", 10 * MIB, &[]))
        .await
        .expect("create");
    assert_eq!(volume.capacity_bytes, 10 * MIB);
    assert!(
        volume.volume_id.starts_with("local:") && volume.volume_id.ends_with(":node-a"),
        "{}",
        volume.volume_id
    );
    assert!(volume.volume_id.len() <= 128);
    assert_eq!(
        volume.accessible_topology[0]
            .segments
            .get("topology.stowage.io/node")
            .map(String::as_str),
        Some(NODE)
    );
    assert_eq!(
        volume.volume_context.get("type").map(String::as_str),
        Some("local")
    );
    assert!(s.volume_data(&volume.volume_id, "").is_dir());

    let again = s
        .csi
        .create(create_request("pvc-1", 10 * MIB, &[]))
        .await
        .expect("retry");
    assert_eq!(again, volume);
    assert_code(
        s.csi.create(create_request("pvc-1", 20 * MIB, &[])).await,
        Code::AlreadyExists,
        "capacity",
    );
    assert_code(
        s.csi.create(enforced("pvc-1", 10 * MIB, "image")).await,
        Code::AlreadyExists,
        "parameter",
    );

    s.csi.delete(&volume.volume_id).await.expect("delete");
    assert!(!s.volume_data(&volume.volume_id, "").exists());
    s.csi.delete(&volume.volume_id).await.expect("delete twice");
    s.csi
        .delete("no-such-volume")
        .await
        .expect("unknown IDs delete fine");
    assert!(s.csi.list_all(0).await.expect("list").is_empty());
}

#[tokio::test]
async fn bad_requests_are_invalid_argument_naming_the_field() {
    let s = start(&[]).await;
    let long = "x".repeat(129);
    let with_capabilities = |capabilities: Vec<v1::VolumeCapability>| v1::CreateVolumeRequest {
        volume_capabilities: capabilities,
        ..create_request("p", MIB, &[])
    };
    let invalid = Code::InvalidArgument;
    let rows = vec![
        refusal("empty name", create_request("", MIB, &[]), invalid, "name"),
        refusal(
            "name over 128 bytes",
            create_request(&long, MIB, &[]),
            invalid,
            "name",
        ),
        refusal(
            "name with a slash",
            create_request("a/b", MIB, &[]),
            invalid,
            "name",
        ),
        refusal("name ..", create_request("..", MIB, &[]), invalid, "name"),
        refusal(
            "name with a NUL",
            create_request("nul\0byte", MIB, &[]),
            invalid,
            "name",
        ),
        refusal(
            "unknown parameter",
            create_request("p", MIB, &[("color", "blue")]),
            invalid,
            "color",
        ),
        refusal(
            "unknown type",
            create_request("p", MIB, &[("type", "zfs")]),
            invalid,
            "parameters",
        ),
        refusal(
            "limit below required",
            v1::CreateVolumeRequest {
                capacity_range: Some(CapacityRange {
                    required_bytes: 10,
                    limit_bytes: 5,
                }),
                ..create_request("p", 0, &[])
            },
            invalid,
            "capacity_range",
        ),
        refusal(
            "no capabilities",
            with_capabilities(vec![]),
            invalid,
            "volume_capabilities",
        ),
        refusal(
            "unknown access mode",
            with_capabilities(vec![capability(false, AccessModeKind::Unknown)]),
            invalid,
            "volume_capabilities",
        ),
        refusal(
            "mount and block at once",
            with_capabilities(vec![
                mount_rwo(),
                capability(true, AccessModeKind::SingleNodeWriter),
            ]),
            invalid,
            "volume_capabilities",
        ),
        refusal(
            "multi-node local volume",
            with_capabilities(vec![capability(
                false,
                AccessModeKind::MultiNodeMultiWriter,
            )]),
            invalid,
            "one node",
        ),
        refusal(
            "delete without an ID",
            delete_request(""),
            invalid,
            "volume_id",
        ),
        refusal(
            "delete of a 200-byte ID",
            delete_request(&"v".repeat(200)),
            invalid,
            "volume_id",
        ),
        refusal(
            "expand without a range",
            v1::ControllerExpandVolumeRequest {
                volume_id: "x".into(),
                ..Default::default()
            },
            invalid,
            "capacity_range",
        ),
    ];
    assert_refused(&s.csi, rows).await;
    assert!(
        s.csi.list_all(0).await.expect("list").is_empty(),
        "nothing half-made"
    );
}

fn delete_request(volume_id: &str) -> v1::DeleteVolumeRequest {
    v1::DeleteVolumeRequest {
        volume_id: volume_id.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn list_volumes_pages_and_refuses_a_foreign_token() {
    let s = start(&[]).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            s.csi
                .create(create_request(&format!("vol-{i}"), MIB, &[]))
                .await
                .expect("create")
                .volume_id,
        );
    }
    ids.sort();
    let mut listed: Vec<String> = s
        .csi
        .list_all(3)
        .await
        .expect("list")
        .into_iter()
        .map(|v| v.volume_id)
        .collect();
    listed.sort();
    assert_eq!(listed, ids);
    let first = s.csi.list_page(3, "").await.expect("page");
    assert_eq!(first.entries.len(), 3);
    assert!(!first.next_token.is_empty());
    let bad = s.csi.list_page(3, "invalid-token").await;
    assert_code(bad, Code::Aborted, "starting_token");
    let negative = s.csi.list_page(-1, "").await;
    assert_code(negative, Code::InvalidArgument, "max_entries");
}

#[tokio::test]
async fn capacity_and_topology_are_honoured() {
    let s = start(&[]).await;
    let here = Topology {
        segments: HashMap::from([("topology.stowage.io/node".to_string(), NODE.to_string())]),
    };
    let there = Topology {
        segments: HashMap::from([("topology.stowage.io/node".to_string(), "node-b".to_string())]),
    };
    let capacity = async |topology: Option<Topology>| {
        s.csi
            .controller
            .clone()
            .get_capacity(v1::GetCapacityRequest {
                accessible_topology: topology,
                ..Default::default()
            })
            .await
            .expect("capacity")
            .into_inner()
    };
    let local = capacity(Some(here.clone())).await;
    assert!(local.available_capacity > 0);
    assert_eq!(local.maximum_volume_size, Some(local.available_capacity));
    assert_eq!(capacity(Some(there.clone())).await.available_capacity, 0);

    let mut request = create_request("placed", MIB, &[]);
    request.accessibility_requirements = Some(TopologyRequirement {
        requisite: vec![there.clone()],
        preferred: vec![there.clone()],
    });
    assert_code(
        s.csi.create(request.clone()).await,
        Code::ResourceExhausted,
        "node-a",
    );
    request.accessibility_requirements = Some(TopologyRequirement {
        requisite: vec![there, here.clone()],
        preferred: vec![here],
    });
    s.csi.create(request).await.expect("node-a is requisite");

    let huge = create_request("huge", i64::MAX / 2, &[]);
    assert_code(s.csi.create(huge).await, Code::ResourceExhausted, "free");
}

/// Block count times block size, from the ext4 superblock.
fn ext4_size(path: &Path) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut sb = [0u8; 1024];
    std::fs::File::open(path)
        .expect("open image")
        .read_exact_at(&mut sb, 1024)
        .expect("read superblock");
    let blocks = u64::from(u32::from_le_bytes([sb[4], sb[5], sb[6], sb[7]]));
    let log_block = u32::from_le_bytes([sb[24], sb[25], sb[26], sb[27]]);
    blocks << (10 + log_block)
}

fn ext4_magic(path: &Path) -> u16 {
    use std::os::unix::fs::FileExt;
    let mut magic = [0u8; 2];
    std::fs::File::open(path)
        .expect("open image")
        .read_exact_at(&mut magic, 1024 + 0x38)
        .expect("read superblock");
    u16::from_le_bytes(magic)
}

#[tokio::test]
async fn image_volumes_hold_ext4_and_grow_with_node_expansion() {
    let s = start(&[]).await;
    let volume = s
        .csi
        .create(enforced("img", 32 * MIB, "image"))
        .await
        .expect("create");
    assert_eq!(
        volume.volume_context.get("layout").map(String::as_str),
        Some("image")
    );
    let image = s.volume_data(&volume.volume_id, ".img");
    assert_eq!(std::fs::metadata(&image).expect("image").len(), 32 << 20);
    assert_eq!(ext4_magic(&image), 0xEF53);
    assert_eq!(ext4_size(&image), 32 << 20);
    let tiny = enforced("tiny", 0, "image");
    let tiny = v1::CreateVolumeRequest {
        capacity_range: Some(CapacityRange {
            required_bytes: 1,
            limit_bytes: MIB,
        }),
        ..tiny
    };
    assert_code(s.csi.create(tiny).await, Code::OutOfRange, "capacity");

    let grown = s.csi.controller_expand(&volume.volume_id, 64 * MIB).await;
    let grown = grown.expect("expand");
    assert_eq!(grown.capacity_bytes, 64 * MIB);
    assert!(
        !grown.node_expansion_required,
        "an image no node holds is grown here, filesystem included"
    );
    assert_eq!(
        ext4_size(&image),
        64 << 20,
        "the filesystem fills the grown image"
    );
    assert_eq!(std::fs::metadata(&image).expect("image").len(), 64 << 20);
    let get = s.csi.get_volume(&volume.volume_id).await.expect("get");
    assert_eq!(get.volume.expect("volume").capacity_bytes, 64 * MIB);
}

#[tokio::test]
async fn block_volumes_are_raw_sparse_files() {
    let s = start(&[]).await;
    let mut request = create_request("raw", 8 * MIB, &[]);
    request.volume_capabilities = vec![capability(true, AccessModeKind::SingleNodeWriter)];
    let volume = s.csi.create(request).await.expect("create");
    assert_eq!(
        volume.volume_context.get("layout").map(String::as_str),
        Some("block")
    );
    let file = s.volume_data(&volume.volume_id, ".img");
    assert_eq!(std::fs::metadata(&file).expect("raw").len(), 8 << 20);
    assert_ne!(
        ext4_magic(&file),
        0xEF53,
        "a block volume carries no filesystem"
    );
}

#[tokio::test]
async fn snapshots_restore_and_clones_copy_the_data() {
    let s = start(&[]).await;
    let source = s
        .csi
        .create(create_request("src", 4 * MIB, &[]))
        .await
        .expect("create");
    std::fs::create_dir_all(s.volume_data(&source.volume_id, "").join("sub")).expect("mkdir");
    std::fs::write(
        s.volume_data(&source.volume_id, "").join("sub/data.txt"),
        b"hello",
    )
    .expect("write");

    let snap = s
        .csi
        .snapshot("snap-1", &source.volume_id)
        .await
        .expect("snapshot");
    assert!(snap.ready_to_use);
    assert_eq!(snap.size_bytes, 4 * MIB);
    assert_eq!(
        s.csi
            .snapshot("snap-1", &source.volume_id)
            .await
            .expect("idempotent"),
        snap
    );
    let other = s
        .csi
        .create(create_request("other", MIB, &[]))
        .await
        .expect("create");
    assert_code(
        s.csi.snapshot("snap-1", &other.volume_id).await,
        Code::AlreadyExists,
        "snap-1",
    );
    assert_code(
        s.csi
            .snapshot("snap-x", "local:00000000000000000000000000000000:node-a")
            .await,
        Code::NotFound,
        "does not exist",
    );

    std::fs::write(
        s.volume_data(&source.volume_id, "").join("sub/data.txt"),
        b"changed later",
    )
    .expect("write");
    let mut restore = create_request("restored", 0, &[]);
    restore.volume_content_source = from_snapshot(&snap.snapshot_id);
    let restored = s.csi.create(restore).await.expect("restore");
    assert_eq!(
        restored.capacity_bytes,
        4 * MIB,
        "a restore without capacity takes the snapshot's size"
    );
    assert_eq!(
        std::fs::read(s.volume_data(&restored.volume_id, "").join("sub/data.txt")).expect("read"),
        b"hello"
    );

    let mut clone = create_request("cloned", 4 * MIB, &[]);
    clone.volume_content_source = from_volume(&source.volume_id);
    let cloned = s.csi.create(clone).await.expect("clone");
    assert_eq!(
        std::fs::read(s.volume_data(&cloned.volume_id, "").join("sub/data.txt")).expect("read"),
        b"changed later"
    );

    let mut too_small = create_request("too-small", MIB, &[]);
    too_small.capacity_range = Some(CapacityRange {
        required_bytes: MIB,
        limit_bytes: 2 * MIB,
    });
    too_small.volume_content_source = from_volume(&source.volume_id);
    assert_code(s.csi.create(too_small).await, Code::OutOfRange, "limit");
    let mut missing = create_request("missing", MIB, &[]);
    missing.volume_content_source =
        from_snapshot("local-snap:00000000000000000000000000000000:node-a");
    assert_code(s.csi.create(missing).await, Code::NotFound, "snapshot");
    let mut missing = create_request("missing", MIB, &[]);
    missing.volume_content_source = from_volume("bogus");
    assert_code(s.csi.create(missing).await, Code::NotFound, "volume");

    let list = async |snapshot_id: &str, source_volume_id: &str| {
        s.csi
            .controller
            .clone()
            .list_snapshots(v1::ListSnapshotsRequest {
                snapshot_id: snapshot_id.into(),
                source_volume_id: source_volume_id.into(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .entries
            .len()
    };
    let snap2 = s
        .csi
        .snapshot("snap-2", &other.volume_id)
        .await
        .expect("snapshot");
    assert_eq!(list("", "").await, 2);
    assert_eq!(list(&snap.snapshot_id, "").await, 1);
    assert_eq!(list("", &other.volume_id).await, 1);
    assert_eq!(list("unknown", "").await, 0);
    let delete = async |id: &str| {
        s.csi
            .controller
            .clone()
            .delete_snapshot(v1::DeleteSnapshotRequest {
                snapshot_id: id.into(),
                ..Default::default()
            })
            .await
    };
    delete(&snap2.snapshot_id).await.expect("delete");
    delete(&snap2.snapshot_id).await.expect("delete twice");
    assert_eq!(list("", "").await, 1);
}

#[tokio::test]
async fn validate_and_get_volume_report_support_and_condition() {
    let s = start(&[]).await;
    let volume = s
        .csi
        .create(create_request("v", MIB, &[]))
        .await
        .expect("create");
    let validate = async |caps: Vec<v1::VolumeCapability>, id: &str| {
        s.csi
            .controller
            .clone()
            .validate_volume_capabilities(v1::ValidateVolumeCapabilitiesRequest {
                volume_id: id.into(),
                volume_capabilities: caps,
                ..Default::default()
            })
            .await
    };
    assert!(
        validate(vec![mount_rwo()], &volume.volume_id)
            .await
            .expect("validate")
            .into_inner()
            .confirmed
            .is_some()
    );
    let multi = validate(
        vec![capability(false, AccessModeKind::MultiNodeMultiWriter)],
        &volume.volume_id,
    )
    .await
    .expect("validate")
    .into_inner();
    assert!(multi.confirmed.is_none() && multi.message.contains("one node"));
    assert_code(
        validate(
            vec![mount_rwo()],
            "local:00000000000000000000000000000000:node-a",
        )
        .await,
        Code::NotFound,
        "does not exist",
    );
    assert_code(
        validate(vec![], &volume.volume_id).await,
        Code::InvalidArgument,
        "volume_capabilities",
    );

    let get = async || s.csi.get_volume(&volume.volume_id).await.expect("get");
    assert!(
        !get()
            .await
            .status
            .expect("status")
            .volume_condition
            .expect("condition")
            .abnormal
    );
    std::fs::remove_dir_all(s.volume_data(&volume.volume_id, "")).expect("lose the data");
    let condition = get()
        .await
        .status
        .expect("status")
        .volume_condition
        .expect("condition");
    assert!(condition.abnormal && condition.message.contains("missing"));
}

#[tokio::test]
async fn concurrent_creates_of_one_name_yield_one_volume() {
    let s = start(&[]).await;
    let calls = (0..32).map(|_| {
        let csi = s.csi.clone();
        tokio::spawn(async move { csi.create(enforced("contended", 16 * MIB, "image")).await })
    });
    let mut ids = std::collections::BTreeSet::new();
    for call in calls {
        match call.await.expect("join") {
            Ok(volume) => {
                ids.insert(volume.volume_id);
            }
            Err(status) => assert_eq!(status.code(), Code::Aborted, "{}", status.message()),
        }
    }
    let retried = s
        .csi
        .create(enforced("contended", 16 * MIB, "image"))
        .await
        .expect("retry");
    ids.insert(retried.volume_id.clone());
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(s.csi.list_all(0).await.expect("list").len(), 1);
}

/// Keys of the volumes whose data is being built (`volumes/.<key>.tmp`): a create
/// between its first write and the rename that precedes its record.
fn temporaries(volumes: &Path) -> BTreeSet<String> {
    std::fs::read_dir(volumes)
        .expect("list the volumes")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Some(name.strip_prefix('.')?.strip_suffix(".tmp")?.to_string())
        })
        .collect()
}

#[tokio::test]
async fn volumes_survive_restarts_and_a_kill_leaves_nothing_half_made() {
    let mut s = start(&[]).await;
    let kept = s
        .csi
        .create(create_request("kept", MIB, &[]))
        .await
        .expect("create");
    assert!(s.terminate().await.success());
    s.relaunch().await;
    assert_eq!(s.csi.list_all(0).await.expect("list"), vec![kept.clone()]);

    // Many slow creates (ext4 images); kill -9 as soon as one is building its data.
    let names: Vec<String> = (0..12).map(|i| format!("crash-{i}")).collect();
    let request = |name: &str| enforced(name, 64 * MIB, "image");
    let inflight: Vec<_> = names
        .iter()
        .map(|n| {
            let (csi, req) = (s.csi.clone(), request(n));
            tokio::spawn(async move { csi.create(req).await })
        })
        .collect();
    let volumes_dir = s.root().join("volumes");
    wait_for(
        "a create building its data",
        Duration::from_secs(20),
        async || (!temporaries(&volumes_dir).is_empty()).then_some(()),
    )
    .await;
    s.kill_hard().await;

    // The kill cut creates short: their callers saw the connection go, not an answer...
    let mut answered = BTreeSet::new();
    let mut cut = Vec::new();
    for (name, call) in names.iter().zip(inflight) {
        match call.await.expect("join") {
            Ok(volume) => {
                answered.insert(volume.volume_id);
            }
            Err(status) => {
                assert!(
                    matches!(
                        status.code(),
                        Code::Unavailable | Code::Unknown | Code::Cancelled
                    ),
                    "{name}: a transport error when the process dies, not a refusal: {status:?}"
                );
                cut.push(name);
            }
        }
    }
    assert!(!cut.is_empty(), "the kill interrupted no create");
    // ...and left them where a crash may: data half-built under a temporary name, and
    // (below) no record of it.
    let half_made = temporaries(&volumes_dir);
    assert!(
        !half_made.is_empty(),
        "an interrupted create leaves its temporary behind until the next start"
    );

    s.relaunch().await;
    let leftovers = temporaries(&volumes_dir);
    assert!(
        leftovers.is_empty(),
        "temporaries survived a restart: {leftovers:?}"
    );
    let listed = s.csi.list_all(0).await.expect("list");
    let listed_ids: BTreeSet<String> = listed.iter().map(|v| v.volume_id.clone()).collect();
    assert!(
        answered.is_subset(&listed_ids),
        "an answered create is durable: {answered:?} not all in {listed_ids:?}"
    );
    for volume in &listed {
        let key = volume.volume_id.split(':').nth(1).expect("key");
        assert!(
            !half_made.contains(key),
            "{} was half-made at the kill, yet has a record",
            volume.volume_id
        );
        let suffix = if volume.volume_context.get("layout").map(String::as_str) == Some("image") {
            ".img"
        } else {
            ""
        };
        let data = s.volume_data(&volume.volume_id, suffix);
        assert!(
            data.exists(),
            "listed volume {} has no data",
            volume.volume_id
        );
        if suffix == ".img" {
            assert_eq!(
                ext4_magic(&data),
                0xEF53,
                "listed image {} is not a complete filesystem",
                volume.volume_id
            );
        }
    }
    for name in &names {
        s.csi
            .create(request(name))
            .await
            .expect("a retry after the crash succeeds");
    }
    assert_eq!(
        s.csi.list_all(0).await.expect("list").len(),
        names.len() + 1
    );
}

#[tokio::test]
async fn attach_bookkeeping_refuses_other_nodes() {
    let s = start(&["--enable-attach"]).await;
    let volume = s
        .csi
        .create(create_request("att", MIB, &[]))
        .await
        .expect("create");
    let publish = async |node: &str, readonly: bool| {
        s.csi
            .controller_publish(v1::ControllerPublishVolumeRequest {
                readonly,
                ..controller_publish_request(&volume.volume_id, node)
            })
            .await
    };
    publish(NODE, false).await.expect("publish");
    publish(NODE, false).await.expect("publish twice");
    assert_code(
        publish(NODE, true).await,
        Code::AlreadyExists,
        "other options",
    );
    assert_code(publish("node-b", false).await, Code::NotFound, "node-b");
    assert_code(
        s.csi.delete(&volume.volume_id).await,
        Code::FailedPrecondition,
        "published",
    );
    let get = s.csi.get_volume(&volume.volume_id).await.expect("get");
    assert_eq!(
        get.status.expect("status").published_node_ids,
        vec![NODE.to_string()]
    );
    s.csi
        .controller
        .clone()
        .controller_unpublish_volume(v1::ControllerUnpublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            node_id: NODE.into(),
            ..Default::default()
        })
        .await
        .expect("unpublish");
    s.csi
        .delete(&volume.volume_id)
        .await
        .expect("delete after unpublish");
    // A volume or node the plugin cannot find counts as unpublished (csi-sanity's
    // idempotent lifecycle unpublishes after the delete).
    let unpublish = async |volume_id: &str, node: &str| {
        s.csi
            .controller
            .clone()
            .controller_unpublish_volume(v1::ControllerUnpublishVolumeRequest {
                volume_id: volume_id.into(),
                node_id: node.into(),
                ..Default::default()
            })
            .await
    };
    for (volume_id, node) in [
        (volume.volume_id.as_str(), NODE),
        (volume.volume_id.as_str(), "no-such-node"),
        ("local~no-such-node~no-such-volume", NODE),
        ("not-a-stowage-id", NODE),
    ] {
        unpublish(volume_id, node)
            .await
            .unwrap_or_else(|e| panic!("unpublish {volume_id} from {node}: {e}"));
    }
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_sigterm_exits_cleanly() {
    let mut s = start(&[]).await;
    s.kill_hard().await;
    assert!(s.socket().exists(), "kill -9 leaves the socket behind");
    s.relaunch().await;
    assert!(s.csi.probe().await.expect("probe"));
    assert!(s.terminate().await.success());
}

#[tokio::test]
async fn attach_refuses_more_volumes_than_the_node_limit() {
    let s = start(&["--enable-attach", "--max-volumes-per-node", "2"]).await;
    let volumes = s
        .csi
        .create_volumes(&["lim-1", "lim-2", "lim-3"], MIB)
        .await;
    let publish = async |volume_id: &str| {
        s.csi
            .controller_publish(controller_publish_request(volume_id, NODE))
            .await
    };
    publish(&volumes[0]).await.expect("first");
    publish(&volumes[1]).await.expect("second");
    publish(&volumes[1])
        .await
        .expect("second again is no new volume");
    assert_code(publish(&volumes[2]).await, Code::ResourceExhausted, "limit");
}

/// ControllerModifyVolume's `onDelete` decides what a later DeleteVolume does with the
/// data: set at CreateVolume (mutable_parameters) or changed afterwards, either way.
#[tokio::test]
async fn modified_on_delete_decides_what_delete_keeps() {
    let s = start(&[]).await;
    let modify = async |volume_id: &str, on_delete: &str| {
        s.csi
            .controller
            .clone()
            .controller_modify_volume(v1::ControllerModifyVolumeRequest {
                volume_id: volume_id.into(),
                mutable_parameters: [("onDelete".to_string(), on_delete.to_string())].into(),
                ..Default::default()
            })
            .await
    };
    // (created with, modified to, data kept after delete)
    let rows = [
        (None, None, false),
        (None, Some("retain"), true),
        (Some("retain"), None, true),
        (Some("retain"), Some("delete"), false),
    ];
    for (i, (created, modified, kept)) in rows.into_iter().enumerate() {
        let mut request = create_request(&format!("mod-{i}"), MIB, &[]);
        if let Some(value) = created {
            request.mutable_parameters = [("onDelete".to_string(), value.to_string())].into();
        }
        let volume = s.csi.create(request).await.expect("create");
        let data = s.volume_data(&volume.volume_id, "");
        std::fs::write(data.join("payload"), b"keep me?").expect("write");
        if let Some(value) = modified {
            modify(&volume.volume_id, value).await.expect("modify");
            modify(&volume.volume_id, value)
                .await
                .expect("modify again");
        }
        s.csi.delete(&volume.volume_id).await.expect("delete");
        let name = data.file_name().expect("key");
        let retained = s.root().join("retained").join(name).join("payload");
        assert_eq!(retained.exists(), kept, "row {i}: {retained:?}");
        assert!(!data.exists(), "row {i}: the volume's data stayed in place");
    }
}
