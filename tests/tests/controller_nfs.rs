//! The controller binary against the in-process NFSv3 server (`nfs3_server`):
//! subdirectories, templates, onDelete policies, snapshots and an outage.

use csi_proto::v1::{self as v1, CapacityRange};
use nfs_session::{Export, Session};
use stowage_tests::csi::{
    AccessModeKind, assert_code, capability, controller_publish_request, create_request,
    from_snapshot, from_volume, mount_rwo, nfs_create_request,
};
use stowage_tests::driver::{Driver, Launch};
use stowage_tests::nfs::MemNfs;
use tonic::Code;

const MIB: i64 = 1 << 20;

/// `stowage controller` and an in-process NFS server it makes volumes on.
struct Setup {
    driver: Driver,
    nfs: Option<MemNfs>,
}

impl Setup {
    async fn start(flags: &[&str]) -> Self {
        Self {
            nfs: Some(MemNfs::start().await),
            driver: Launch::controller().flags(flags).start().await,
        }
    }

    fn server(&self) -> String {
        self.nfs.as_ref().expect("running").server()
    }

    fn request(&self, name: &str, size: i64, extra: &[(&str, &str)]) -> v1::CreateVolumeRequest {
        nfs_create_request(name, size, (&self.server(), "/"), extra)
    }

    /// An independent look at the server: does this path exist, and with what mode?
    async fn stat(&self, path: &str) -> Option<u32> {
        let export = Export::parse(&self.server(), "/").expect("export");
        let mut session = Session::connect(&export).await.expect("connect");
        let components: Vec<String> = path.split('/').map(str::to_string).collect();
        let (parent, name) = components.split_at(components.len() - 1);
        let dir = session.resolve(parent).await.expect("resolve")?;
        let entries = session.read_dir(&dir).await.expect("readdir");
        session.close().await;
        entries
            .into_iter()
            .find(|e| e.name == name[0])
            .map(|e| e.mode & 0o7777)
    }

    async fn write(&self, dir: &str, name: &str, data: &[u8]) {
        let export = Export::parse(&self.server(), "/").expect("export");
        let mut session = Session::connect(&export).await.expect("connect");
        let components: Vec<String> = dir.split('/').map(str::to_string).collect();
        let handle = session
            .resolve(&components)
            .await
            .expect("resolve")
            .expect("dir exists");
        session
            .write_file_atomic(&handle, name, data)
            .await
            .expect("write");
        session.close().await;
    }

    async fn read(&self, dir: &str, name: &str) -> Option<Vec<u8>> {
        let export = Export::parse(&self.server(), "/").expect("export");
        let mut session = Session::connect(&export).await.expect("connect");
        let components: Vec<String> = dir.split('/').map(str::to_string).collect();
        let handle = session.resolve(&components).await.expect("resolve")?;
        let data = session.read_file(&handle, name).await.expect("read");
        session.close().await;
        data
    }
}

#[tokio::test]
async fn nfs_volume_is_a_subdirectory_made_over_the_network() {
    let s = Setup::start(&[]).await;
    let volume = s
        .driver
        .csi
        .create(s.request("pvc-a", 5 * MIB, &[]))
        .await
        .expect("create");
    assert!(
        volume.volume_id.starts_with("nfs:") && volume.volume_id.len() <= 128,
        "{}",
        volume.volume_id
    );
    assert!(
        volume.accessible_topology.is_empty(),
        "NFS volumes are reachable from every node"
    );
    assert_eq!(
        volume.volume_context.get("subDir").map(String::as_str),
        Some("pvc-a")
    );
    assert_eq!(volume.volume_context.get("server"), Some(&s.server()));
    assert!(s.stat("pvc-a").await.is_some());
    assert_eq!(
        s.driver
            .csi
            .create(s.request("pvc-a", 5 * MIB, &[]))
            .await
            .expect("retry"),
        volume
    );
    assert_code(
        s.driver
            .csi
            .create(s.request("pvc-a", 5 * MIB, &[("onDelete", "retain")]))
            .await,
        Code::AlreadyExists,
        "parameter",
    );
    assert_eq!(
        s.driver.csi.list_all(1).await.expect("list"),
        vec![volume.clone()]
    );
    s.driver
        .csi
        .delete(&volume.volume_id)
        .await
        .expect("delete");
    assert_eq!(s.stat("pvc-a").await, None);
    s.driver
        .csi
        .delete(&volume.volume_id)
        .await
        .expect("delete twice");
}

