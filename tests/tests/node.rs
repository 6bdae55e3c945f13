//! The node binary over its socket with real mounts, as root, in temporary directories.

use std::io::Write;
use std::path::{Path, PathBuf};

use csi_proto::v1::{self as v1};
use stowage_tests::csi::{
    AccessModeKind, assert_code, capability, create_request, enforced, mount_rwo,
    publish_staged_request, string_map,
};
use stowage_tests::driver::{Driver, Launch};
use stowage_tests::mounts::mounts_under;
use stowage_tests::refusal::{assert_refused, refusal};
use tonic::Code;

const NODE: &str = "node-a";

/// The node plugin with a kubelet directory, room for 100 volumes, and hostPath
/// volumes allowed below `hostpaths/` of its directory and at `more`.
fn plugin(more: &[&str]) -> Launch {
    let launch = Launch::node(NODE)
        .kubelet_dir()
        .flags(&["--max-volumes", "100"]);
    let hostpaths = launch.dir().join("hostpaths");
    std::fs::create_dir_all(&hostpaths).expect("mkdir hostpaths");
    more.iter()
        .fold(launch.allow_host_path(hostpaths), |launch, prefix| {
            launch.allow_host_path(prefix)
        })
}

async fn start(more: &[&str]) -> Driver {
    plugin(more).start().await
}

/// The node plugin with CAP_SYS_RESOURCE dropped from every capability set.
async fn start_without_cap_sys_resource() -> Driver {
    plugin(&[])
        .wrapped(&[
            "setpriv",
            "--inh-caps=-sys_resource",
            "--ambient-caps=-sys_resource",
            "--bounding-set=-sys_resource",
        ])
        .start()
        .await
}

// Where this file's tests put things, and the node calls they make.
fn pod_target(s: &Driver, name: &str) -> PathBuf {
    s.kubelet("pods").join(name).join("mount")
}

fn hostpaths(s: &Driver) -> PathBuf {
    s.dir().join("hostpaths")
}

async fn publish(
    s: &Driver,
    id: &str,
    target: &Path,
    context: &[(&str, &str)],
    readonly: bool,
) -> Result<(), tonic::Status> {
    publish_with(s, id, target, context, readonly, mount_rwo()).await
}

/// The same ephemeral publish again succeeds (`what` names it); a read-only one at the
/// same target is AlreadyExists.
async fn republish(s: &Driver, id: &str, target: &Path, context: &[(&str, &str)], what: &str) {
    publish(s, id, target, context, false).await.expect(what);
    assert_code(
        publish(s, id, target, context, true).await,
        Code::AlreadyExists,
        "other arguments",
    );
}

async fn publish_with(
    s: &Driver,
    id: &str,
    target: &Path,
    context: &[(&str, &str)],
    readonly: bool,
    cap: v1::VolumeCapability,
) -> Result<(), tonic::Status> {
    s.csi
        .node_publish(v1::NodePublishVolumeRequest {
            volume_id: id.into(),
            target_path: target.display().to_string(),
            volume_capability: Some(cap),
            readonly,
            volume_context: string_map(context),
            ..Default::default()
        })
        .await
}

async fn stage(
    s: &Driver,
    volume: &v1::Volume,
    staging: &Path,
    cap: v1::VolumeCapability,
) -> Result<(), tonic::Status> {
    std::fs::create_dir_all(staging).expect("staging dir");
    s.csi.node_stage(volume, staging, cap).await
}

async fn publish_staged(
    s: &Driver,
    volume: &v1::Volume,
    staging: &Path,
    target: &Path,
    cap: v1::VolumeCapability,
) -> Result<(), tonic::Status> {
    s.csi
        .node_publish(v1::NodePublishVolumeRequest {
            volume_capability: Some(cap),
            ..publish_staged_request(volume, staging, target)
        })
        .await
}

fn is_mounted(path: &Path) -> bool {
    mounts_under(path).iter().any(|m| m == path)
}

fn write_bytes(path: &Path, len: usize) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    let chunk = vec![7u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n])?;
        left -= n;
    }
    file.sync_all()
}

