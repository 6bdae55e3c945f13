//! Table-driven checks of the Node service's rules, one CSI rule per row: argument
//! checks, idempotency and conflicts of each RPC. Paths are temporary directories; the
//! host is [`FakeMounts`], so a row's outcome is a gRPC code or the list of effects the
//! call made (paths relative to the row's directory). The real-mount tests are
//! tests/tests/node*.rs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use csi_proto::v1::node_server::Node;
use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use csi_proto::v1::{self as csi, VolumeCapability};
use nix::errno::Errno;
use tonic::{Code, Request};

use super::NodeService;
use crate::NodeConfig;
use crate::fake::FakeMounts;
use crate::host::Mounts;

const NODE: &str = "node-a";
const DIR_KEY: &str = "0123456789abcdef0123456789abcdef";
const OTHER_DIR_KEY: &str = "11111111111111111111111111111111";
const IMG_KEY: &str = "22222222222222222222222222222222";
const BLK_KEY: &str = "33333333333333333333333333333333";
const IMAGE_BYTES: u64 = 32 << 20;
const GROUP: u32 = 4242;

/// One row's world: a directory holding the kubelet directory, the state directory,
/// the local root (with a directory, an image and a block volume) and an allowed
/// hostPath prefix; the fake host; the service over both.
struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    fake: Arc<FakeMounts>,
    node: NodeService,
    runtime: tokio::runtime::Runtime,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        for sub in ["kubelet/staging/s1", "state", "host", "local/volumes"] {
            std::fs::create_dir_all(root.join(sub)).expect("mkdir");
        }
        for key in [DIR_KEY, OTHER_DIR_KEY] {
            std::fs::create_dir(root.join("local/volumes").join(key)).expect("mkdir volume");
        }
        for key in [IMG_KEY, BLK_KEY] {
            let file = std::fs::File::create(root.join(format!("local/volumes/{key}.img")))
                .expect("create image");
            file.set_len(IMAGE_BYTES).expect("size image");
        }
        let config = NodeConfig {
            node_id: NODE.into(),
            kubelet_dir: root.join("kubelet"),
            state_dir: root.join("state"),
            local_root: root.join("local"),
            host_path_allow: vec![root.join("host")],
            max_volumes: 16,
        };
        let fake = Arc::new(FakeMounts::new(&root));
        let node = NodeService::with_mounts(config, fake.clone()).expect("node service");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Self {
            _dir: dir,
            root,
            fake,
            node,
            runtime,
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    fn kubelet(&self, relative: &str) -> String {
        self.path("kubelet").join(relative).display().to_string()
    }

    fn target(&self, pod: &str) -> String {
        self.kubelet(&format!("pods/{pod}/mount"))
    }

    fn image(&self) -> PathBuf {
        self.path(&format!("local/volumes/{IMG_KEY}.img"))
    }

    fn stage(&self, req: csi::NodeStageVolumeRequest) -> Result<(), Code> {
        let call = self.node.node_stage_volume(Request::new(req));
        self.runtime.block_on(call).map(drop).map_err(|s| s.code())
    }

    fn unstage(&self, req: csi::NodeUnstageVolumeRequest) -> Result<(), Code> {
        let call = self.node.node_unstage_volume(Request::new(req));
        self.runtime.block_on(call).map(drop).map_err(|s| s.code())
    }

    fn publish(&self, req: csi::NodePublishVolumeRequest) -> Result<(), Code> {
        let call = self.node.node_publish_volume(Request::new(req));
        self.runtime.block_on(call).map(drop).map_err(|s| s.code())
    }

    fn unpublish(&self, req: csi::NodeUnpublishVolumeRequest) -> Result<(), Code> {
        let call = self.node.node_unpublish_volume(Request::new(req));
        self.runtime.block_on(call).map(drop).map_err(|s| s.code())
    }

    fn expand(&self, req: csi::NodeExpandVolumeRequest) -> Result<i64, Code> {
        let call = self.node.node_expand_volume(Request::new(req));
        self.runtime
            .block_on(call)
            .map(|r| r.into_inner().capacity_bytes)
            .map_err(|s| s.code())
    }

    fn stats(
        &self,
        req: csi::NodeGetVolumeStatsRequest,
    ) -> Result<csi::NodeGetVolumeStatsResponse, Code> {
        let call = self.node.node_get_volume_stats(Request::new(req));
        self.runtime
            .block_on(call)
            .map(|r| r.into_inner())
            .map_err(|s| s.code())
    }

    /// The effects so far, with the test's directory shown as `<root>`.
    fn effects(&self) -> Vec<String> {
        self.fake.take_effects()
    }
}

/// A step that must work: the state a row starts from.
fn given(what: &str, result: Result<(), Code>) {
    if let Err(code) = result {
        panic!("setting up ({what}) failed: {code:?}");
    }
}

fn local_id(key: &str) -> String {
    format!("local:{key}:{NODE}")
}

fn context(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn mount(mode: Mode) -> Option<VolumeCapability> {
    Some(VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    })
}

fn mount_group(gid: u32) -> Option<VolumeCapability> {
    Some(VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            volume_mount_group: gid.to_string(),
            ..MountVolume::default()
        })),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    })
}

fn block() -> Option<VolumeCapability> {
    Some(VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    })
}

const RWO: Mode = Mode::SingleNodeWriter;
const NFS: &[(&str, &str)] = &[
    ("type", "nfs"),
    ("server", "127.0.0.1"),
    ("share", "/export"),
    ("subDir", "pvc-1"),
];

// ---- requests every table starts from -------------------------------------------------

