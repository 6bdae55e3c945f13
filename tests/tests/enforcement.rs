//! Capacity enforcement on a root without project quotas (this machine's kernel has
//! none; the quota kind is tested in a VM, tests/tests/vm.rs): `auto` makes an ext4
//! image that holds the claim's size, `quota` is refused, the default class of
//! `stowage up` enforces (and `stowage mount --fs-group` gives the volume to a group),
//! and GetCapacity counts what enforced volumes may still write.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use csi_proto::v1;
use nix::mount::{MsFlags, mount};
use stowage_tests::csi::{Csi, assert_code, enforced, mount_rwo, publish_staged_request};
use stowage_tests::driver::{Driver, Launch};
use stowage_tests::mounts::MountedDir;
use stowage_tests::up::{apply, claim_manifest, start, stop, stowage, text};
use tonic::Code;

const MIB: i64 = 1 << 20;

/// A node plugin whose local root is a tmpfs of 1 GiB: not XFS, so no project quotas,
/// and free space that only this test changes.
async fn node_on_tmpfs() -> Driver {
    let dir = MountedDir::new();
    let local = dir.path().join("local");
    std::fs::create_dir(&local).expect("mkdir local");
    mount(
        Some("tmpfs"),
        &local,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1g"),
    )
    .expect("mount tmpfs");
    Launch::node("node-a")
        .kubelet_dir()
        .in_mounted(dir)
        .start()
        .await
}

async fn capacity(csi: &Csi) -> i64 {
    csi.controller
        .clone()
        .get_capacity(v1::GetCapacityRequest {
            volume_capabilities: vec![mount_rwo()],
            parameters: [("type".to_string(), "local".to_string())].into(),
            ..Default::default()
        })
        .await
        .expect("GetCapacity")
        .into_inner()
        .available_capacity
}

/// Bytes statvfs reports as the size of the filesystem at `path` (what df shows).
fn df_size(path: &Path) -> i64 {
    let stat = nix::sys::statvfs::statvfs(path).expect("statvfs");
    i64::try_from(stat.blocks() * stat.fragment_size()).expect("size")
}

#[tokio::test]
async fn get_capacity_subtracts_what_an_image_volume_may_still_write() {
    let node = node_on_tmpfs().await;
    let before = capacity(&node.csi).await;
    let volume = node
        .csi
        .create(enforced("reserved", 128 * MIB, "image"))
        .await
        .expect("create an image volume");
    let key = volume.volume_id.split(':').nth(1).expect("key");
    let image = node.dir().join(format!("local/volumes/{key}.img"));
    let allocated =
        i64::try_from(std::fs::metadata(&image).expect("stat").blocks() * 512).expect("blocks");
    assert!(
        allocated < 32 * MIB,
        "the sparse image holds little: {allocated}"
    );
    let after = capacity(&node.csi).await;
    let drop = before - after;
    assert!(
        (drop - 128 * MIB).abs() < MIB,
        "capacity drops by the volume's 128 MiB, not by the {allocated} bytes written: {before} -> {after}"
    );
    node.csi.delete(&volume.volume_id).await.expect("delete");
    let back = capacity(&node.csi).await;
    assert!((back - before).abs() < MIB, "{before} -> {back}");
}

#[tokio::test]
async fn auto_without_project_quotas_makes_an_image_held_to_the_claim() {
    let node = node_on_tmpfs().await;
    assert_code(
        node.csi.create(enforced("quota", 64 * MIB, "quota")).await,
        Code::InvalidArgument,
        "not on XFS",
    );
    let volume = node
        .csi
        .create(enforced("auto", 64 * MIB, "auto"))
        .await
        .expect("create an auto volume");
    assert_eq!(
        volume.volume_context.get("layout").map(String::as_str),
        Some("image")
    );
    let staging = node.kubelet("plugins/staging/auto");
    std::fs::create_dir_all(&staging).expect("mkdir staging");
    node.csi
        .node_stage(&volume, &staging, mount_rwo())
        .await
        .expect("stage");
    let target = node.kubelet("pods/p/volumes/auto");
    node.csi
        .node_publish(publish_staged_request(&volume, &staging, &target))
        .await
        .expect("publish");
    let size = df_size(&target);
    assert!(
        size <= 64 * MIB && size > 48 * MIB,
        "df shows about the claim: {size}"
    );
    let past = std::fs::write(target.join("big"), vec![7u8; 80 << 20]);
    assert_eq!(
        past.expect_err("writing past the claim").raw_os_error(),
        Some(nix::libc::ENOSPC)
    );
    node.csi
        .release(&volume.volume_id, &[&target], &staging)
        .await;
}

#[tokio::test]
async fn the_default_class_of_up_holds_a_claim_to_its_size() {
    let dir = MountedDir::new();
    let (running, data) = start(&dir).await;
    apply(&data, &claim_manifest("sized", "", None));
    let target = dir.path().join("mnt");
    let target_arg = target.to_str().expect("utf8");
    let mounted = stowage(
        &[
            "mount",
            "sized",
            "--target",
            target_arg,
            "--fs-group",
            "4242",
        ],
        &data,
    )
    .await;
    assert!(mounted.status.success(), "{}", text(&mounted));
    let root = std::fs::metadata(&target).expect("stat");
    assert_eq!(
        (root.gid(), root.mode() & 0o2070),
        (4242, 0o2070),
        "--fs-group gives the volume's root to the group, setgid"
    );
    let size = df_size(&target);
    assert!(
        size <= 64 * MIB && size > 48 * MIB,
        "df shows about the claim's 64Mi (an image: the root has no project quotas): {size}"
    );
    let past = std::fs::write(target.join("big"), vec![7u8; 80 << 20]);
    assert_eq!(
        past.expect_err("writing past the claim").raw_os_error(),
        Some(nix::libc::ENOSPC)
    );
    let unmounted = stowage(&["unmount", "--target", target_arg], &data).await;
    assert!(unmounted.status.success(), "{}", text(&unmounted));
    stop(running).await;
}