#[tokio::test]
async fn node_reports_its_id_topology_and_capabilities() {
    let s = start(&[]).await;
    let info = s.csi.node_info().await.expect("info");
    assert_eq!(info.node_id, NODE);
    assert_eq!(info.max_volumes_per_node, 100);
    assert_eq!(
        info.accessible_topology
            .expect("topology")
            .segments
            .get("topology.stowage.io/node")
            .map(String::as_str),
        Some(NODE)
    );
    let caps = s
        .csi
        .node
        .clone()
        .node_get_capabilities(v1::NodeGetCapabilitiesRequest {})
        .await
        .expect("caps")
        .into_inner();
    use v1::node_service_capability::rpc::Type as Cap;
    let got: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| c.r#type.as_ref())
        .map(|t| {
            let v1::node_service_capability::Type::Rpc(r) = t;
            r.r#type
        })
        .collect();
    for want in [
        Cap::StageUnstageVolume,
        Cap::GetVolumeStats,
        Cap::ExpandVolume,
        Cap::VolumeCondition,
        Cap::SingleNodeMultiWriter,
    ] {
        assert!(got.contains(&(want as i32)), "missing {want:?}");
    }
}

#[tokio::test]
async fn ephemeral_directory_lives_until_unpublish() {
    let s = start(&[]).await;
    let target = pod_target(&s, "eph");
    let ctx = [
        ("csi.storage.k8s.io/ephemeral", "true"),
        ("csi.storage.k8s.io/pod.name", "web"),
    ];
    publish(&s, "csi-eph-1", &target, &ctx, false)
        .await
        .expect("publish");
    assert!(is_mounted(&target));
    std::fs::write(target.join("scratch"), b"tmp").expect("write");
    republish(&s, "csi-eph-1", &target, &ctx, "publish again").await;
    s.csi
        .node_unpublish("csi-eph-1", &target)
        .await
        .expect("unpublish");
    assert!(!target.exists(), "the target is removed");
    assert!(
        !s.dir().join("state/ephemeral/csi-eph-1").exists(),
        "the data is gone"
    );
    s.csi
        .node_unpublish("csi-eph-1", &target)
        .await
        .expect("unpublish twice");
    publish(&s, "csi-eph-1", &target, &ctx, false)
        .await
        .expect("publish anew");
    assert!(
        std::fs::read_dir(&target).expect("list").next().is_none(),
        "a new pod volume starts empty"
    );
    s.csi
        .node_unpublish("csi-eph-1", &target)
        .await
        .expect("unpublish");
}

#[tokio::test]
async fn memory_medium_is_a_tmpfs_whose_size_limit_holds() {
    let s = start(&[]).await;
    let target = pod_target(&s, "mem");
    let ctx = [
        ("csi.storage.k8s.io/ephemeral", "true"),
        ("medium", "Memory"),
        ("sizeLimit", "1Mi"),
    ];
    publish(&s, "csi-mem", &target, &ctx, false)
        .await
        .expect("publish");
    write_bytes(&target.join("fits"), 512 * 1024).expect("half the limit fits");
    let err = write_bytes(&target.join("overflow"), 2 << 20).expect_err("over the limit");
    assert_eq!(err.raw_os_error(), Some(nix::libc::ENOSPC));
    s.csi
        .node_unpublish("csi-mem", &target)
        .await
        .expect("unpublish");
    assert!(!target.exists());
    assert_code(
        publish(
            &s,
            "csi-mem2",
            &target,
            &[
                ("csi.storage.k8s.io/ephemeral", "true"),
                ("sizeLimit", "lots"),
            ],
            false,
        )
        .await,
        Code::InvalidArgument,
        "sizeLimit",
    );
    assert_code(
        publish(
            &s,
            "csi-mem2",
            &target,
            &[("csi.storage.k8s.io/ephemeral", "true"), ("medium", "Disk")],
            false,
        )
        .await,
        Code::InvalidArgument,
        "medium",
    );
    assert!(!target.exists(), "a refused publish leaves nothing behind");
}