fn dir_publish(e: &Env, pod: &str) -> csi::NodePublishVolumeRequest {
    csi::NodePublishVolumeRequest {
        volume_id: local_id(DIR_KEY),
        target_path: e.target(pod),
        staging_target_path: e.kubelet("staging/s1"),
        volume_capability: mount(RWO),
        volume_context: context(&[("type", "local")]),
        ..Default::default()
    }
}

fn image_publish(e: &Env, pod: &str) -> csi::NodePublishVolumeRequest {
    csi::NodePublishVolumeRequest {
        volume_id: local_id(IMG_KEY),
        volume_context: context(&[("type", "local"), ("layout", "image")]),
        ..dir_publish(e, pod)
    }
}

fn block_publish(e: &Env, pod: &str) -> csi::NodePublishVolumeRequest {
    csi::NodePublishVolumeRequest {
        volume_id: local_id(BLK_KEY),
        volume_capability: block(),
        volume_context: context(&[("type", "local"), ("layout", "block")]),
        ..dir_publish(e, pod)
    }
}

fn ephemeral_publish(e: &Env, extra: &[(&str, &str)]) -> csi::NodePublishVolumeRequest {
    let mut volume_context = context(&[("csi.storage.k8s.io/ephemeral", "true")]);
    volume_context.extend(context(extra));
    csi::NodePublishVolumeRequest {
        volume_id: "csi-eph".into(),
        staging_target_path: String::new(),
        volume_context,
        ..dir_publish(e, "p1")
    }
}

fn nfs_publish(e: &Env) -> csi::NodePublishVolumeRequest {
    csi::NodePublishVolumeRequest {
        volume_id: "nfs-static".into(),
        volume_context: context(NFS),
        ..dir_publish(e, "p1")
    }
}

fn dir_stage(e: &Env) -> csi::NodeStageVolumeRequest {
    csi::NodeStageVolumeRequest {
        volume_id: local_id(DIR_KEY),
        staging_target_path: e.kubelet("staging/s1"),
        volume_capability: mount(RWO),
        volume_context: context(&[("type", "local")]),
        ..Default::default()
    }
}

fn image_stage(e: &Env) -> csi::NodeStageVolumeRequest {
    csi::NodeStageVolumeRequest {
        volume_id: local_id(IMG_KEY),
        volume_context: context(&[("type", "local"), ("layout", "image")]),
        ..dir_stage(e)
    }
}

fn block_stage(e: &Env) -> csi::NodeStageVolumeRequest {
    csi::NodeStageVolumeRequest {
        volume_id: local_id(BLK_KEY),
        volume_capability: block(),
        volume_context: context(&[("type", "local"), ("layout", "block")]),
        ..dir_stage(e)
    }
}

fn nfs_stage(e: &Env) -> csi::NodeStageVolumeRequest {
    csi::NodeStageVolumeRequest {
        volume_id: "nfs-static".into(),
        volume_context: context(NFS),
        ..dir_stage(e)
    }
}

fn unpublish(e: &Env, volume_id: &str) -> csi::NodeUnpublishVolumeRequest {
    csi::NodeUnpublishVolumeRequest {
        volume_id: volume_id.into(),
        target_path: e.target("p1"),
    }
}

fn unstage(e: &Env, volume_id: &str) -> csi::NodeUnstageVolumeRequest {
    csi::NodeUnstageVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: e.kubelet("staging/s1"),
    }
}

/// The state a row starts from, made through the service itself where it can be.
type Prior = fn(&Env);
const NOTHING: Prior = |_| {};
/// What a row expects: the effects of a call that succeeds, or the code of one refused.
type Want = Result<&'static [&'static str], Code>;

