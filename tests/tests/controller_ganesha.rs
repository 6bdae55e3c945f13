//! The controller's userspace NFS client against an independent server: nfs-ganesha
//! exporting a local directory, so every effect is checked on the disk behind it.
//! These tests share rpcbind's program registrations, so they run one at a time
//! (nextest group `ganesha`).

use std::os::unix::fs::PermissionsExt;

use csi_proto::v1;
use stowage_tests::csi::{assert_code, from_snapshot, from_volume, nfs_create_request};
use stowage_tests::driver::Launch;
use stowage_tests::nfs::Ganesha;
use tonic::Code;

const MIB: i64 = 1 << 20;

fn request(ganesha: &Ganesha, name: &str, extra: &[(&str, &str)]) -> v1::CreateVolumeRequest {
    nfs_create_request(name, MIB, ("127.0.0.1", &ganesha.share()), extra)
}

#[tokio::test]
async fn ganesha_volumes_snapshots_and_policies_land_on_disk() {
    let ganesha = Ganesha::start().await;
    let controller = Launch::controller().start().await;
    let csi = &controller.csi;
    let export = ganesha.export_dir();

    let volume = csi
        .create(request(&ganesha, "pvc-g1", &[]))
        .await
        .expect("create");
    let data = export.join("pvc-g1");
    assert!(data.is_dir());
    assert_eq!(
        std::fs::metadata(&data).expect("stat").permissions().mode() & 0o7777,
        0o777,
        "writable by pods by default"
    );
    assert_eq!(
        csi.create(request(&ganesha, "pvc-g1", &[]))
            .await
            .expect("retry"),
        volume
    );

    let private = csi
        .create(request(
            &ganesha,
            "pvc-g2",
            &[
                ("mountPermissions", "0750"),
                ("subDir", "nested/${pv.metadata.name}"),
            ],
        ))
        .await
        .expect("create");
    assert_eq!(
        std::fs::metadata(export.join("nested/pvc-g2"))
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777,
        0o750
    );

    std::fs::create_dir(data.join("sub")).expect("mkdir");
    std::fs::write(data.join("sub/file"), b"snapshot me").expect("write");
    std::os::unix::fs::symlink("sub/file", data.join("link")).expect("symlink");
    let snap = csi
        .snapshot("gsnap", &volume.volume_id)
        .await
        .expect("snapshot");
    std::fs::write(data.join("sub/file"), b"later").expect("write");
    let mut restore = request(&ganesha, "pvc-restored", &[]);
    restore.volume_content_source = from_snapshot(&snap.snapshot_id);
    csi.create(restore).await.expect("restore");
    assert_eq!(
        std::fs::read(export.join("pvc-restored/sub/file")).expect("read"),
        b"snapshot me"
    );
    assert_eq!(
        std::fs::read_link(export.join("pvc-restored/link"))
            .expect("symlink copied")
            .to_str(),
        Some("sub/file")
    );
    let mut clone = request(&ganesha, "pvc-clone", &[]);
    clone.volume_content_source = from_volume(&volume.volume_id);
    csi.create(clone).await.expect("clone");
    assert_eq!(
        std::fs::read(export.join("pvc-clone/sub/file")).expect("read"),
        b"later"
    );

    let capacity = csi
        .controller
        .clone()
        .get_capacity(v1::GetCapacityRequest {
            parameters: request(&ganesha, "x", &[]).parameters,
            ..Default::default()
        })
        .await
        .expect("capacity")
        .into_inner();
    let statvfs = nix::sys::statvfs::statvfs(&export).expect("statvfs");
    let local_free = (statvfs.blocks_available() * statvfs.fragment_size()) as i64;
    assert!(
        (capacity.available_capacity - local_free).abs() < 256 * MIB,
        "FSSTAT {} vs statvfs {local_free}",
        capacity.available_capacity
    );

    let archived = csi
        .create(request(&ganesha, "pvc-arch", &[("onDelete", "archive")]))
        .await
        .expect("create");
    std::fs::write(export.join("pvc-arch/keep"), b"x").expect("write");
    csi.delete(&archived.volume_id).await.expect("delete");
    let archive = std::fs::read_dir(&export)
        .expect("list")
        .filter_map(|e| e.ok())
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("archived-pvc-arch-")
        })
        .expect("archive dir");
    assert!(archive.path().join("keep").exists());

    csi.delete(&volume.volume_id).await.expect("delete");
    csi.delete(&private.volume_id).await.expect("delete");
    assert!(!data.exists());
    assert!(!export.join("nested/pvc-g2").exists());
    let names: Vec<String> = csi
        .list_all(2)
        .await
        .expect("list")
        .into_iter()
        .map(|v| v.volume_context["subDir"].clone())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[tokio::test]
async fn ganesha_contended_create_yields_one_volume() {
    let ganesha = Ganesha::start().await;
    let controller = Launch::controller().start().await;
    let csi = &controller.csi;
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let (csi, req) = (csi.clone(), request(&ganesha, "contended", &[]));
            tokio::spawn(async move { csi.create(req).await })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for call in calls {
        match call.await.expect("join") {
            Ok(v) => {
                ids.insert(v.volume_id);
            }
            Err(status) => assert_eq!(status.code(), Code::Aborted, "{}", status.message()),
        }
    }
    ids.insert(
        csi.create(request(&ganesha, "contended", &[]))
            .await
            .expect("retry")
            .volume_id,
    );
    assert_eq!(ids.len(), 1);
    assert_eq!(csi.list_all(0).await.expect("list").len(), 1);
    let dirs = std::fs::read_dir(ganesha.export_dir())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(dirs, 1);
}

#[tokio::test]
async fn ganesha_restart_is_unavailable_then_recovers_with_data_intact() {
    let mut ganesha = Ganesha::start().await;
    let mut controller = Launch::controller().start().await;
    let csi = &controller.csi;
    let volume = csi
        .create(request(&ganesha, "survivor", &[]))
        .await
        .expect("create");

    ganesha.stop().await;
    assert_code(
        csi.create(request(&ganesha, "during-outage", &[])).await,
        Code::Unavailable,
        "unavailable",
    );
    assert!(!csi.probe().await.expect("probe answers"));

    ganesha.restart().await;
    assert!(
        csi.probe().await.expect("probe"),
        "ready again once the export answers"
    );
    assert_eq!(csi.list_all(0).await.expect("list"), vec![volume]);
    csi.create(request(&ganesha, "during-outage", &[]))
        .await
        .expect("the retried call works");
    assert!(ganesha.export_dir().join("during-outage").is_dir());

    // The controller restarting must not forget the export or its volumes.
    controller.kill_hard().await;
    controller.relaunch().await;
    let csi = &controller.csi;
    assert_eq!(csi.list_all(0).await.expect("list").len(), 2);
}

#[tokio::test]
async fn ganesha_rejects_an_unexported_share() {
    let ganesha = Ganesha::start().await;
    let controller = Launch::controller().start().await;
    let csi = &controller.csi;
    let bad = nfs_create_request("nope", MIB, ("127.0.0.1", "/not/exported"), &[]);
    let status = csi.create(bad).await.expect_err("refused");
    assert_ne!(status.code(), Code::Ok);
    assert!(
        status.message().contains("/not/exported")
            || status.message().to_lowercase().contains("mount"),
        "{}",
        status.message()
    );
    assert!(
        ganesha
            .export_dir()
            .read_dir()
            .expect("list")
            .next()
            .is_none(),
        "nothing was created"
    );
}