#[tokio::test]
async fn host_path_types_have_their_kubernetes_meaning() {
    // The highest loop device node: a block device that exists on every machine of this kind.
    let block_device = (0..64)
        .rev()
        .map(|n| format!("/dev/loop{n}"))
        .find(|p| Path::new(p).exists())
        .expect("a loop device node");
    let s = start(&["/dev/null", &block_device]).await;
    let base = hostpaths(&s);
    std::fs::create_dir(base.join("dir")).expect("mkdir");
    std::fs::write(base.join("file"), b"config").expect("write");
    let _socket = std::os::unix::net::UnixListener::bind(base.join("sock")).expect("socket");
    let path = |name: &str| base.join(name).display().to_string();
    let cases: Vec<(String, &str, bool)> = vec![
        (path("dir"), "Directory", false),
        (path("made/by/csi"), "DirectoryOrCreate", false),
        (path("file"), "File", true),
        (path("newfile"), "FileOrCreate", true),
        (path("sock"), "Socket", true),
        ("/dev/null".to_string(), "CharDevice", true),
        (block_device.clone(), "BlockDevice", true),
        (path("dir"), "", false),
    ];
    for (i, (host, kind, is_file)) in cases.iter().enumerate() {
        let target = pod_target(&s, &format!("hp{i}"));
        let ctx = [("path", host.as_str()), ("hostPathType", *kind)];
        publish(&s, &format!("hp-{i}"), &target, &ctx, false)
            .await
            .unwrap_or_else(|e| panic!("{kind} {host}: {e}"));
        assert!(is_mounted(&target), "{kind}");
        assert_eq!(
            target.is_file()
                || std::fs::metadata(&target)
                    .map(|m| !m.is_dir())
                    .unwrap_or(false),
            *is_file,
            "{kind}"
        );
        s.csi
            .node_unpublish(&format!("hp-{i}"), &target)
            .await
            .expect("unpublish");
        assert!(!target.exists());
    }
    assert!(base.join("made/by/csi").is_dir() && base.join("newfile").is_file());
    assert_eq!(
        std::fs::read(base.join("file")).expect("read"),
        b"config",
        "unpublish leaves the host file alone"
    );
}

#[tokio::test]
async fn host_path_refusals_never_mount() {
    let s = start(&[]).await;
    let base = hostpaths(&s);
    std::fs::write(base.join("file"), b"x").expect("write");
    std::os::unix::fs::symlink("/etc", base.join("etc-link")).expect("symlink");
    let target = pod_target(&s, "refused");
    let path = |name: &str| base.join(name).display().to_string();
    let escape = format!("{}/../../etc", base.display());
    let cases: Vec<(String, &str, Code, &str)> = vec![
        (
            "/etc".into(),
            "Directory",
            Code::PermissionDenied,
            "allowed",
        ),
        (
            path("etc-link"),
            "Directory",
            Code::PermissionDenied,
            "outside",
        ),
        (
            format!("{}/newdir", path("etc-link")),
            "DirectoryOrCreate",
            Code::PermissionDenied,
            "outside",
        ),
        (
            escape,
            "Directory",
            Code::InvalidArgument,
            "volume_context.path",
        ),
        (
            path("file"),
            "Directory",
            Code::FailedPrecondition,
            "directory",
        ),
        (path("missing"), "File", Code::NotFound, "does not exist"),
        (
            path("file"),
            "Folder",
            Code::InvalidArgument,
            "volume_context.hostPathType",
        ),
        (
            "/dev/null".into(),
            "CharDevice",
            Code::PermissionDenied,
            "allowed",
        ),
    ];
    for (host, kind, code, needle) in cases {
        assert_code(
            publish(
                &s,
                "hp",
                &target,
                &[("path", &host), ("hostPathType", kind)],
                false,
            )
            .await,
            code,
            needle,
        );
        assert!(
            mounts_under(s.dir()).is_empty(),
            "{host} {kind} mounted something"
        );
    }
    assert!(!Path::new("/etc/newdir").exists());
}