fn check<T>(name: &str, env: &Env, got: Result<T, Code>, want: Want) {
    let got = got.map(|_| env.effects());
    let want = want.map(|effects| effects.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(got, want, "row: {name}");
}

#[test]
fn node_publish_volume() {
    type Row = (
        &'static str,
        Prior,
        fn(&Env) -> csi::NodePublishVolumeRequest,
        Want,
    );
    let bind_dir =
        &["bind local/volumes/0123456789abcdef0123456789abcdef -> kubelet/pods/p1/mount"];
    let rows: &[Row] = &[
        (
            "volume_id is required",
            NOTHING,
            |e| csi::NodePublishVolumeRequest {
                volume_id: String::new(),
                ..dir_publish(e, "p1")
            },
            Err(Code::InvalidArgument),
        ),
        (
            "target_path is required",
            NOTHING,
            |e| csi::NodePublishVolumeRequest {
                target_path: String::new(),
                ..dir_publish(e, "p1")
            },
            Err(Code::InvalidArgument),
        ),
        (
            "a target_path outside the kubelet directory is refused",
            NOTHING,
            |e| csi::NodePublishVolumeRequest {
                target_path: e.path("elsewhere/mount").display().to_string(),
                ..dir_publish(e, "p1")
            },
            Err(Code::InvalidArgument),
        ),
        (
            "a target_path with '..' is refused",
            NOTHING,
            |e| csi::NodePublishVolumeRequest {
                target_path: e.kubelet("pods/../../escape"),
                ..dir_publish(e, "p1")
            },
            Err(Code::InvalidArgument),
        ),
        (
            "volume_capability is required",
            NOTHING,
            |e| csi::NodePublishVolumeRequest {
                volume_capability: None,
                ..dir_publish(e, "p1")
            },
            Err(Code::InvalidArgument),
        ),
        (
            "an access mode is required",
            NOTHING,
            |e| csi::NodePublishVolumeRequest {
                volume_capability: mount(Mode::Unknown),
                ..dir_publish(e, "p1")
            },
            Err(Code::InvalidArgument),
        ),
        (
            "a volume_mount_group that is not a gid is refused",
            NOTHING,
            |e| {
                let mut req = dir_publish(e, "p1");
                if let Some(VolumeCapability {
                    access_type: Some(AccessType::Mount(m)),
                    ..
                }) = req.volume_capability.as_mut()
                {
                    m.volume_mount_group = "wheel".into();
                }
                req
            },
            Err(Code::InvalidArgument),
        ),
        (
            "a volume context naming no type is refused",
            NOTHING,
            |e| csi::NodePublishVolumeRequest {
                volume_context: HashMap::new(),
                ..dir_publish(e, "p1")
            },
            Err(Code::InvalidArgument),
        ),
        (
            "a local volume of another node is NotFound",
            NOTHING,
            |e| csi::NodePublishVolumeRequest {
                volume_id: format!("local:{DIR_KEY}:node-b"),
                ..dir_publish(e, "p1")
            },
            Err(Code::NotFound),
        ),
        (
            "a local volume without data here is NotFound",
            NOTHING,
            |e| csi::NodePublishVolumeRequest {
                volume_id: local_id("44444444444444444444444444444444"),
                ..dir_publish(e, "p1")
            },
            Err(Code::NotFound),
        ),
        (
            "a directory volume is bound at the target",
            NOTHING,
            |e| dir_publish(e, "p1"),
            Ok(bind_dir),
        ),
        (
            "a read-only publish is bound read-only",
            NOTHING,
            |e| csi::NodePublishVolumeRequest {
                readonly: true,
                ..dir_publish(e, "p1")
            },
            Ok(&[
                "bind local/volumes/0123456789abcdef0123456789abcdef -> kubelet/pods/p1/mount ro",
            ]),
        ),
        (
            "publishing again with the same arguments succeeds and mounts nothing",
            |e| given("publish", e.publish(dir_publish(e, "p1"))),
            |e| dir_publish(e, "p1"),
            Ok(&[]),
        ),
        (
            "the same volume at the same target read-only is AlreadyExists",
            |e| given("publish", e.publish(dir_publish(e, "p1"))),
            |e| csi::NodePublishVolumeRequest {
                readonly: true,
                ..dir_publish(e, "p1")
            },
            Err(Code::AlreadyExists),
        ),
        (
            "another volume at a published target is AlreadyExists",
            |e| given("publish", e.publish(dir_publish(e, "p1"))),
            |e| csi::NodePublishVolumeRequest {
                volume_id: local_id(OTHER_DIR_KEY),
                ..dir_publish(e, "p1")
            },
            Err(Code::AlreadyExists),
        ),
        (
            "another volume_mount_group at a published target is AlreadyExists",
            |e| {
                let first = csi::NodePublishVolumeRequest {
                    volume_capability: mount_group(GROUP),
                    ..dir_publish(e, "p1")
                };
                given("publish with a group", e.publish(first));
            },
            |e| csi::NodePublishVolumeRequest {
                volume_capability: mount_group(5151),
                ..dir_publish(e, "p1")
            },
            Err(Code::AlreadyExists),
        ),
        (
            "the same volume_mount_group again succeeds",
            |e| {
                let first = csi::NodePublishVolumeRequest {
                    volume_capability: mount_group(GROUP),
                    ..dir_publish(e, "p1")
                };
                given("publish with a group", e.publish(first));
            },
            |e| csi::NodePublishVolumeRequest {
                volume_capability: mount_group(GROUP),
                ..dir_publish(e, "p1")
            },
            Ok(&[]),
        ),
        (
            "a single-writer volume published at another target is FailedPrecondition",
            |e| {
                let other = csi::NodePublishVolumeRequest {
                    volume_capability: mount(Mode::SingleNodeSingleWriter),
                    ..dir_publish(e, "p2")
                };
                given("publish at p2", e.publish(other));
            },
            |e| csi::NodePublishVolumeRequest {
                volume_capability: mount(Mode::SingleNodeSingleWriter),
                ..dir_publish(e, "p1")
            },
            Err(Code::FailedPrecondition),
        ),
        (
            "a single-node-writer volume may be published at a second target",
            |e| given("publish at p2", e.publish(dir_publish(e, "p2"))),
            |e| dir_publish(e, "p1"),
            Ok(bind_dir),
        ),
        (
            "a single-writer volume whose other target was unmounted behind our back is published",
            |e| {
                let other = csi::NodePublishVolumeRequest {
                    volume_capability: mount(Mode::SingleNodeSingleWriter),
                    ..dir_publish(e, "p2")
                };
                given("publish at p2", e.publish(other));
                e.fake
                    .unmount(Path::new(&e.target("p2")))
                    .expect("unmount p2");
            },
            |e| csi::NodePublishVolumeRequest {
                volume_capability: mount(Mode::SingleNodeSingleWriter),
                ..dir_publish(e, "p1")
            },
            Ok(bind_dir),
        ),
        (
            "an image volume not staged is FailedPrecondition",
            NOTHING,
            |e| image_publish(e, "p1"),
            Err(Code::FailedPrecondition),
        ),
        (
            "a staged image volume is bound from its staging mount",
            |e| given("stage", e.stage(image_stage(e))),
            |e| image_publish(e, "p1"),
            Ok(&["bind kubelet/staging/s1 -> kubelet/pods/p1/mount"]),
        ),
        (
            "a block volume not staged is FailedPrecondition",
            NOTHING,
            |e| block_publish(e, "p1"),
            Err(Code::FailedPrecondition),
        ),
        (
            "a staged block volume's loop device is bound at the target",
            |e| given("stage", e.stage(block_stage(e))),
            |e| block_publish(e, "p1"),
            Ok(&["bind dev/loop0 -> kubelet/pods/p1/mount"]),
        ),
        (
            "a block volume published as a filesystem is refused",
            |e| given("stage", e.stage(block_stage(e))),
            |e| csi::NodePublishVolumeRequest {
                volume_capability: mount(RWO),
                ..block_publish(e, "p1")
            },
            Err(Code::InvalidArgument),
        ),
        (
            "an ephemeral volume gets new scratch data",
            NOTHING,
            |e| ephemeral_publish(e, &[]),
            Ok(&["bind state/ephemeral/csi-eph -> kubelet/pods/p1/mount"]),
        ),
        (
            "a memory ephemeral volume is a tmpfs of its size limit",
            NOTHING,
            |e| ephemeral_publish(e, &[("medium", "Memory"), ("sizeLimit", "1Mi")]),
            Ok(&["tmpfs kubelet/pods/p1/mount size=1048576"]),
        ),
        (
            "a memory ephemeral volume's tmpfs belongs to the volume_mount_group",
            NOTHING,
            |e| csi::NodePublishVolumeRequest {
                volume_capability: mount_group(GROUP),
                ..ephemeral_publish(e, &[("medium", "Memory")])
            },
            Ok(&["tmpfs kubelet/pods/p1/mount size=0 gid=4242"]),
        ),
        (
            "a memory ephemeral volume published again succeeds",
            |e| {
                let first = ephemeral_publish(e, &[("medium", "Memory")]);
                given("publish", e.publish(first));
            },
            |e| ephemeral_publish(e, &[("medium", "Memory")]),
            Ok(&[]),
        ),
        (
            "an ephemeral volume with an unknown medium is refused",
            NOTHING,
            |e| ephemeral_publish(e, &[("medium", "Disk")]),
            Err(Code::InvalidArgument),
        ),
        (
            "an ephemeral volume ID that is not a name is refused",
            NOTHING,
            |e| csi::NodePublishVolumeRequest {
                volume_id: "../etc".into(),
                ..ephemeral_publish(e, &[])
            },
            Err(Code::InvalidArgument),
        ),
        (
            "a hostPath under an allowed prefix is bound",
            NOTHING,
            |e| csi::NodePublishVolumeRequest {
                volume_id: "hp".into(),
                volume_context: context(&[
                    ("path", &e.path("host/data").display().to_string()),
                    ("hostPathType", "DirectoryOrCreate"),
                ]),
                ..dir_publish(e, "p1")
            },
            Ok(&["bind host/data -> kubelet/pods/p1/mount"]),
        ),
        (
            "a hostPath outside the allowed prefixes is PermissionDenied",
            NOTHING,
            |e| csi::NodePublishVolumeRequest {
                volume_id: "hp".into(),
                volume_context: context(&[
                    ("path", &e.path("state").display().to_string()),
                    ("hostPathType", "Directory"),
                ]),
                ..dir_publish(e, "p1")
            },
            Err(Code::PermissionDenied),
        ),
        (
            "a hostPath that does not exist is NotFound",
            NOTHING,
            |e| csi::NodePublishVolumeRequest {
                volume_id: "hp".into(),
                volume_context: context(&[
                    ("path", &e.path("host/missing").display().to_string()),
                    ("hostPathType", "Directory"),
                ]),
                ..dir_publish(e, "p1")
            },
            Err(Code::NotFound),
        ),
        (
            "an NFS volume is bound from its subdirectory of the staged export",
            |e| {
                given("stage", e.stage(nfs_stage(e)));
                std::fs::create_dir(e.path("kubelet/staging/s1/pvc-1")).expect("mkdir");
            },
            nfs_publish,
            Ok(&["bind kubelet/staging/s1/pvc-1 -> kubelet/pods/p1/mount"]),
        ),
        (
            "an NFS volume whose subdirectory is not in the export is NotFound",
            |e| given("stage", e.stage(nfs_stage(e))),
            nfs_publish,
            Err(Code::NotFound),
        ),
        (
            "an NFS volume not staged is FailedPrecondition",
            NOTHING,
            nfs_publish,
            Err(Code::FailedPrecondition),
        ),
        (
            "a bind the kernel refuses is Internal",
            |e| e.fake.fail("bind", Errno::EPERM),
            |e| dir_publish(e, "p1"),
            Err(Code::Internal),
        ),
    ];
    for (name, prior, request, want) in rows {
        let env = Env::new();
        prior(&env);
        env.effects();
        let got = env.publish(request(&env));
        check(name, &env, got, *want);
    }
}

#[test]
fn a_failed_publish_leaves_no_target_and_no_scratch_data() {
    let env = Env::new();
    env.fake.fail("bind", Errno::EPERM);
    assert_eq!(
        env.publish(ephemeral_publish(&env, &[])),
        Err(Code::Internal)
    );
    assert!(!Path::new(&env.target("p1")).exists(), "target left behind");
    assert!(
        !env.path("state/ephemeral/csi-eph").exists(),
        "scratch data left behind"
    );
}

#[test]
fn node_unpublish_volume() {
    type Row = (
        &'static str,
        Prior,
        fn(&Env) -> csi::NodeUnpublishVolumeRequest,
        Want,
    );
    let rows: &[Row] = &[
        (
            "volume_id is required",
            NOTHING,
            |e| unpublish(e, ""),
            Err(Code::InvalidArgument),
        ),
        (
            "target_path is required",
            NOTHING,
            |e| csi::NodeUnpublishVolumeRequest {
                target_path: String::new(),
                ..unpublish(e, "v")
            },
            Err(Code::InvalidArgument),
        ),
        (
            "a target_path outside the kubelet directory is refused",
            NOTHING,
            |e| csi::NodeUnpublishVolumeRequest {
                target_path: e.path("state/x").display().to_string(),
                ..unpublish(e, "v")
            },
            Err(Code::InvalidArgument),
        ),
        (
            "a target that does not exist is success",
            NOTHING,
            |e| unpublish(e, &local_id(DIR_KEY)),
            Ok(&[]),
        ),
        (
            "a target that is no mount is removed",
            |e| std::fs::create_dir_all(e.target("p1")).expect("mkdir"),
            |e| unpublish(e, &local_id(DIR_KEY)),
            Ok(&[]),
        ),
        (
            "a published target is unmounted",
            |e| given("publish", e.publish(dir_publish(e, "p1"))),
            |e| unpublish(e, &local_id(DIR_KEY)),
            Ok(&["unmount kubelet/pods/p1/mount"]),
        ),
        (
            "unpublishing twice is success",
            |e| {
                given("publish", e.publish(dir_publish(e, "p1")));
                given("unpublish", e.unpublish(unpublish(e, &local_id(DIR_KEY))));
            },
            |e| unpublish(e, &local_id(DIR_KEY)),
            Ok(&[]),
        ),
        (
            "mounts stacked at the target all go",
            |e| {
                given("publish", e.publish(dir_publish(e, "p1")));
                e.fake.mounted(Path::new(&e.target("p1")), "tmpfs", "tmpfs");
            },
            |e| unpublish(e, &local_id(DIR_KEY)),
            Ok(&[
                "unmount kubelet/pods/p1/mount",
                "unmount kubelet/pods/p1/mount",
            ]),
        ),
        (
            "a busy target has the mounts below it unmounted first",
            |e| {
                given("publish", e.publish(dir_publish(e, "p1")));
                let target = PathBuf::from(e.target("p1"));
                e.fake.mounted(&target.join("inner"), "tmpfs", "tmpfs");
                e.fake.busy(&target, 1);
            },
            |e| unpublish(e, &local_id(DIR_KEY)),
            Ok(&[
                "unmount kubelet/pods/p1/mount (busy)",
                "unmount kubelet/pods/p1/mount/inner",
                "unmount kubelet/pods/p1/mount",
            ]),
        ),
        (
            "a target that stays busy is Internal",
            |e| {
                given("publish", e.publish(dir_publish(e, "p1")));
                e.fake.busy(Path::new(&e.target("p1")), 100);
            },
            |e| unpublish(e, &local_id(DIR_KEY)),
            Err(Code::Internal),
        ),
        (
            "an ephemeral volume is unmounted",
            |e| given("publish", e.publish(ephemeral_publish(e, &[]))),
            |e| unpublish(e, "csi-eph"),
            Ok(&["unmount kubelet/pods/p1/mount"]),
        ),
    ];
    for (name, prior, request, want) in rows {
        let env = Env::new();
        prior(&env);
        env.effects();
        let got = env.unpublish(request(&env));
        check(name, &env, got, *want);
    }
}

#[test]
fn unpublishing_an_ephemeral_volume_removes_its_data_and_target() {
    let env = Env::new();
    given("publish", env.publish(ephemeral_publish(&env, &[])));
    assert!(env.path("state/ephemeral/csi-eph").is_dir());
    given("unpublish", env.unpublish(unpublish(&env, "csi-eph")));
    assert!(!env.path("state/ephemeral/csi-eph").exists());
    assert!(!Path::new(&env.target("p1")).exists());
}

#[test]
fn node_stage_volume() {
    type Row = (
        &'static str,
        Prior,
        fn(&Env) -> csi::NodeStageVolumeRequest,
        Want,
    );
    let stage_image: &[&str] = &[
        "attach local/volumes/22222222222222222222222222222222.img -> dev/loop0 autoclear",
        "mount ext4 dev/loop0 -> kubelet/staging/s1",
    ];
    let rows: &[Row] = &[
        (
            "volume_id is required",
            NOTHING,
            |e| csi::NodeStageVolumeRequest {
                volume_id: String::new(),
                ..dir_stage(e)
            },
            Err(Code::InvalidArgument),
        ),
        (
            "staging_target_path is required",
            NOTHING,
            |e| csi::NodeStageVolumeRequest {
                staging_target_path: String::new(),
                ..dir_stage(e)
            },
            Err(Code::InvalidArgument),
        ),
        (
            "a staging path outside the kubelet directory is refused",
            NOTHING,
            |e| csi::NodeStageVolumeRequest {
                staging_target_path: e.path("state").display().to_string(),
                ..dir_stage(e)
            },
            Err(Code::InvalidArgument),
        ),
        (
            "volume_capability is required",
            NOTHING,
            |e| csi::NodeStageVolumeRequest {
                volume_capability: None,
                ..dir_stage(e)
            },
            Err(Code::InvalidArgument),
        ),
        (
            "ephemeral volumes are not staged",
            NOTHING,
            |e| csi::NodeStageVolumeRequest {
                volume_id: "csi-eph".into(),
                volume_context: context(&[("csi.storage.k8s.io/ephemeral", "true")]),
                ..dir_stage(e)
            },
            Err(Code::InvalidArgument),
        ),
        (
            "a directory volume needs no staging",
            NOTHING,
            dir_stage,
            Ok(&[]),
        ),
        (
            "a staging directory that does not exist is NotFound",
            NOTHING,
            |e| csi::NodeStageVolumeRequest {
                staging_target_path: e.kubelet("staging/missing"),
                ..dir_stage(e)
            },
            Err(Code::NotFound),
        ),
        (
            "a local volume of another node is NotFound",
            NOTHING,
            |e| csi::NodeStageVolumeRequest {
                volume_id: format!("local:{IMG_KEY}:node-b"),
                ..image_stage(e)
            },
            Err(Code::NotFound),
        ),
        (
            "an image volume is mounted through an autoclear loop device",
            NOTHING,
            image_stage,
            Ok(stage_image),
        ),
        (
            "an image grown while unstaged is grown offline before the mount",
            |e| e.fake.fs_size(&e.image(), IMAGE_BYTES / 2),
            image_stage,
            Ok(&[
                "attach local/volumes/22222222222222222222222222222222.img -> dev/loop0 autoclear",
                "grow-offline dev/loop0",
                "mount ext4 dev/loop0 -> kubelet/staging/s1",
            ]),
        ),
        (
            "staging an image twice succeeds and mounts nothing",
            |e| given("stage", e.stage(image_stage(e))),
            image_stage,
            Ok(&[]),
        ),
        (
            "a staging path holding another mount is AlreadyExists",
            |e| {
                e.fake
                    .mounted(&e.path("kubelet/staging/s1"), "tmpfs", "tmpfs")
            },
            image_stage,
            Err(Code::AlreadyExists),
        ),
        (
            "a mount the kernel refuses is Internal",
            |e| e.fake.fail("mount", Errno::EINVAL),
            image_stage,
            Err(Code::Internal),
        ),
        (
            "a block volume gets one loop device",
            NOTHING,
            block_stage,
            Ok(&["attach local/volumes/33333333333333333333333333333333.img -> dev/loop0"]),
        ),
        (
            "staging a block volume twice attaches nothing more",
            |e| given("stage", e.stage(block_stage(e))),
            block_stage,
            Ok(&[]),
        ),
        (
            "a directory volume staged as a block device is refused",
            NOTHING,
            |e| csi::NodeStageVolumeRequest {
                volume_capability: block(),
                ..dir_stage(e)
            },
            Err(Code::InvalidArgument),
        ),
        (
            "an NFS export is mounted at the staging path",
            NOTHING,
            nfs_stage,
            Ok(&["mount nfs 127.0.0.1:/export -> kubelet/staging/s1"]),
        ),
        (
            "staging an NFS volume twice succeeds and mounts nothing",
            |e| given("stage", e.stage(nfs_stage(e))),
            nfs_stage,
            Ok(&[]),
        ),
        (
            "another export at the staging path is AlreadyExists",
            |e| given("stage", e.stage(nfs_stage(e))),
            |e| {
                let mut req = nfs_stage(e);
                req.volume_context.insert("share".into(), "/other".into());
                req
            },
            Err(Code::AlreadyExists),
        ),
        (
            "an NFS volume without a server is refused",
            NOTHING,
            |e| {
                let mut req = nfs_stage(e);
                req.volume_context.remove("server");
                req.volume_context.remove("share");
                req
            },
            Err(Code::InvalidArgument),
        ),
        (
            "an NFS server that does not answer is Unavailable",
            |e| e.fake.fail("mount", Errno::ETIMEDOUT),
            nfs_stage,
            Err(Code::Unavailable),
        ),
        (
            "an NFS server that refuses the mount is PermissionDenied",
            |e| e.fake.fail("mount", Errno::EACCES),
            nfs_stage,
            Err(Code::PermissionDenied),
        ),
        (
            "a kernel without an NFS client is FailedPrecondition",
            |e| e.fake.fail("mount", Errno::ENODEV),
            nfs_stage,
            Err(Code::FailedPrecondition),
        ),
    ];
    for (name, prior, request, want) in rows {
        let env = Env::new();
        prior(&env);
        env.effects();
        let got = env.stage(request(&env));
        check(name, &env, got, *want);
    }
}

#[test]
fn node_unstage_volume() {
    type Row = (
        &'static str,
        Prior,
        fn(&Env) -> csi::NodeUnstageVolumeRequest,
        Want,
    );
    let rows: &[Row] = &[
        (
            "volume_id is required",
            NOTHING,
            |e| unstage(e, ""),
            Err(Code::InvalidArgument),
        ),
        (
            "staging_target_path is required",
            NOTHING,
            |_| csi::NodeUnstageVolumeRequest {
                volume_id: "v".into(),
                staging_target_path: String::new(),
            },
            Err(Code::InvalidArgument),
        ),
        (
            "a staging path outside the kubelet directory is refused",
            NOTHING,
            |e| csi::NodeUnstageVolumeRequest {
                staging_target_path: e.path("local").display().to_string(),
                ..unstage(e, "v")
            },
            Err(Code::InvalidArgument),
        ),
        (
            "a staging path that is gone is success",
            NOTHING,
            |e| csi::NodeUnstageVolumeRequest {
                staging_target_path: e.kubelet("staging/gone"),
                ..unstage(e, &local_id(DIR_KEY))
            },
            Ok(&[]),
        ),
        (
            "a staging path with no mount is success",
            NOTHING,
            |e| unstage(e, &local_id(DIR_KEY)),
            Ok(&[]),
        ),
        (
            "a staged image is unmounted (its autoclear device goes with it)",
            |e| given("stage", e.stage(image_stage(e))),
            |e| unstage(e, &local_id(IMG_KEY)),
            Ok(&["unmount kubelet/staging/s1"]),
        ),
        (
            "a staged block volume's loop device is detached",
            |e| given("stage", e.stage(block_stage(e))),
            |e| unstage(e, &local_id(BLK_KEY)),
            Ok(&["detach-loop dev/loop0"]),
        ),
        (
            "unstaging a block volume twice is success",
            |e| {
                given("stage", e.stage(block_stage(e)));
                given("unstage", e.unstage(unstage(e, &local_id(BLK_KEY))));
            },
            |e| unstage(e, &local_id(BLK_KEY)),
            Ok(&[]),
        ),
        (
            "a staged NFS export is unmounted",
            |e| given("stage", e.stage(nfs_stage(e))),
            |e| unstage(e, "nfs-static"),
            Ok(&["unmount kubelet/staging/s1"]),
        ),
        (
            "an unmount the kernel refuses is Internal",
            |e| {
                given("stage", e.stage(image_stage(e)));
                e.fake.fail("unmount", Errno::EPERM);
            },
            |e| unstage(e, &local_id(IMG_KEY)),
            Err(Code::Internal),
        ),
    ];
    for (name, prior, request, want) in rows {
        let env = Env::new();
        prior(&env);
        env.effects();
        let got = env.unstage(request(&env));
        check(name, &env, got, *want);
    }
}

fn expand(e: &Env, volume_path: &str, required: i64) -> csi::NodeExpandVolumeRequest {
    csi::NodeExpandVolumeRequest {
        volume_id: local_id(IMG_KEY),
        volume_path: volume_path.into(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: required,
            limit_bytes: 0,
        }),
        staging_target_path: e.kubelet("staging/s1"),
        ..Default::default()
    }
}

