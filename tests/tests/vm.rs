//! What needs a kernel this machine's lacks (an NFS client, online growth of a mounted
//! filesystem, a second node), in small VMs (`stowage_tests::vm`): each test's host
//! half sets up servers in a sandbox and boots guests that run its guest half.

use std::path::{Path, PathBuf};
use std::time::Duration;

use csi_proto::v1;
use stowage_tests::api::csi_volume;
use stowage_tests::csi::{
    create_request, enforced, mount_for_group, mount_rwo, publish_request, publish_staged_request,
};
use stowage_tests::driver::{Driver, Launch};
use stowage_tests::mounts::mounts_under;
use stowage_tests::nfs::Ganesha;
use stowage_tests::vm::{self, Guest, HOST_FROM_GUEST, Sandbox};
use stowage_tests::{as_pod_user, files_under};

const BOOT_AND_RUN: Duration = Duration::from_secs(600);

/// A node plugin in the guest, with its directories in the guest's memory.
/// The node plugin in a guest, with a kubelet directory.
struct GuestNode(Driver);

impl std::ops::Deref for GuestNode {
    type Target = Driver;
    fn deref(&self) -> &Driver {
        &self.0
    }
}

impl GuestNode {
    async fn start(node_id: &str) -> Self {
        Self::start_on(node_id, None).await
    }

    /// A node plugin whose local root is `local_root` (default: a directory of its own).
    async fn start_on(node_id: &str, local_root: Option<&Path>) -> Self {
        let launch = Launch::node(node_id).kubelet_dir();
        let launch = match local_root {
            Some(root) => launch.local_root_at(root),
            None => launch,
        };
        Self(launch.start().await)
    }

    fn kubelet(&self) -> PathBuf {
        self.0.kubelet("")
    }

    fn staging(&self, name: &str) -> PathBuf {
        self.kubelet().join("plugins/staging").join(name)
    }

    fn target(&self, pod: &str) -> PathBuf {
        self.kubelet().join("pods").join(pod).join("mount")
    }

    async fn stage(&self, volume: &v1::Volume, staging: &Path) {
        std::fs::create_dir_all(staging).expect("mkdir staging");
        self.csi
            .node_stage(volume, staging, mount_rwo())
            .await
            .unwrap_or_else(|e| panic!("stage {}: {e}", volume.volume_id));
    }

    async fn publish(&self, volume: &v1::Volume, staging: &Path, target: &Path) {
        self.publish_for(volume, staging, target, "").await;
    }

    /// Publishes for a pod whose fsGroup is `group` (none when empty).
    async fn publish_for(&self, volume: &v1::Volume, staging: &Path, target: &Path, group: &str) {
        let request = v1::NodePublishVolumeRequest {
            volume_capability: Some(mount_for_group(group)),
            ..publish_staged_request(volume, staging, target)
        };
        self.csi
            .node_publish(request)
            .await
            .unwrap_or_else(|e| panic!("publish {}: {e}", volume.volume_id));
    }
}

/// Mounts of type `fs_type` at or below `dir`.
fn mounts_of_type(dir: &Path, fs_type: &str) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = PathBuf::from(left.split(' ').nth(4)?);
            let kind = right.split(' ').next()?;
            (kind == fs_type && point.starts_with(dir)).then_some(point)
        })
        .collect()
}