#[tokio::test]
async fn local_directory_volume_binds_read_write_and_read_only() {
    let s = start(&[]).await;
    let volume = s
        .csi
        .create(create_request("pvc-local", 1 << 20, &[]))
        .await
        .expect("create on the node's own socket");
    let ctx: Vec<(&str, &str)> = volume
        .volume_context
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let staging = s.kubelet("").join("plugins/staging/pvc-local");
    std::fs::create_dir_all(&staging).expect("staging dir");
    let stage = v1::NodeStageVolumeRequest {
        volume_id: volume.volume_id.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(mount_rwo()),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    };
    s.csi
        .node
        .clone()
        .node_stage_volume(stage)
        .await
        .expect("stage");

    let rw = pod_target(&s, "rw");
    publish(&s, &volume.volume_id, &rw, &ctx, false)
        .await
        .expect("publish");
    std::fs::write(rw.join("hello"), b"world").expect("write through the bind");
    let key = volume.volume_id.split(':').nth(1).expect("key");
    assert_eq!(
        std::fs::read(s.dir().join("local/volumes").join(key).join("hello")).expect("read"),
        b"world"
    );

    let ro = pod_target(&s, "ro");
    publish(&s, &volume.volume_id, &ro, &ctx, true)
        .await
        .expect("publish read-only");
    let err = std::fs::write(ro.join("nope"), b"x").expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(nix::libc::EROFS));
    assert_code(
        publish(&s, &volume.volume_id, &ro, &ctx, false).await,
        Code::AlreadyExists,
        "other arguments",
    );

    let stats = s
        .csi
        .node_stats(&volume.volume_id, &rw)
        .await
        .expect("stats");
    let bytes = stats
        .usage
        .iter()
        .find(|u| u.unit == v1::volume_usage::Unit::Bytes as i32)
        .expect("bytes");
    let inodes = stats
        .usage
        .iter()
        .find(|u| u.unit == v1::volume_usage::Unit::Inodes as i32)
        .expect("inodes");
    assert!(bytes.total > 0 && bytes.available > 0 && bytes.used >= 0);
    assert!(inodes.total > 0 && inodes.used > 0);
    assert!(!stats.volume_condition.expect("condition").abnormal);

    for target in [&rw, &ro] {
        s.csi
            .node_unpublish(&volume.volume_id, target)
            .await
            .expect("unpublish");
    }
    s.csi
        .node
        .clone()
        .node_unstage_volume(v1::NodeUnstageVolumeRequest {
            volume_id: volume.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
        })
        .await
        .expect("unstage");
    assert!(mounts_under(s.dir()).is_empty());
    let other_node = "local:00000000000000000000000000000000:node-b";
    assert_code(
        publish(
            &s,
            other_node,
            &pod_target(&s, "x"),
            &[("type", "local")],
            false,
        )
        .await,
        Code::NotFound,
        "node-a",
    );
}

#[tokio::test]
async fn a_restarted_node_plugin_finds_its_mounts_in_the_kernel() {
    let mut s = start(&[]).await;
    let target = pod_target(&s, "survivor");
    let ctx = [("csi.storage.k8s.io/ephemeral", "true")];
    publish(&s, "csi-survivor", &target, &ctx, false)
        .await
        .expect("publish");
    s.restart_hard().await;
    republish(
        &s,
        "csi-survivor",
        &target,
        &ctx,
        "idempotent after restart",
    )
    .await;
    s.csi
        .node_unpublish("csi-survivor", &target)
        .await
        .expect("unpublish after restart");
    assert!(!is_mounted(&target) && !target.exists());
}

#[tokio::test]
async fn stats_report_a_path_that_is_no_longer_a_mount_as_abnormal() {
    let s = start(&[]).await;
    let target = pod_target(&s, "cond");
    publish(
        &s,
        "csi-cond",
        &target,
        &[("csi.storage.k8s.io/ephemeral", "true")],
        false,
    )
    .await
    .expect("publish");
    nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH)
        .expect("unmount behind the plugin's back");
    let condition = s
        .csi
        .node_stats("csi-cond", &target)
        .await
        .expect("stats")
        .volume_condition
        .expect("condition");
    assert!(
        condition.abnormal && condition.message.contains("no longer a mount"),
        "{condition:?}"
    );
    assert_code(
        s.csi.node_stats("csi-cond", &pod_target(&s, "gone")).await,
        Code::NotFound,
        "does not exist",
    );
    s.csi
        .node_unpublish("csi-cond", &target)
        .await
        .expect("unpublish");
}