/// An image staged, then enlarged to twice its size by the controller.
fn image_enlarged(e: &Env) {
    given("stage", e.stage(image_stage(e)));
    std::fs::File::options()
        .write(true)
        .open(e.image())
        .and_then(|f| f.set_len(2 * IMAGE_BYTES))
        .expect("grow the image file");
    e.fake.fs_size(&e.image(), IMAGE_BYTES);
}

#[test]
fn node_expand_volume() {
    type Row = (
        &'static str,
        Prior,
        fn(&Env) -> csi::NodeExpandVolumeRequest,
        Result<(i64, &'static [&'static str]), Code>,
    );
    let doubled = 2 * IMAGE_BYTES as i64;
    let rows: &[Row] = &[
        (
            "volume_id is required",
            NOTHING,
            |e| csi::NodeExpandVolumeRequest {
                volume_id: String::new(),
                ..expand(e, &e.kubelet("staging/s1"), 1)
            },
            Err(Code::InvalidArgument),
        ),
        (
            "volume_path is required",
            NOTHING,
            |e| expand(e, "", 1),
            Err(Code::InvalidArgument),
        ),
        (
            "a volume path that does not exist is NotFound",
            NOTHING,
            |e| expand(e, &e.kubelet("pods/none/mount"), 1),
            Err(Code::NotFound),
        ),
        (
            "a directory has nothing to grow: the requested size is the answer",
            |e| given("publish", e.publish(dir_publish(e, "p1"))),
            |e| expand(e, &e.target("p1"), 5 << 20),
            Ok((5 << 20, &[])),
        ),
        (
            "an image the controller enlarged is grown online",
            image_enlarged,
            |e| expand(e, &e.kubelet("staging/s1"), 2 * IMAGE_BYTES as i64),
            Ok((
                doubled,
                &["set-capacity dev/loop0", "grow-online dev/loop0"],
            )),
        ),
        (
            "an image already at its file's size is left alone",
            |e| given("stage", e.stage(image_stage(e))),
            |e| expand(e, &e.kubelet("staging/s1"), 1),
            Ok((IMAGE_BYTES as i64, &["set-capacity dev/loop0"])),
        ),
        (
            "an image at its size needs no CAP_SYS_RESOURCE",
            |e| {
                given("stage", e.stage(image_stage(e)));
                e.fake.without_cap_sys_resource();
            },
            |e| expand(e, &e.kubelet("staging/s1"), 1),
            Ok((IMAGE_BYTES as i64, &["set-capacity dev/loop0"])),
        ),
        (
            "growth without CAP_SYS_RESOURCE is PermissionDenied",
            |e| {
                image_enlarged(e);
                e.fake.without_cap_sys_resource();
            },
            |e| expand(e, &e.kubelet("staging/s1"), 2 * IMAGE_BYTES as i64),
            Err(Code::PermissionDenied),
        ),
    ];
    for (name, prior, request, want) in rows {
        let env = Env::new();
        prior(&env);
        env.effects();
        let got = env
            .expand(request(&env))
            .map(|bytes| (bytes, env.effects()));
        let want = (*want)
            .map(|(bytes, effects)| (bytes, effects.iter().map(|s| s.to_string()).collect()));
        assert_eq!(got, want, "row: {name}");
    }
}