#[test]
fn nfs_volumes_stage_once_per_node_and_bind_per_pod() {
    vm::two_halves(
        async || {
            let work = tempfile::tempdir().expect("tempdir");
            let sandbox = Sandbox::new();
            let ganesha = Ganesha::start_in(sandbox.place(), work.path()).await;
            std::fs::create_dir(ganesha.export_dir().join("static")).expect("mkdir static");
            Guest::new(
                "node-a",
                "nfs_volumes_stage_once_per_node_and_bind_per_pod",
                work.path(),
            )
            .param("SHARE", ganesha.share())
            .boot(&sandbox)
            .passed(BOOT_AND_RUN)
            .await;
            let export = ganesha.export_dir();
            assert_eq!(
                std::fs::read(export.join("static/from-pod-1")).expect("the static volume's file"),
                b"pod 1",
                "written in the guest through the kernel's NFS client, on the server"
            );
        },
        async || {
            let share = vm::guest_param("SHARE");
            let node = GuestNode::start("node-a").await;
            let server = HOST_FROM_GUEST;

            // A dynamic volume: its own subdirectory, created through the userspace client.
            let writable = node
                .csi
                .create(create_request(
                    "pvc-open",
                    1 << 20,
                    &[("type", "nfs"), ("server", server), ("share", &share)],
                ))
                .await
                .expect("create an NFS volume");
            let closed = node
                .csi
                .create(create_request(
                    "pvc-closed",
                    1 << 20,
                    &[
                        ("type", "nfs"),
                        ("server", server),
                        ("share", &share),
                        ("mountPermissions", "0755"),
                    ],
                ))
                .await
                .expect("create an NFS volume with mountPermissions 0755");
            // A static volume: server and share only, as an administrator writes it.
            let static_volume = v1::Volume {
                volume_id: "static-nfs".into(),
                volume_context: [
                    ("type".to_string(), "nfs".to_string()),
                    ("server".to_string(), server.to_string()),
                    ("share".to_string(), format!("{share}/static")),
                ]
                .into(),
                ..Default::default()
            };

            for (name, volume) in [
                ("static", &static_volume),
                ("open", &writable),
                ("closed", &closed),
            ] {
                let staging = node.staging(name);
                node.stage(volume, &staging).await;
                node.stage(volume, &staging).await;
                let (one, two) = (
                    node.target(&format!("{name}-1")),
                    node.target(&format!("{name}-2")),
                );
                node.publish(volume, &staging, &one).await;
                node.publish(volume, &staging, &two).await;
                assert_eq!(
                    mounts_of_type(node.dir(), "nfs").len(),
                    3,
                    "{name}: one kernel NFS mount at stage, one bind per pod: {:?}",
                    mounts_under(node.dir())
                );
                std::fs::write(one.join("from-pod-1"), "pod 1").expect("write through pod 1");
                assert_eq!(
                    std::fs::read(two.join("from-pod-1")).expect("read through pod 2"),
                    b"pod 1",
                    "{name}: both pods see one volume"
                );
                let user = as_pod_user(&one, "1000", "echo user > by-user");
                match name {
                    "open" => assert!(
                        user.status.success(),
                        "mountPermissions 0777 (the default): a non-root pod user writes: {}",
                        String::from_utf8_lossy(&user.stderr)
                    ),
                    "closed" => assert!(
                        !user.status.success(),
                        "mountPermissions 0755: a non-root pod user cannot write"
                    ),
                    _ => {}
                }
                let grouped = node.target(&format!("{name}-fsgroup"));
                if name == "closed" {
                    // A pod with fsGroup 4242: the subdirectory's root goes to the group
                    // (g+rwxs) over the kernel's NFS client; the root's file keeps its owner.
                    node.publish_for(volume, &staging, &grouped, "4242").await;
                    let member = as_pod_user(&grouped, "4242", "echo member > by-member");
                    assert!(
                        member.status.success(),
                        "a member of the volume_mount_group writes: {}",
                        String::from_utf8_lossy(&member.stderr)
                    );
                    use std::os::unix::fs::MetadataExt;
                    let made = std::fs::metadata(grouped.join("by-member")).expect("stat");
                    assert_eq!(made.gid(), 4242, "setgid: new files get the group");
                    let kept = std::fs::metadata(grouped.join("from-pod-1")).expect("stat");
                    assert_eq!(
                        (kept.uid(), kept.gid()),
                        (0, 0),
                        "existing files keep owners"
                    );
                    let outsider = as_pod_user(&grouped, "1000", "echo outsider > by-outsider");
                    assert!(
                        !outsider.status.success(),
                        "without the group the user still cannot write"
                    );
                }
                let targets = [one.as_path(), &two, &grouped];
                node.csi
                    .release_twice(&volume.volume_id, &targets, &staging)
                    .await;
                assert!(
                    mounts_under(node.dir()).is_empty(),
                    "{name}: nothing left mounted: {:?}",
                    mounts_under(node.dir())
                );
            }
            let subdir = |v: &v1::Volume| {
                Path::new(&share).join(v.volume_context.get("subDir").expect("subDir"))
            };
            assert!(subdir(&writable).join("by-user").exists());
            assert!(!subdir(&closed).join("by-user").exists());
        },
    );
}

/// Bytes `df` reports as the size of the filesystem at `path`.
fn df_size(path: &Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=size", "-B1"])
        .arg(path)
        .output()
        .expect("df");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("df said {text:?}"))
}