#[tokio::test]
async fn sub_dir_template_and_mount_permissions_are_applied() {
    let s = Setup::start(&[]).await;
    let mut request = s.request(
        "pvc-123",
        MIB,
        &[
            ("subDir", "${pvc.metadata.namespace}-${pvc.metadata.name}"),
            ("mountPermissions", "0750"),
        ],
    );
    request
        .parameters
        .insert("csi.storage.k8s.io/pvc/name".into(), "data".into());
    request
        .parameters
        .insert("csi.storage.k8s.io/pvc/namespace".into(), "team".into());
    request
        .parameters
        .insert("csi.storage.k8s.io/pv/name".into(), "pvc-123".into());
    let volume = s.driver.csi.create(request).await.expect("create");
    assert_eq!(
        volume.volume_context.get("subDir").map(String::as_str),
        Some("team-data")
    );
    assert!(
        s.stat("team-data").await.is_some(),
        "the expanded subdirectory exists (modes are checked against ganesha: this server ignores them)"
    );
    let escape = s.request("evil", MIB, &[("subDir", "../../etc")]);
    assert_code(
        s.driver.csi.create(escape).await,
        Code::InvalidArgument,
        "subDir",
    );
    let block = v1::CreateVolumeRequest {
        volume_capabilities: vec![capability(true, AccessModeKind::SingleNodeWriter)],
        ..s.request("blk", MIB, &[])
    };
    assert_code(
        s.driver.csi.create(block).await,
        Code::InvalidArgument,
        "block",
    );
    let no_share = create_request("x", MIB, &[("type", "nfs"), ("server", "127.0.0.1")]);
    assert_code(
        s.driver.csi.create(no_share).await,
        Code::InvalidArgument,
        "share",
    );
}

#[tokio::test]
async fn on_delete_retain_and_archive_keep_the_data() {
    let s = Setup::start(&[]).await;
    let retained = s
        .driver
        .csi
        .create(s.request("kept", MIB, &[("onDelete", "retain")]))
        .await
        .expect("create");
    let archived = s
        .driver
        .csi
        .create(s.request("old", MIB, &[("onDelete", "archive")]))
        .await
        .expect("create");
    s.write("old", "file", b"keep me").await;
    s.driver
        .csi
        .delete(&retained.volume_id)
        .await
        .expect("delete");
    s.driver
        .csi
        .delete(&archived.volume_id)
        .await
        .expect("delete");
    assert!(s.stat("kept").await.is_some());
    assert!(s.stat("old").await.is_none());
    let export = Export::parse(&s.server(), "/").expect("export");
    let mut session = Session::connect(&export).await.expect("connect");
    let root = session.root();
    let names: Vec<String> = session
        .read_dir(&root)
        .await
        .expect("readdir")
        .into_iter()
        .map(|e| e.name)
        .collect();
    session.close().await;
    let archive = names
        .iter()
        .find(|n| n.starts_with("archived-old-"))
        .expect("archived directory");
    assert_eq!(
        s.read(archive, "file").await.as_deref(),
        Some(&b"keep me"[..])
    );
    assert!(s.driver.csi.list_all(0).await.expect("list").is_empty());
}