fn stats(volume_id: &str, volume_path: &str) -> csi::NodeGetVolumeStatsRequest {
    csi::NodeGetVolumeStatsRequest {
        volume_id: volume_id.into(),
        volume_path: volume_path.into(),
        staging_target_path: String::new(),
    }
}

/// A stats answer reduced to what a row checks: the byte and inode usage as
/// (available, total, used), whether the volume is abnormal, and the effects.
type Stats = ((i64, i64, i64), (i64, i64, i64), bool, Vec<String>);

fn summary(env: &Env, r: csi::NodeGetVolumeStatsResponse) -> Stats {
    let figures = |unit: csi::volume_usage::Unit| {
        r.usage
            .iter()
            .find(|u| u.unit == unit as i32)
            .map(|u| (u.available, u.total, u.used))
            .unwrap_or_default()
    };
    (
        figures(csi::volume_usage::Unit::Bytes),
        figures(csi::volume_usage::Unit::Inodes),
        r.volume_condition.is_some_and(|c| c.abnormal),
        env.effects(),
    )
}

#[test]
fn node_get_volume_stats() {
    type Row = (
        &'static str,
        Prior,
        fn(&Env) -> csi::NodeGetVolumeStatsRequest,
        Result<(bool, &'static [&'static str]), Code>,
    );
    let rows: &[Row] = &[
        (
            "volume_id is required",
            NOTHING,
            |e| stats("", &e.target("p1")),
            Err(Code::InvalidArgument),
        ),
        (
            "volume_path is required",
            NOTHING,
            |_| stats("v", ""),
            Err(Code::InvalidArgument),
        ),
        (
            "a volume path that does not exist is NotFound",
            NOTHING,
            |e| stats(&local_id(DIR_KEY), &e.target("p1")),
            Err(Code::NotFound),
        ),
        (
            "a volume this node does not know, with nothing mounted, is NotFound",
            |e| std::fs::create_dir_all(e.target("p1")).expect("mkdir"),
            |e| stats("not-ours", &e.target("p1")),
            Err(Code::NotFound),
        ),
        (
            "a published volume is reported, its condition normal",
            |e| given("publish", e.publish(dir_publish(e, "p1"))),
            |e| stats(&local_id(DIR_KEY), &e.target("p1")),
            Ok((false, &[])),
        ),
        (
            "a Stowage volume no longer mounted is abnormal",
            |e| std::fs::create_dir_all(e.target("p1")).expect("mkdir"),
            |e| stats(&local_id(DIR_KEY), &e.target("p1")),
            Ok((true, &[])),
        ),
        (
            "an ephemeral volume with data here is known",
            |e| given("publish", e.publish(ephemeral_publish(e, &[]))),
            |e| stats("csi-eph", &e.target("p1")),
            Ok((false, &[])),
        ),
        (
            "a stale NFS volume is mounted again in place, and reported abnormal",
            |e| {
                given("stage", e.stage(nfs_stage(e)));
                std::fs::create_dir(e.path("kubelet/staging/s1/pvc-1")).expect("mkdir");
                given("publish", e.publish(nfs_publish(e)));
                e.fake.stale(&e.path("kubelet/staging/s1"));
                e.fake.stale(Path::new(&e.target("p1")));
            },
            |e| stats("nfs-static", &e.target("p1")),
            Ok((
                true,
                &[
                    "detach kubelet/staging/s1",
                    "mount nfs 127.0.0.1:/export -> kubelet/staging/s1",
                    "detach kubelet/pods/p1/mount",
                    "bind kubelet/staging/s1/pvc-1 -> kubelet/pods/p1/mount",
                ],
            )),
        ),
    ];
    // The fake's statvfs: 1000 blocks of 4096, 600 free, 500 available; 100 inodes,
    // 40 free, 30 available.
    let bytes = (500 * 4096, 1000 * 4096, 400 * 4096);
    let inodes = (30, 100, 60);
    for (name, prior, request, want) in rows {
        let env = Env::new();
        prior(&env);
        env.effects();
        let got = env.stats(request(&env)).map(|r| summary(&env, r));
        let want = (*want).map(|(abnormal, effects)| {
            let effects = effects.iter().map(|s| s.to_string()).collect();
            (bytes, inodes, abnormal, effects)
        });
        assert_eq!(got, want, "row: {name}");
    }
}