#[test]
fn image_volume_grows_online_while_in_use() {
    vm::two_halves(
        async || {
            let work = tempfile::tempdir().expect("tempdir");
            let sandbox = Sandbox::new();
            Guest::new(
                "node-a",
                "image_volume_grows_online_while_in_use",
                work.path(),
            )
            .boot(&sandbox)
            .passed(BOOT_AND_RUN)
            .await;
        },
        async || {
            use std::io::Write;
            let node = GuestNode::start("node-a").await;
            let volume = node
                .csi
                .create(enforced("pvc-img", 32 << 20, "image"))
                .await
                .expect("create an image volume");
            let staging = node.staging("img");
            let target = node.target("img");
            node.stage(&volume, &staging).await;
            node.publish(&volume, &staging, &target).await;
            let before = df_size(&target);
            assert!(before < 32 << 20, "df shows the claim's size: {before}");
            let mut open = std::fs::File::create(target.join("in-use")).expect("open a file");
            open.write_all(b"before").expect("write");
            let past = std::fs::write(target.join("big"), vec![7u8; 40 << 20]);
            assert_eq!(
                past.expect_err("writing past the capacity").raw_os_error(),
                Some(nix::libc::ENOSPC)
            );
            std::fs::remove_file(target.join("big")).expect("rm");

            let id = &volume.volume_id;
            grow_online(&node, id, &target, 96 << 20).await;
            let after = df_size(&target);
            assert!(
                after > before + (48 << 20),
                "df shows the new size while the volume is mounted: {before} -> {after}"
            );
            open.write_all(b" and after")
                .expect("the open file still works");
            drop(open);
            assert_eq!(
                std::fs::read(target.join("in-use")).expect("read"),
                b"before and after"
            );
            std::fs::write(target.join("big"), vec![7u8; 40 << 20]).expect("now it fits");
            node.csi.release(id, &[&target], &staging).await;

            // Past the descriptor blocks mkfs reserved (64x the size in 4 KiB blocks:
            // 64 MiB for a 4 MiB image, which has 1 KiB blocks): still online.
            let small = node
                .csi
                .create(enforced("pvc-small", 4 << 20, "image"))
                .await
                .expect("create a small image volume");
            let (staging, target) = (node.staging("small"), node.target("small"));
            node.stage(&small, &staging).await;
            node.publish(&small, &staging, &target).await;
            let id = &small.volume_id;
            grow_online(&node, id, &target, 160 << 20).await;
            let after = df_size(&target);
            assert!(after > 140 << 20, "df shows the new size: {after}");
            std::fs::write(target.join("big"), vec![7u8; 100 << 20]).expect("it fits");
            node.csi.release(id, &[&target], &staging).await;
            assert!(mounts_under(node.dir()).is_empty());
        },
    );
}

/// Expands an image volume published at `target` to `bytes`: the controller's half,
/// which asks for the node's, then the node's on the mounted filesystem.
async fn grow_online(node: &GuestNode, id: &str, target: &Path, bytes: i64) {
    let expanded = node.csi.controller_expand(id, bytes).await;
    assert!(expanded.expect("controller expand").node_expansion_required);
    let grown = node.csi.node_expand(id, target, bytes).await;
    assert_eq!(grown.expect("node expand, online").capacity_bytes, bytes);
}

/// What GetCapacity answers for a local volume on this node.
async fn local_capacity(node: &GuestNode) -> i64 {
    node.csi
        .controller
        .clone()
        .get_capacity(v1::GetCapacityRequest {
            volume_capabilities: vec![mount_rwo()],
            ..Default::default()
        })
        .await
        .expect("GetCapacity")
        .into_inner()
        .available_capacity
}