#[tokio::test]
async fn nfs_snapshots_restore_and_clone_over_the_wire() {
    let s = Setup::start(&[]).await;
    let source = s
        .driver
        .csi
        .create(s.request("src", 2 * MIB, &[]))
        .await
        .expect("create");
    s.write("src", "data.txt", b"v1").await;
    let snap = s
        .driver
        .csi
        .snapshot("nsnap", &source.volume_id)
        .await
        .expect("snapshot");
    assert!(snap.snapshot_id.starts_with("nfs-snap:"));
    s.write("src", "data.txt", b"v2").await;

    let mut restore = s.request("restored", 0, &[]);
    restore.volume_content_source = from_snapshot(&snap.snapshot_id);
    let restored = s.driver.csi.create(restore).await.expect("restore");
    assert_eq!(restored.capacity_bytes, 2 * MIB);
    assert_eq!(
        s.read("restored", "data.txt").await.as_deref(),
        Some(&b"v1"[..])
    );

    let mut clone = s.request("cloned", 2 * MIB, &[]);
    clone.volume_content_source = from_volume(&source.volume_id);
    s.driver.csi.create(clone).await.expect("clone");
    assert_eq!(
        s.read("cloned", "data.txt").await.as_deref(),
        Some(&b"v2"[..])
    );

    let mut too_big = s.request("too-big", MIB, &[]);
    too_big.capacity_range = Some(CapacityRange {
        required_bytes: MIB,
        limit_bytes: MIB,
    });
    too_big.volume_content_source = from_volume(&source.volume_id);
    assert_code(
        s.driver.csi.create(too_big).await,
        Code::OutOfRange,
        "limit",
    );
    let mut local_source = s.request("mixed", MIB, &[]);
    local_source.volume_content_source = from_volume("local:00000000000000000000000000000000:n");
    assert_code(
        s.driver.csi.create(local_source).await,
        Code::NotFound,
        "source volume",
    );

    let listed = s
        .driver
        .csi
        .controller
        .clone()
        .list_snapshots(v1::ListSnapshotsRequest {
            source_volume_id: source.volume_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.entries.len(), 1);
    s.driver
        .csi
        .controller
        .clone()
        .delete_snapshot(v1::DeleteSnapshotRequest {
            snapshot_id: snap.snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .expect("delete snapshot");
    let got = s
        .driver
        .csi
        .controller
        .clone()
        .get_snapshot(v1::GetSnapshotRequest {
            snapshot_id: snap.snapshot_id,
            ..Default::default()
        })
        .await;
    assert_code(got, Code::NotFound, "does not exist");
}

#[tokio::test]
async fn capacity_comes_from_fsstat_and_expansion_is_recorded() {
    let s = Setup::start(&[]).await;
    let params = s.request("capacity", MIB, &[]).parameters;
    let capacity = s
        .driver
        .csi
        .controller
        .clone()
        .get_capacity(v1::GetCapacityRequest {
            parameters: params,
            ..Default::default()
        })
        .await
        .expect("capacity")
        .into_inner();
    let export = Export::parse(&s.server(), "/").expect("export");
    let mut session = Session::connect(&export).await.expect("connect");
    let stats = session.fsstat().await.expect("fsstat");
    session.close().await;
    assert_eq!(
        capacity.available_capacity,
        i64::try_from(stats.available_bytes).expect("fits")
    );

    let volume = s
        .driver
        .csi
        .create(s.request("grow", MIB, &[]))
        .await
        .expect("create");
    let grown = s
        .driver
        .csi
        .controller_expand(&volume.volume_id, 3 * MIB)
        .await;
    let grown = grown.expect("expand");
    assert_eq!(grown.capacity_bytes, 3 * MIB);
    assert!(!grown.node_expansion_required);
    assert_eq!(
        s.driver.csi.list_all(0).await.expect("list")[0].capacity_bytes,
        3 * MIB
    );
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_the_next_call_after_it_returns_works() {
    let mut s = Setup::start(&[]).await;
    s.driver
        .csi
        .create(s.request("before", MIB, &[]))
        .await
        .expect("create");
    let port = s.nfs.take().expect("running").stop().await;
    let request = nfs_create_request("during", MIB, (&format!("127.0.0.1:{port}"), "/"), &[]);
    assert_code(
        s.driver.csi.create(request.clone()).await,
        Code::Unavailable,
        "NFS server unavailable",
    );
    assert!(
        !s.driver.csi.probe().await.expect("probe answers"),
        "probe reports not-ready while the export is down"
    );
    assert_code(
        s.driver.csi.list_all(0).await,
        Code::Unavailable,
        "unavailable",
    );

    s.nfs = Some(MemNfs::start_on(port).await);
    let volume = s
        .driver
        .csi
        .create(request)
        .await
        .expect("works once the server is back");
    assert!(volume.volume_id.starts_with("nfs:"));
    assert!(s.driver.csi.probe().await.expect("probe"));
}

#[tokio::test]
async fn single_node_nfs_volume_is_refused_on_a_second_node() {
    let s = Setup::start(&["--enable-attach"]).await;
    let rwo = s
        .driver
        .csi
        .create(s.request("rwo", MIB, &[]))
        .await
        .expect("create");
    let publish = async |id: &str, node: &str, cap: v1::VolumeCapability| {
        s.driver
            .csi
            .controller_publish(v1::ControllerPublishVolumeRequest {
                volume_capability: Some(cap),
                ..controller_publish_request(id, node)
            })
            .await
    };
    publish(&rwo.volume_id, "n1", mount_rwo())
        .await
        .expect("first node");
    assert_code(
        publish(&rwo.volume_id, "n2", mount_rwo()).await,
        Code::FailedPrecondition,
        "single-node",
    );
    let mut rwx = s.request("rwx", MIB, &[]);
    rwx.volume_capabilities = vec![capability(false, AccessModeKind::MultiNodeMultiWriter)];
    let rwx = s.driver.csi.create(rwx).await.expect("create");
    let shared = capability(false, AccessModeKind::MultiNodeMultiWriter);
    publish(&rwx.volume_id, "n1", shared.clone())
        .await
        .expect("n1");
    publish(&rwx.volume_id, "n2", shared).await.expect("n2");
    assert_code(
        publish(
            "nfs:00000000000000000000000000000000:127.0.0.1/x",
            "n1",
            mount_rwo(),
        )
        .await,
        Code::Unavailable,
        "",
    );
}

#[tokio::test]
async fn a_server_that_never_answered_does_not_make_probe_fail() {
    let s = Setup::start(&[]).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let typo = nfs_create_request("typo", MIB, (&format!("127.0.0.1:{closed}"), "/"), &[]);
    assert_code(
        s.driver.csi.create(typo).await,
        Code::Unavailable,
        "unavailable",
    );
    assert!(
        s.driver.csi.probe().await.expect("probe"),
        "an export with no volumes is not a backend"
    );
    assert!(s.driver.csi.list_all(0).await.expect("list").is_empty());
}

/// Group snapshots over the wire: both members restore their volume as it was; a
/// volume on another export cannot join the group; ModifyVolume's onDelete reaches a
/// later DeleteVolume.
#[tokio::test]
async fn nfs_group_snapshots_and_modified_on_delete() {
    let s = Setup::start(&[]).await;
    let mut volumes = Vec::new();
    for name in ["ga", "gb"] {
        let volume = s
            .driver
            .csi
            .create(s.request(name, MIB, &[]))
            .await
            .expect("create");
        s.write(name, "data.txt", name.as_bytes()).await;
        volumes.push(volume.volume_id);
    }
    let ids: Vec<&str> = volumes.iter().map(String::as_str).collect();
    let group = s
        .driver
        .csi
        .group_snapshot("nfs-group", &ids)
        .await
        .expect("group");
    assert!(group.group_snapshot_id.starts_with("nfs-grp:"));
    for name in ["ga", "gb"] {
        s.write(name, "data.txt", b"changed").await;
    }
    for member in &group.snapshots {
        let original = if member.source_volume_id == volumes[0] {
            "ga"
        } else {
            "gb"
        };
        let restored_name = format!("restored-{original}");
        let mut restore = s.request(&restored_name, 0, &[]);
        restore.volume_content_source = from_snapshot(&member.snapshot_id);
        s.driver.csi.create(restore).await.expect("restore member");
        assert_eq!(
            s.read(&restored_name, "data.txt").await.as_deref(),
            Some(original.as_bytes())
        );
    }
    assert_code(
        s.driver
            .csi
            .group_snapshot(
                "mixed",
                &[ids[0], "local:00000000000000000000000000000000:n"],
            )
            .await,
        Code::FailedPrecondition,
        "serves no local volumes",
    );
    s.driver
        .csi
        .controller
        .clone()
        .controller_modify_volume(v1::ControllerModifyVolumeRequest {
            volume_id: volumes[0].clone(),
            mutable_parameters: [("onDelete".to_string(), "retain".to_string())].into(),
            ..Default::default()
        })
        .await
        .expect("modify");
    s.driver
        .csi
        .group
        .clone()
        .delete_volume_group_snapshot(v1::DeleteVolumeGroupSnapshotRequest {
            group_snapshot_id: group.group_snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .expect("delete group");
    for id in &volumes {
        s.driver.csi.delete(id).await.expect("delete");
    }
    assert!(
        s.stat("ga").await.is_some(),
        "onDelete: retain was modified in"
    );
    assert!(
        s.stat("gb").await.is_none(),
        "the class's onDelete: delete holds"
    );
}
