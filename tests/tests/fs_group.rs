//! fsGroup delegated to the driver (VOLUME_MOUNT_GROUP): the node plugin over its
//! socket gives a published volume's root to the pod's group with g+rwxs, and a
//! non-root user in that group writes there while one outside it does not; existing
//! files keep their owners. NFS subdirectories are checked in a VM (tests/tests/vm.rs).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use csi_proto::v1;
use csi_proto::v1::node_service_capability::{Type as CapType, rpc::Type as Rpc};
use stowage_tests::as_pod_user;
use stowage_tests::csi::{assert_code, create_request, enforced, mount_for_group, publish_request};
use stowage_tests::driver::{Driver, Launch};
use tonic::Code;

const GROUP: &str = "4242";

async fn publish(
    node: &Driver,
    volume: &v1::Volume,
    staging: &str,
    target: &Path,
    group: &str,
) -> Result<(), tonic::Status> {
    node.csi
        .node_publish(v1::NodePublishVolumeRequest {
            staging_target_path: staging.into(),
            volume_capability: Some(mount_for_group(group)),
            ..publish_request(volume, target)
        })
        .await
}

fn target(node: &Driver, pod: &str) -> PathBuf {
    node.kubelet(&format!("pods/{pod}/volumes/v"))
}

/// A volume made by `request`, staged for [`GROUP`] at `plugins/staging/<name>`, and
/// published at pod `plain` without a group, where root wrote the file `existing`: the
/// volume, its staging path and that target.
async fn staged_with_a_root_file(
    node: &Driver,
    request: v1::CreateVolumeRequest,
) -> (v1::Volume, String, PathBuf) {
    let staging = node.kubelet(&format!("plugins/staging/{}", request.name));
    let volume = node.csi.create(request).await.expect("create");
    std::fs::create_dir_all(&staging).expect("mkdir staging");
    node.csi
        .node_stage(&volume, &staging, mount_for_group(GROUP))
        .await
        .expect("stage");
    let staging = staging.display().to_string();
    let plain = target(node, "plain");
    publish(node, &volume, &staging, &plain, "")
        .await
        .expect("publish without a group");
    std::fs::write(plain.join("existing"), "root's").expect("write as root");
    (volume, staging, plain)
}

/// Unpublishes `plain` and publishes the volume again at pod `grouped`, for [`GROUP`]:
/// that target.
async fn published_for_group(
    node: &Driver,
    volume: &v1::Volume,
    staging: &str,
    plain: &Path,
) -> PathBuf {
    node.csi
        .node_unpublish(&volume.volume_id, plain)
        .await
        .expect("unpublish");
    let grouped = target(node, "grouped");
    publish(node, volume, staging, &grouped, GROUP)
        .await
        .expect("publish with volume_mount_group");
    grouped
}

#[tokio::test]
async fn the_node_advertises_volume_mount_group() {
    let node = Launch::node("node-a").kubelet_dir().start().await;
    let capabilities = node
        .csi
        .node
        .clone()
        .node_get_capabilities(v1::NodeGetCapabilitiesRequest {})
        .await
        .expect("NodeGetCapabilities")
        .into_inner()
        .capabilities;
    assert!(capabilities.iter().any(|c| matches!(
        c.r#type,
        Some(CapType::Rpc(ref r)) if r.r#type == Rpc::VolumeMountGroup as i32
    )));
}

#[tokio::test]
async fn an_image_volume_is_writable_by_the_mount_group_only() {
    let node = Launch::node("node-a").kubelet_dir().start().await;
    let request = enforced("img", 32 << 20, "image");
    let (volume, staging, plain) = staged_with_a_root_file(&node, request).await;

    // Without a group the ext4 root is root's 0755: the pod user cannot write.
    let refused = as_pod_user(&plain, "1000", "echo x > mine");
    assert!(!refused.status.success(), "no group, no write");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Permission denied"),
        "EACCES: {}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let grouped = published_for_group(&node, &volume, &staging, &plain).await;
    let member = as_pod_user(
        &grouped,
        GROUP,
        "echo x > mine && mkdir sub && echo y > sub/f",
    );
    assert!(
        member.status.success(),
        "a member writes: {}",
        String::from_utf8_lossy(&member.stderr)
    );
    for made in ["mine", "sub", "sub/f"] {
        let meta = std::fs::metadata(grouped.join(made)).expect("stat");
        assert_eq!(meta.gid(), 4242, "{made} inherits the group (setgid)");
    }
    let existing = std::fs::metadata(grouped.join("existing")).expect("stat");
    assert_eq!(
        (existing.uid(), existing.gid()),
        (0, 0),
        "existing files keep their owner: nothing is walked"
    );
    let root = std::fs::metadata(&grouped).expect("stat");
    assert_eq!((root.gid(), root.mode() & 0o2070), (4242, 0o2070));
    let outsider = as_pod_user(&grouped, "1000", "echo x > theirs");
    assert!(!outsider.status.success(), "outside the group, no write");

    // The same publish again is fine; another group at the same target is not.
    publish(&node, &volume, &staging, &grouped, GROUP)
        .await
        .expect("idempotent");
    assert_code(
        publish(&node, &volume, &staging, &grouped, "5151").await,
        Code::AlreadyExists,
        "volume_mount_group",
    );
    node.csi
        .release(&volume.volume_id, &[&grouped], Path::new(&staging))
        .await;
}

#[tokio::test]
async fn a_directory_volume_gives_new_entries_the_mount_group() {
    let node = Launch::node("node-a").kubelet_dir().start().await;
    let request = create_request("dir", 1 << 20, &[]);
    let (volume, staging, plain) = staged_with_a_root_file(&node, request).await;
    let grouped = published_for_group(&node, &volume, &staging, &plain).await;
    let member = as_pod_user(&grouped, GROUP, "echo x > mine");
    assert!(
        member.status.success(),
        "{}",
        String::from_utf8_lossy(&member.stderr)
    );
    assert_eq!(
        std::fs::metadata(grouped.join("mine")).expect("stat").gid(),
        4242
    );
    let existing = std::fs::metadata(grouped.join("existing")).expect("stat");
    assert_eq!((existing.uid(), existing.gid()), (0, 0));
    node.csi
        .node_unpublish(&volume.volume_id, &grouped)
        .await
        .expect("unpublish");
}