/// Runs a program in the guest and insists that it succeeds.
fn run(program: &str, args: &[&std::ffi::OsStr]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn quota_volumes_hold_their_size_grow_online_and_release_their_limit() {
    const TEST: &str = "quota_volumes_hold_their_size_grow_online_and_release_their_limit";
    vm::two_halves(
        async || {
            let work = tempfile::tempdir().expect("tempdir");
            let sandbox = Sandbox::new();
            Guest::new("node-a", TEST, work.path())
                .memory_mib(1536)
                .boot(&sandbox)
                .passed(BOOT_AND_RUN)
                .await;
        },
        async || {
            // The local root: an XFS of 512 MiB mounted with project quotas enforced.
            let scratch = tempfile::tempdir().expect("tempdir");
            let image = scratch.path().join("xfs.img");
            std::fs::File::create(&image)
                .and_then(|f| f.set_len(512 << 20))
                .expect("image file");
            run("mkfs.xfs", &["-q".as_ref(), image.as_os_str()]);
            let root = scratch.path().join("xfs");
            std::fs::create_dir(&root).expect("mkdir");
            run(
                "mount",
                &[
                    "-o".as_ref(),
                    "loop,prjquota".as_ref(),
                    image.as_os_str(),
                    root.as_os_str(),
                ],
            );
            let node = GuestNode::start_on("node-a", Some(&root)).await;
            let before = local_capacity(&node).await;
            let volume = node
                .csi
                .create(enforced("pvc-quota", 64 << 20, "auto"))
                .await
                .expect("create an auto volume");
            let promised = before - local_capacity(&node).await;
            assert!(
                (promised - (64 << 20)).abs() < 1 << 20,
                "GetCapacity counts the empty quota volume's 64 MiB as taken: {promised}"
            );
            assert_eq!(
                volume.volume_context.get("layout").map(String::as_str),
                Some("quota"),
                "auto picks quota on an XFS root with prjquota"
            );
            let staging = node.staging("quota");
            let target = node.target("quota");
            node.stage(&volume, &staging).await;
            node.publish(&volume, &staging, &target).await;
            assert_eq!(
                df_size(&target),
                64 << 20,
                "df in the volume shows the claim"
            );
            let past = std::fs::write(target.join("big"), vec![7u8; 80 << 20]);
            let errno = past.expect_err("writing past the limit").raw_os_error();
            assert!(
                [Some(nix::libc::EDQUOT), Some(nix::libc::ENOSPC)].contains(&errno),
                "EDQUOT or ENOSPC, got {errno:?}"
            );
            std::fs::remove_file(target.join("big")).expect("rm");

            let id = &volume.volume_id;
            let expanded = node.csi.controller_expand(id, 128 << 20).await;
            let expanded = expanded.expect("controller expand");
            assert_eq!(expanded.capacity_bytes, 128 << 20);
            assert!(
                !expanded.node_expansion_required,
                "the limit rises online, in the controller"
            );
            let grown = node.csi.node_expand(id, &target, 128 << 20).await;
            grown.expect("node expand is a no-op that succeeds");
            assert_eq!(
                df_size(&target),
                128 << 20,
                "df shows the new size, mounted"
            );
            std::fs::write(target.join("big"), vec![7u8; 80 << 20]).expect("now it fits");

            // A second pod with fsGroup 4242: the quota directory goes to the group,
            // what its members create gets it, what was there keeps its owner.
            let grouped = node.target("quota-fsgroup");
            node.publish_for(&volume, &staging, &grouped, "4242").await;
            let member = as_pod_user(&grouped, "4242", "echo member > by-member");
            assert!(
                member.status.success(),
                "{}",
                String::from_utf8_lossy(&member.stderr)
            );
            use std::os::unix::fs::MetadataExt;
            assert_eq!(
                std::fs::metadata(grouped.join("by-member"))
                    .expect("stat")
                    .gid(),
                4242
            );
            assert_eq!(
                std::fs::metadata(grouped.join("big")).expect("stat").gid(),
                0
            );
            node.csi
                .node_unpublish(&volume.volume_id, &grouped)
                .await
                .expect("unpublish the second pod");

            // The project id, from the volume's record, before the volume goes.
            let key = volume
                .volume_id
                .split(':')
                .nth(1)
                .expect("local:<key>:<node>");
            let log = std::fs::read_to_string(root.join("records.log")).expect("record log");
            let record = log
                .lines()
                .rev()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .find(|change| change["op"] == "putVolume" && change["key"] == key)
                .expect("the volume's record in the log");
            let project = record["record"]["layout"]["project"]
                .as_u64()
                .expect("project id");
            node.csi.release(id, &[&target], &staging).await;
            node.csi.delete(id).await.expect("delete");
            assert!(!root.join("volumes").join(key).exists(), "the data is gone");
            // The limit is gone: a directory given the same project reports the whole
            // filesystem, not 128 MiB.
            let probe = root.join("probe");
            std::fs::create_dir(&probe).expect("mkdir");
            run(
                "xfs_io",
                &[
                    "-c".as_ref(),
                    format!("chproj {project}").as_ref(),
                    "-c".as_ref(),
                    "chattr +P".as_ref(),
                    probe.as_os_str(),
                ],
            );
            let whole = df_size(&probe);
            assert!(
                whole > 256 << 20,
                "project {project} has no limit after delete: df says {whole}"
            );
            run("umount", &["-l".as_ref(), root.as_os_str()]);
        },
    );
}

const NFS_CLAIM: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: shared}
spec:
  storageClassName: stowage-nfs
  accessModes: [ReadWriteMany]
  resources: {requests: {storage: 64Mi}}
"#;

/// A user's commands against a `stowage up` whose state is in `data`.
struct UpUser<'a> {
    data: &'a Path,
}

impl UpUser<'_> {
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        stowage_tests::up::kubectl(self.data, args, stdin)
    }

    fn stowage(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(stowage_tests::process::stowage_bin())
            .args(args)
            .arg("--data")
            .arg(self.data)
            .output()
            .expect("stowage")
    }
}

