//! The node plugin's per-call mount checks do not read the mount table: with the
//! plugin's `/proc/<pid>/mountinfo` covered by an empty file once it has started,
//! publish, the single-writer rule, unpublish and unstage still do the right thing.
//! A plugin that read the table per call would see no mounts at all: its unpublish
//! would leave the mount (and fail to remove the target), its single-writer check
//! would let a second publication through.

use std::path::{Path, PathBuf};

use csi_proto::v1;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use stowage_tests::csi::{
    AccessModeKind as Mode, assert_code, capability, create_request, enforced, publish_request,
};
use stowage_tests::driver::{Driver, Launch};
use stowage_tests::mounts::{loop_devices_under, mounts_under};
use tonic::Code;

const NODE: &str = "node-mt";

/// `/dev/null` bind-mounted over a process's mountinfo: what it reads there is empty.
struct HiddenMountTable {
    path: PathBuf,
}

impl HiddenMountTable {
    fn over(pid: u32) -> Self {
        let path = PathBuf::from(format!("/proc/{pid}/mountinfo"));
        mount(
            Some("/dev/null"),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind /dev/null over the plugin's mountinfo");
        let seen = std::fs::read_to_string(&path).expect("read the covered table");
        assert!(seen.is_empty(), "the plugin's mount table reads empty now");
        Self { path }
    }
}

impl Drop for HiddenMountTable {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
    }
}

/// The node plugin with a kubelet directory; its publishes ask for a single writer.
struct Node(Driver);

impl std::ops::Deref for Node {
    type Target = Driver;
    fn deref(&self) -> &Driver {
        &self.0
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut Driver {
        &mut self.0
    }
}

impl Node {
    async fn start() -> Self {
        Self(Launch::node(NODE).kubelet_dir().start().await)
    }

    fn hide_mount_table(&self) -> HiddenMountTable {
        HiddenMountTable::over(self.pid().expect("pid"))
    }

    async fn publish(
        &self,
        volume: &v1::Volume,
        target: &Path,
        staging: Option<&Path>,
    ) -> Result<(), tonic::Status> {
        let request = v1::NodePublishVolumeRequest {
            staging_target_path: staging.map(|s| s.display().to_string()).unwrap_or_default(),
            volume_capability: Some(single_writer()),
            ..publish_request(volume, target)
        };
        self.csi.node_publish(request).await
    }
}

fn single_writer() -> v1::VolumeCapability {
    capability(false, Mode::SingleNodeSingleWriter)
}

fn is_mounted(path: &Path) -> bool {
    mounts_under(path).iter().any(|m| m == path)
}

/// Mounts a small tmpfs at `path`, as a pod (or anyone) might on top of or inside a volume.
fn mount_tmpfs(path: &Path) {
    mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m"),
    )
    .expect("tmpfs");
}

#[tokio::test]
async fn publish_and_unpublish_do_not_need_the_mount_table() {
    let node = Node::start().await;
    let dir_volume = node
        .csi
        .create(create_request("mt-dir", 1 << 20, &[]))
        .await
        .expect("create a directory volume");
    let image = node
        .csi
        .create(enforced("mt-img", 16 << 20, "image"))
        .await
        .expect("create an image volume");
    let _hidden = node.hide_mount_table();

    let staging = node.kubelet("plugins/staging/mt-img");
    std::fs::create_dir_all(&staging).expect("staging dir");
    node.csi
        .node_stage(&image, &staging, single_writer())
        .await
        .expect("stage the image");
    node.csi
        .node_stage(&image, &staging, single_writer())
        .await
        .expect("stage the image twice");
    let (first, second) = (node.kubelet("pods/a/dir"), node.kubelet("pods/b/dir"));
    node.publish(&dir_volume, &first, None)
        .await
        .expect("publish the directory volume");
    node.publish(&dir_volume, &first, None)
        .await
        .expect("publish it again at the same target");
    assert_code(
        node.publish(&dir_volume, &second, None).await,
        Code::FailedPrecondition,
        "already published",
    );
    let image_target = node.kubelet("pods/a/img");
    node.publish(&image, &image_target, Some(&staging))
        .await
        .expect("publish the image volume");
    assert_code(
        node.publish(&image, &node.kubelet("pods/b/img"), Some(&staging))
            .await,
        Code::FailedPrecondition,
        "already published",
    );

    // Someone mounts on top of the publication: unpublish takes the whole stack.
    mount_tmpfs(&first);
    node.csi
        .node_unpublish(&dir_volume.volume_id, &first)
        .await
        .expect("unpublish the stacked target");
    assert!(!first.exists(), "the target is removed");
    assert!(!is_mounted(&first));
    node.publish(&dir_volume, &second, None)
        .await
        .expect("the only publication is gone: the second target is allowed now");
    node.csi
        .node_unpublish(&dir_volume.volume_id, &second)
        .await
        .expect("unpublish the second");

    node.csi
        .node_unpublish(&image.volume_id, &image_target)
        .await
        .expect("unpublish the image");
    node.csi
        .node_unstage(&image.volume_id, &staging)
        .await
        .expect("unstage the image");
    node.csi
        .node_unstage(&image.volume_id, &staging)
        .await
        .expect("unstage twice");
    assert!(
        mounts_under(node.dir()).is_empty(),
        "every mount is gone: {:?}",
        mounts_under(node.dir())
    );
    assert!(
        loop_devices_under(node.dir()).is_empty(),
        "the image's loop device went with its mount"
    );
}

#[tokio::test]
async fn a_restarted_plugin_knows_what_an_earlier_run_published() {
    let mut node = Node::start().await;
    let volume = node
        .csi
        .create(create_request("mt-restart", 1 << 20, &[]))
        .await
        .expect("create");
    let (first, second) = (node.kubelet("pods/a/vol"), node.kubelet("pods/b/vol"));
    node.publish(&volume, &first, None).await.expect("publish");
    node.restart_hard().await;
    let _hidden = node.hide_mount_table();

    assert_code(
        node.publish(&volume, &second, None).await,
        Code::FailedPrecondition,
        "already published",
    );
    assert!(!second.exists(), "the refused target was not left behind");
    node.publish(&volume, &first, None)
        .await
        .expect("the earlier publication is this one: publishing it again is fine");
    node.csi
        .node_unpublish(&volume.volume_id, &first)
        .await
        .expect("unpublish what the earlier run published");
    assert!(!is_mounted(&first));
    node.publish(&volume, &second, None)
        .await
        .expect("publish at the second target");
    assert!(is_mounted(&second));
    node.csi
        .node_unpublish(&volume.volume_id, &second)
        .await
        .expect("unpublish");
    assert!(mounts_under(node.dir()).is_empty());
}

/// The one case that reads the table: a mount inside the volume (a pod's own) keeps
/// the unmount busy, and the plugin looks up what is below to unmount it first.
#[tokio::test]
async fn a_mount_inside_a_publication_is_unmounted_with_it() {
    let node = Node::start().await;
    let volume = node
        .csi
        .create(create_request("mt-nested", 1 << 20, &[]))
        .await
        .expect("create");
    let target = node.kubelet("pods/a/vol");
    node.publish(&volume, &target, None).await.expect("publish");
    let inner = target.join("inner");
    std::fs::create_dir(&inner).expect("a directory in the volume");
    mount_tmpfs(&inner);
    node.csi
        .node_unpublish(&volume.volume_id, &target)
        .await
        .expect("unpublish");
    assert!(mounts_under(node.dir()).is_empty());
    assert!(!target.exists());
}