#[test]
fn node_get_info_and_capabilities() {
    let env = Env::new();
    let info = env
        .runtime
        .block_on(
            env.node
                .node_get_info(Request::new(csi::NodeGetInfoRequest {})),
        )
        .expect("info")
        .into_inner();
    let capabilities = env
        .runtime
        .block_on(
            env.node
                .node_get_capabilities(Request::new(csi::NodeGetCapabilitiesRequest {})),
        )
        .expect("capabilities")
        .into_inner();
    let advertised: Vec<i32> = capabilities
        .capabilities
        .iter()
        .filter_map(|c| {
            let csi::node_service_capability::Type::Rpc(rpc) = c.r#type.as_ref()?;
            Some(rpc.r#type)
        })
        .collect();
    use csi::node_service_capability::rpc::Type as Cap;
    let segments = info.accessible_topology.map(|t| t.segments);
    let rows: &[(&str, bool)] = &[
        ("the node ID is the configured one", info.node_id == NODE),
        (
            "the volume limit is the configured one",
            info.max_volumes_per_node == 16,
        ),
        (
            "the topology names this node under the driver's key",
            segments
                .as_ref()
                .and_then(|s| s.get(driver_contract::TOPOLOGY_NODE_KEY))
                == Some(&NODE.to_string()),
        ),
        (
            "staging is advertised (image, block and NFS volumes need it)",
            advertised.contains(&(Cap::StageUnstageVolume as i32)),
        ),
        (
            "volume stats are advertised",
            advertised.contains(&(Cap::GetVolumeStats as i32)),
        ),
        (
            "volume condition is advertised (stats report it)",
            advertised.contains(&(Cap::VolumeCondition as i32)),
        ),
        (
            "expansion is advertised",
            advertised.contains(&(Cap::ExpandVolume as i32)),
        ),
        (
            "single-node multi-writer is advertised",
            advertised.contains(&(Cap::SingleNodeMultiWriter as i32)),
        ),
        (
            "volume_mount_group is advertised (fsGroup applied here, not by kubelet)",
            advertised.contains(&(Cap::VolumeMountGroup as i32)),
        ),
        ("nothing else is advertised", advertised.len() == 6),
    ];
    for (name, holds) in rows {
        assert!(holds, "row: {name}");
    }
}