#[test]
fn up_serves_an_nfs_claim_from_the_export_and_deletes_its_subdirectory() {
    const TEST: &str = "up_serves_an_nfs_claim_from_the_export_and_deletes_its_subdirectory";
    vm::two_halves(
        async || {
            let work = tempfile::tempdir().expect("tempdir");
            let sandbox = Sandbox::new();
            let ganesha = Ganesha::start_in(sandbox.place(), work.path()).await;
            Guest::new("node-a", TEST, work.path())
                .param("SHARE", ganesha.share())
                .memory_mib(1536)
                .boot(&sandbox)
                .passed(BOOT_AND_RUN)
                .await;
            let left: Vec<_> = std::fs::read_dir(ganesha.export_dir())
                .expect("read the export")
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .filter(|n| n != ".stowage")
                .collect();
            assert!(
                left.is_empty(),
                "the claim's subdirectory is gone: {left:?}"
            );
        },
        async || {
            let share = vm::guest_param("SHARE");
            let dir = tempfile::tempdir().expect("tempdir");
            let data = dir.path().join("data");
            let user = UpUser { data: &data };
            let mut up = tokio::process::Command::new(stowage_tests::process::stowage_bin())
                .args(["up", "--node-name", "node-a", "--listen", "127.0.0.1:6443"])
                .args(["--nfs-server", HOST_FROM_GUEST, "--nfs-share", &share])
                .arg("--data")
                .arg(&data)
                .env("STOWAGE_LOG", "warn")
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn stowage up");
            stowage_tests::wait_for("up to serve", Duration::from_secs(180), async || {
                let classes = user.kubectl(&["get", "storageclass", "-o", "name"], None);
                let ready = String::from_utf8_lossy(&classes.stdout).contains("stowage-nfs")
                    && user.stowage(&["status"]).status.success();
                ready.then_some(())
            })
            .await;
            let applied = user.kubectl(&["apply", "-f", "-"], Some(NFS_CLAIM));
            assert!(
                applied.status.success(),
                "{}",
                stowage_tests::up::text(&applied)
            );
            let target = dir.path().join("mnt");
            let target_arg = target.display().to_string();
            let mounted = user.stowage(&[
                "mount",
                "shared",
                "--namespace",
                "default",
                "--target",
                &target_arg,
                "--timeout-seconds",
                "180",
            ]);
            assert!(
                mounted.status.success(),
                "{}",
                stowage_tests::up::text(&mounted)
            );
            assert_eq!(
                mounts_of_type(dir.path(), "nfs").len(),
                3,
                "staged by the kernel's NFS client, published, bound at the target: {:?}",
                mounts_under(dir.path())
            );
            std::fs::write(target.join("hello.txt"), "over NFS").expect("write into the claim");
            let on_export = Path::new(&share).join("default-shared/hello.txt");
            assert_eq!(
                std::fs::read_to_string(&on_export).expect("the file on the export"),
                "over NFS"
            );

            let unmounted = user.stowage(&["unmount", "--target", &target_arg]);
            assert!(
                unmounted.status.success(),
                "{}",
                stowage_tests::up::text(&unmounted)
            );
            assert!(
                mounts_under(dir.path()).is_empty(),
                "nothing left mounted: {:?}",
                mounts_under(dir.path())
            );
            let deleted = user.kubectl(&["delete", "pvc", "shared"], None);
            assert!(
                deleted.status.success(),
                "{}",
                stowage_tests::up::text(&deleted)
            );
            stowage_tests::wait_for(
                "the volume and its subdirectory to go (onDelete: delete)",
                Duration::from_secs(120),
                async || {
                    let pvs = user.kubectl(&["get", "pv", "-o", "name"], None);
                    let gone = !String::from_utf8_lossy(&pvs.stdout).contains("persistentvolume/")
                        && !on_export.parent().is_some_and(Path::exists);
                    gone.then_some(())
                },
            )
            .await;
            let pid =
                nix::unistd::Pid::from_raw(i32::try_from(up.id().expect("running")).expect("pid"));
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
            let status = tokio::time::timeout(Duration::from_secs(60), up.wait())
                .await
                .expect("up stops")
                .expect("wait");
            assert!(status.success(), "up exits cleanly on Ctrl-C: {status}");
        },
    );
}

async fn stats(
    node: &GuestNode,
    volume_id: &str,
    target: &Path,
    staging: &Path,
) -> v1::VolumeCondition {
    node.csi
        .node
        .clone()
        .node_get_volume_stats(v1::NodeGetVolumeStatsRequest {
            volume_id: volume_id.into(),
            volume_path: target.display().to_string(),
            staging_target_path: staging.display().to_string(),
        })
        .await
        .expect("NodeGetVolumeStats")
        .into_inner()
        .volume_condition
        .expect("a volume condition (VOLUME_CONDITION)")
}