#[tokio::test]
async fn bad_node_requests_are_invalid_argument_naming_the_field() {
    let s = start(&[]).await;
    let ephemeral = |id: &str, target: &Path| v1::NodePublishVolumeRequest {
        volume_id: id.into(),
        target_path: target.display().to_string(),
        volume_capability: Some(mount_rwo()),
        volume_context: string_map(&[("csi.storage.k8s.io/ephemeral", "true")]),
        ..Default::default()
    };
    let inside = pod_target(&s, "t");
    let with_capability = |capability| v1::NodePublishVolumeRequest {
        volume_capability: capability,
        ..ephemeral("v", &inside)
    };
    // A symlink inside the kubelet directory that leads out of it is no way out.
    std::os::unix::fs::symlink("/tmp", s.kubelet("pods-link")).expect("symlink");
    let dotdot = PathBuf::from(format!("{}/../../escape", s.kubelet("").display()));
    let invalid = Code::InvalidArgument;
    let rows = vec![
        refusal(
            "publish without a volume ID",
            ephemeral("", &inside),
            invalid,
            "volume_id",
        ),
        refusal(
            "publish without a target",
            ephemeral("v", Path::new("")),
            invalid,
            "target_path",
        ),
        refusal(
            "publish outside the kubelet directory",
            ephemeral("v", Path::new("/tmp/outside-kubelet")),
            invalid,
            "target_path",
        ),
        refusal(
            "publish through ..",
            ephemeral("v", &dotdot),
            invalid,
            "target_path",
        ),
        refusal(
            "publish through a symlink out",
            ephemeral("v", &s.kubelet("pods-link/sneaky")),
            invalid,
            "target_path",
        ),
        refusal(
            "publish without a capability",
            with_capability(None),
            invalid,
            "volume_capability",
        ),
        refusal(
            "publish with an unknown access mode",
            with_capability(Some(capability(false, AccessModeKind::Unknown))),
            invalid,
            "volume_capability",
        ),
        refusal(
            "an ephemeral volume as a block device",
            with_capability(Some(capability(true, AccessModeKind::SingleNodeWriter))),
            invalid,
            "block",
        ),
        refusal(
            "unpublish without a target",
            v1::NodeUnpublishVolumeRequest {
                volume_id: "v".into(),
                target_path: String::new(),
            },
            invalid,
            "target_path",
        ),
    ];
    assert_refused(&s.csi, rows).await;
    assert!(!Path::new("/tmp/sneaky").exists());
    assert!(mounts_under(s.dir()).is_empty());
}

/// Is any loop device backed by this file?
fn loop_attached(file: &Path) -> bool {
    std::fs::read_dir("/sys/block")
        .expect("sysfs")
        .filter_map(|d| d.ok())
        .any(|d| {
            std::fs::read_to_string(d.path().join("loop/backing_file"))
                .is_ok_and(|b| Path::new(b.trim_end()) == file)
        })
}

fn fs_size(path: &Path) -> u64 {
    let stat = nix::sys::statvfs::statvfs(path).expect("statvfs");
    stat.blocks() * stat.fragment_size()
}

/// Online growth of a mounted ext4 needs CAP_SYS_RESOURCE; a node plugin without it
/// refuses NodeExpandVolume and grows the image at the next stage. (With it, online
/// growth runs in a VM: `vm.rs`, `image_volume_grows_online_while_in_use`.)
#[tokio::test]
async fn image_volume_enforces_its_capacity_and_grows_at_the_next_stage_without_cap_sys_resource() {
    let s = start_without_cap_sys_resource().await;
    let volume = s
        .csi
        .create(enforced("pvc-img", 32 << 20, "image"))
        .await
        .expect("create");
    let staging = s.kubelet("").join("plugins/staging/img");
    stage(&s, &volume, &staging, mount_rwo())
        .await
        .expect("stage");
    stage(&s, &volume, &staging, mount_rwo())
        .await
        .expect("stage twice");
    let image = s.volume_data(&volume.volume_id, ".img");
    assert!(loop_attached(&image));
    let target = pod_target(&s, "img");
    publish_staged(&s, &volume, &staging, &target, mount_rwo())
        .await
        .expect("publish");
    let err = write_bytes(&target.join("big"), 40 << 20).expect_err("writing past the capacity");
    assert_eq!(err.raw_os_error(), Some(nix::libc::ENOSPC));
    std::fs::remove_file(target.join("big")).expect("rm");

    let id = &volume.volume_id;
    let expanded = s.csi.controller_expand(id, 96 << 20).await;
    assert!(
        expanded.expect("controller expand").node_expansion_required,
        "a staged image is grown by the node"
    );
    let before = fs_size(&target);
    let node_expand = s.csi.node_expand(id, &target, 96 << 20).await;
    assert_code(node_expand, Code::PermissionDenied, "CAP_SYS_RESOURCE");
    s.csi.release(id, &[&target], &staging).await;
    stage(&s, &volume, &staging, mount_rwo())
        .await
        .expect("re-stage grows offline");
    publish_staged(&s, &volume, &staging, &target, mount_rwo())
        .await
        .expect("publish");
    assert!(
        fs_size(&target) > before + (48 << 20),
        "filesystem grew at stage: {before} -> {}",
        fs_size(&target)
    );
    write_bytes(&target.join("big"), 40 << 20).expect("now it fits");

    s.csi.release_twice(id, &[&target], &staging).await;
    // The kernel lets go of an auto-clearing loop device after the last close.
    stowage_tests::wait_for(
        "the loop device to be released",
        std::time::Duration::from_secs(10),
        async || (!loop_attached(&image)).then_some(()),
    )
    .await;
    assert!(mounts_under(s.dir()).is_empty());
}