#[test]
fn a_replaced_export_directory_is_reported_and_mounted_again() {
    const TEST: &str = "a_replaced_export_directory_is_reported_and_mounted_again";
    vm::two_halves(
        async || {
            let work = tempfile::tempdir().expect("tempdir");
            let sandbox = Sandbox::new();
            let mut ganesha = Ganesha::start_in(sandbox.place(), work.path()).await;
            std::fs::create_dir(ganesha.export_dir().join("static")).expect("mkdir static");
            let mut replaced = Vec::new();
            let mut guest = Guest::new("node-a", TEST, work.path())
                .param("SHARE", ganesha.share())
                .boot(&sandbox);
            // The server forgets its cached handles, as after a restart or eviction:
            // only then does a replaced directory's old handle answer STALE.
            for step in ["replace-dynamic", "replace-static"] {
                let Some(dir) = guest.asked(step).await else {
                    break;
                };
                std::fs::remove_dir_all(&dir).expect("remove on the server");
                std::fs::create_dir(&dir).expect("recreate on the server");
                std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                    .expect("chmod");
                ganesha.restart().await;
                vm::host_did(guest.dir(), step);
                replaced.push(PathBuf::from(dir));
            }
            guest.passed(BOOT_AND_RUN).await;
            assert_eq!(replaced.len(), 2);
            for dir in replaced {
                assert_eq!(
                    std::fs::read_to_string(dir.join("after")).expect("written after recovery"),
                    "new",
                    "the pod's write after recovery reached the new directory {}",
                    dir.display()
                );
            }
        },
        async || {
            let share = PathBuf::from(vm::guest_param("SHARE"));
            let node = GuestNode::start("node-a").await;
            let server = HOST_FROM_GUEST;
            let share_arg = share.display().to_string();
            let dynamic = node
                .csi
                .create(create_request(
                    "pvc-replaced",
                    1 << 20,
                    &[("type", "nfs"), ("server", server), ("share", &share_arg)],
                ))
                .await
                .expect("create");
            let static_volume = v1::Volume {
                volume_id: "static-nfs".into(),
                volume_context: [
                    ("type".to_string(), "nfs".to_string()),
                    ("server".to_string(), server.to_string()),
                    (
                        "share".to_string(),
                        share.join("static").display().to_string(),
                    ),
                ]
                .into(),
                ..Default::default()
            };
            let dynamic_dir = share.join(dynamic.volume_context.get("subDir").expect("subDir"));
            // The dynamic volume's own subdirectory goes stale under a healthy export
            // mount; the static volume's share itself goes stale.
            for (name, volume, on_server) in [
                ("dynamic", &dynamic, dynamic_dir),
                ("static", &static_volume, share.join("static")),
            ] {
                let staging = node.staging(name);
                let target = node.target(name);
                node.stage(volume, &staging).await;
                node.publish(volume, &staging, &target).await;
                std::fs::write(target.join("before"), "old").expect("write");
                let healthy = stats(&node, &volume.volume_id, &target, &staging).await;
                assert!(!healthy.abnormal, "{name}: {}", healthy.message);

                // An administrator replaces the directory on the server.
                vm::ask_host_with(&format!("replace-{name}"), &on_server.display().to_string())
                    .await;
                let stale = std::fs::write(target.join("after"), "new");
                // The kernel says ESTALE, or ENOENT once it has seen the directory go.
                let errno = stale.expect_err("the old handle is stale").raw_os_error();
                assert!(
                    matches!(errno, Some(nix::libc::ESTALE | nix::libc::ENOENT)),
                    "{name}: {errno:?}"
                );

                let reported = stats(&node, &volume.volume_id, &target, &staging).await;
                assert!(reported.abnormal, "{name}: reported abnormal");
                assert!(
                    reported.message.contains("stale NFS file handle"),
                    "{name}: {}",
                    reported.message
                );
                std::fs::write(target.join("after"), "new")
                    .unwrap_or_else(|e| panic!("{name}: the pod's next open works: {e}"));
                let again = stats(&node, &volume.volume_id, &target, &staging).await;
                assert!(!again.abnormal, "{name}: healthy again: {}", again.message);
                // The node knows the new mounts: a repeated stage and publish are no-ops.
                node.stage(volume, &staging).await;
                node.publish(volume, &staging, &target).await;

                node.csi
                    .release(&volume.volume_id, &[&target], &staging)
                    .await;
                assert!(
                    mounts_under(node.dir()).is_empty(),
                    "{name}: nothing left mounted: {:?}",
                    mounts_under(node.dir())
                );
            }
        },
    );
}