#[tokio::test]
async fn block_volume_is_published_as_a_device() {
    use std::os::unix::fs::{FileExt, FileTypeExt};
    let s = start(&[]).await;
    let block = capability(true, AccessModeKind::SingleNodeWriter);
    let mut request = create_request("pvc-blk", 8 << 20, &[]);
    request.volume_capabilities = vec![block.clone()];
    let volume = s.csi.create(request).await.expect("create");
    let staging = s.kubelet("").join("plugins/staging/blk");
    let target = pod_target(&s, "blk");
    assert_code(
        publish_staged(&s, &volume, &staging, &target, block.clone()).await,
        Code::FailedPrecondition,
        "not staged",
    );
    stage(&s, &volume, &staging, block.clone())
        .await
        .expect("stage");
    publish_staged(&s, &volume, &staging, &target, block.clone())
        .await
        .expect("publish");
    publish_staged(&s, &volume, &staging, &target, block.clone())
        .await
        .expect("publish twice");
    assert!(
        std::fs::metadata(&target)
            .expect("stat")
            .file_type()
            .is_block_device()
    );
    let device = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&target)
        .expect("open device");
    device.write_all_at(b"raw bytes", 4096).expect("write");
    device.sync_all().expect("sync");
    drop(device);
    let mut back = [0u8; 9];
    std::fs::File::open(s.volume_data(&volume.volume_id, ".img"))
        .expect("image")
        .read_exact_at(&mut back, 4096)
        .expect("read");
    assert_eq!(&back, b"raw bytes");
    assert_code(
        publish_staged(
            &s,
            &volume,
            &staging,
            &pod_target(&s, "blk-fs"),
            mount_rwo(),
        )
        .await,
        Code::InvalidArgument,
        "block",
    );

    s.csi.release(&volume.volume_id, &[&target], &staging).await;
    assert!(!loop_attached(&s.volume_data(&volume.volume_id, ".img")));
}

/// The kernel NFS mount at stage and the binds per pod run in a VM (`vm.rs`,
/// `nfs_volumes_stage_once_per_node_and_bind_per_pod`): this machine's kernel has no
/// NFS client. Here: what the node checks before it mounts anything.
#[tokio::test]
async fn nfs_volume_is_published_only_once_staged() {
    let nfs = stowage_tests::nfs::MemNfs::start().await;
    let s = start(&[]).await;
    let server = nfs.server();
    let volume = s
        .csi
        .create(create_request(
            "pvc-nfs",
            1 << 20,
            &[("type", "nfs"), ("server", &server), ("share", "/")],
        ))
        .await
        .expect("create through the node's controller");
    let staging = s.kubelet("").join("plugins/staging/nfs");
    let target = pod_target(&s, "nfs");
    assert_code(
        publish_staged(&s, &volume, &staging, &target, mount_rwo()).await,
        Code::FailedPrecondition,
        "not staged",
    );
    let mut escaping = volume.clone();
    escaping
        .volume_context
        .insert("subDir".into(), "../elsewhere".into());
    assert_code(
        stage(&s, &escaping, &staging, mount_rwo()).await,
        Code::InvalidArgument,
        "subDir",
    );
    assert!(mounts_under(s.dir()).is_empty());
}