mod two_nodes {
    //! Two guests, each a node (its plugin and node-mode provisioner), against an API
    //! server, an NFS controller and a central provisioner on the host side.

    use super::*;
    use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
    use k8s_openapi::api::storage::v1::StorageClass;
    use kube::api::{Api, PostParams};

    const TEST: &str = "two_nodes::share_an_nfs_claim_and_keep_their_local_volumes";
    const API_PORT: u16 = 6443;

    fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).expect("a valid object")
    }

    async fn create<T>(api: &Api<T>, value: serde_json::Value)
    where
        T: kube::Resource
            + Clone
            + std::fmt::Debug
            + serde::Serialize
            + serde::de::DeserializeOwned,
    {
        api.create(&PostParams::default(), &object(value))
            .await
            .expect("create an object");
    }

    fn claim(name: &str, class: &str, mode: &str, node: Option<&str>) -> serde_json::Value {
        let annotations = match node {
            Some(node) => serde_json::json!({"volume.kubernetes.io/selected-node": node}),
            None => serde_json::json!({}),
        };
        serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {
                "accessModes": [mode],
                "storageClassName": class,
                "resources": {"requests": {"storage": "64Mi"}},
            }
        })
    }

    #[test]
    fn share_an_nfs_claim_and_keep_their_local_volumes() {
        vm::two_halves(host, guest);
    }

    async fn host() {
        let work = tempfile::tempdir().expect("tempdir");
        let sandbox = Sandbox::new();
        // Servers here are reached at the address guests use for them.
        sandbox.add_address(HOST_FROM_GUEST);
        sandbox.enter_network();
        let ganesha = Ganesha::start_in(sandbox.place(), work.path()).await;
        let api_dir = work.path().join("api");
        let mut api = tokio::process::Command::new(stowage_tests::process::stowage_bin())
            .args([
                "apiserver",
                "--listen",
                &format!("{HOST_FROM_GUEST}:{API_PORT}"),
            ])
            .arg("--data")
            .arg(&api_dir)
            .env("STOWAGE_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("spawn stowage apiserver");
        let kubeconfig = api_dir.join("kubeconfig");
        let client =
            stowage_tests::wait_for("the API server", Duration::from_secs(30), async || {
                if let Ok(Some(status)) = api.try_wait() {
                    panic!("stowage apiserver exited: {status}");
                }
                if !kubeconfig.exists() {
                    return None;
                }
                let client = stowage_tests::api::client_from(&kubeconfig).await;
                client.apiserver_version().await.ok()?;
                Some(client)
            })
            .await;
        vm::forward_loopback(HOST_FROM_GUEST, API_PORT).await;
        let controller = Launch::controller().in_dir(work.path()).start().await;
        let _central = tokio::process::Command::new(stowage_tests::process::stowage_bin())
            .arg("provisioner")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--csi-endpoint")
            .arg(format!("unix://{}", controller.socket().display()))
            .env("STOWAGE_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the central provisioner");

        let nodes: Api<Node> = Api::all(client.clone());
        for node in ["node-a", "node-b"] {
            create(
                &nodes,
                serde_json::json!({"metadata": {"name": node, "labels": {
                    "kubernetes.io/hostname": node,
                    "topology.stowage.io/node": node,
                }}}),
            )
            .await;
        }
        let classes: Api<StorageClass> = Api::all(client.clone());
        create(
            &classes,
            serde_json::json!({
                "metadata": {"name": "nfs"},
                "provisioner": "csi.stowage.io",
                "volumeBindingMode": "Immediate",
                "reclaimPolicy": "Delete",
                "parameters": {"type": "nfs", "server": HOST_FROM_GUEST, "share": ganesha.share()},
            }),
        )
        .await;
        create(
            &classes,
            serde_json::json!({
                "metadata": {"name": "local"},
                "provisioner": "csi.stowage.io",
                "volumeBindingMode": "WaitForFirstConsumer",
                "reclaimPolicy": "Delete",
                "parameters": {"type": "local"},
            }),
        )
        .await;
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
        create(&claims, claim("shared", "nfs", "ReadWriteMany", None)).await;
        create(
            &claims,
            claim("on-node-a", "local", "ReadWriteOnce", Some("node-a")),
        )
        .await;
        create(
            &claims,
            claim("on-node-b", "local", "ReadWriteOnce", Some("node-b")),
        )
        .await;

        let guests: Vec<_> = ["node-a", "node-b"]
            .into_iter()
            .map(|name| {
                Guest::new(name, TEST, work.path())
                    .param("KUBECONFIG", kubeconfig.display().to_string())
                    .boot(&sandbox)
            })
            .collect();
        vm::all_passed(guests, BOOT_AND_RUN).await;
        let written: Vec<_> = files_under(&ganesha.export_dir())
            .into_iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|n| n.starts_with("from-"))
            .collect();
        assert!(
            written.contains(&"from-node-a".to_string())
                && written.contains(&"from-node-b".to_string()),
            "both nodes wrote to the one export: {written:?}"
        );
        drop(api);
    }

    /// The PV bound to claim `name`, once it is Bound.
    async fn bound_volume(client: &kube::Client, name: &str) -> PersistentVolume {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
        let volumes: Api<PersistentVolume> = Api::all(client.clone());
        let volume_name = stowage_tests::wait_for(
            &format!("claim {name} to be bound"),
            Duration::from_secs(400),
            async || {
                let claim = claims.get(name).await.ok()?;
                let bound = claim.status.as_ref()?.phase.as_deref() == Some("Bound");
                bound.then(|| claim.spec.as_ref()?.volume_name.clone())?
            },
        )
        .await;
        volumes.get(&volume_name).await.expect("the bound volume")
    }

    fn pinned_node(volume: &PersistentVolume) -> Option<String> {
        let affinity = serde_json::to_value(volume.spec.as_ref()?.node_affinity.as_ref()?).ok()?;
        affinity
            .pointer("/required/nodeSelectorTerms/0/matchExpressions/0/values/0")
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }

    async fn guest() {
        let name = vm::guest_name().expect("a guest");
        let other = if name == "node-a" { "node-b" } else { "node-a" };
        let kubeconfig = PathBuf::from(vm::guest_param("KUBECONFIG"));
        let node = GuestNode::start(&name).await;
        let _provisioner = tokio::process::Command::new(stowage_tests::process::stowage_bin())
            .arg("provisioner")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--csi-endpoint")
            .arg(format!("unix://{}", node.socket().display()))
            .args(["--node", &name])
            .env("STOWAGE_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the node provisioner");
        let client = stowage_tests::api::client_from(&kubeconfig).await;

        // ReadWriteMany over NFS: mounted on both nodes, each sees the other's write.
        let shared = csi_volume(&bound_volume(&client, "shared").await);
        let (staging, target) = (node.staging("shared"), node.target("shared"));
        node.stage(&shared, &staging).await;
        node.publish(&shared, &staging, &target).await;
        std::fs::write(target.join(format!("from-{name}")), &name)
            .expect("write to the shared claim");
        let theirs = target.join(format!("from-{other}"));
        stowage_tests::wait_for(
            &format!("{other}'s write through NFS"),
            Duration::from_secs(400),
            async || std::fs::read_to_string(&theirs).ok().filter(|t| t == other),
        )
        .await;

        // WaitForFirstConsumer: the claim selected for this node is made here.
        let own_pv = bound_volume(&client, &format!("on-{name}")).await;
        assert_eq!(pinned_node(&own_pv).as_deref(), Some(name.as_str()));
        let own = csi_volume(&own_pv);
        let (own_staging, own_target) = (node.staging("own"), node.target("own"));
        node.stage(&own, &own_staging).await;
        node.publish(&own, &own_staging, &own_target).await;
        std::fs::write(own_target.join("local"), "here").expect("write the local volume");
        let in_local_root = files_under(&node.dir().join("local")).into_iter().any(|p| {
            p.ends_with("local") && std::fs::read_to_string(&p).is_ok_and(|t| t == "here")
        });
        assert!(in_local_root, "the data is in this node's local root");

        // The other node's local volume cannot be used here.
        let theirs_pv = bound_volume(&client, &format!("on-{other}")).await;
        let refused = node
            .csi
            .node_publish(publish_request(
                &csi_volume(&theirs_pv),
                &node.target("theirs"),
            ))
            .await
            .expect_err("another node's local volume");
        assert_eq!(
            refused.code(),
            tonic::Code::NotFound,
            "{}",
            refused.message()
        );
        assert!(
            refused
                .message()
                .contains(&format!("does not live on node {name}")),
            "{}",
            refused.message()
        );

        for (volume, staging, target) in [
            (&shared, &staging, &target),
            (&own, &own_staging, &own_target),
        ] {
            node.csi
                .release(&volume.volume_id, &[target], staging)
                .await;
        }
        assert!(
            mounts_under(node.dir()).is_empty(),
            "nothing left mounted: {:?}",
            mounts_under(node.dir())
        );
    }
}
