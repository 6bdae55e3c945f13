//! Table-driven checks of the Node service's rules, one CSI rule per row: argument
//! checks, idempotency and conflicts of each RPC. Paths are temporary directories; the
//! host is [`FakeMounts`], so a row's outcome is a gRPC code or the list of effects the
//! call made (paths relative to the row's directory). The real-mount tests are
//! tests/tests/node*.rs.
//!
//! A row states only what differs from its table's usual call: its request is an [`Ask`]
//! (a directory volume published at `p1` unless it says otherwise) and its prior state is
//! none unless it names one.

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

use Code::{AlreadyExists, FailedPrecondition, Internal, InvalidArgument, NotFound};
use Code::{PermissionDenied, Unavailable};
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
const GROUP: &str = "4242";
/// Where a row publishes and stages, relative to its directory.
const TARGET: &str = "kubelet/pods/p1/mount";
const STAGING: &str = "kubelet/staging/s1";
/// The image volume's loop device, as staging attaches it.
const ATTACH_IMAGE: &str =
    "attach local/volumes/22222222222222222222222222222222.img -> dev/loop0 autoclear";

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

/// What a call that changes the host gives back: the effects it made, or its code.
type Outcome = Result<Vec<String>, Code>;

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

    /// A path a row names relative to the directory, as a request carries it: absolute,
    /// or empty when the row leaves it empty.
    fn at(&self, relative: &str) -> String {
        if relative.is_empty() {
            return String::new();
        }
        self.path(relative).display().to_string()
    }

    fn target(&self, pod: &str) -> PathBuf {
        self.path(&format!("kubelet/pods/{pod}/mount"))
    }

    fn image_file(&self) -> PathBuf {
        self.path(&format!("local/volumes/{IMG_KEY}.img"))
    }

    /// A row's volume context, `<root>` in a value standing for the directory.
    fn context(&self, ask: &Ask) -> HashMap<String, String> {
        let root = self.root.display().to_string();
        let resolve = |(k, v): (&String, &String)| (k.clone(), v.replace("<root>", &root));
        ask.context.iter().map(resolve).collect()
    }

    fn answer<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Code> {
        let answer = self.runtime.block_on(call);
        answer
            .map(tonic::Response::into_inner)
            .map_err(|s| s.code())
    }

    fn stage(&self, ask: Ask) -> Outcome {
        let request = csi::NodeStageVolumeRequest {
            staging_target_path: self.at(&ask.staging),
            volume_context: self.context(&ask),
            volume_id: ask.volume_id,
            volume_capability: ask.capability,
            ..Default::default()
        };
        let call = self.node.node_stage_volume(Request::new(request));
        self.answer(call).map(|_| self.effects())
    }

    fn unstage(&self, ask: Ask) -> Outcome {
        let request = csi::NodeUnstageVolumeRequest {
            volume_id: ask.volume_id,
            staging_target_path: self.at(&ask.staging),
        };
        let call = self.node.node_unstage_volume(Request::new(request));
        self.answer(call).map(|_| self.effects())
    }

    fn publish(&self, ask: Ask) -> Outcome {
        let request = csi::NodePublishVolumeRequest {
            target_path: self.at(&ask.target),
            staging_target_path: self.at(&ask.staging),
            volume_context: self.context(&ask),
            volume_id: ask.volume_id,
            volume_capability: ask.capability,
            readonly: ask.readonly,
            ..Default::default()
        };
        let call = self.node.node_publish_volume(Request::new(request));
        self.answer(call).map(|_| self.effects())
    }

    fn unpublish(&self, ask: Ask) -> Outcome {
        let request = csi::NodeUnpublishVolumeRequest {
            volume_id: ask.volume_id,
            target_path: self.at(&ask.target),
        };
        let call = self.node.node_unpublish_volume(Request::new(request));
        self.answer(call).map(|_| self.effects())
    }

    /// NodeExpandVolume of the row's target (its volume path) to its `bytes`: the
    /// capacity answered, and the effects.
    fn expand(&self, ask: Ask) -> Result<(i64, Vec<String>), Code> {
        let request = csi::NodeExpandVolumeRequest {
            volume_path: self.at(&ask.target),
            staging_target_path: self.at(&ask.staging),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: ask.bytes,
                limit_bytes: 0,
            }),
            volume_id: ask.volume_id,
            ..Default::default()
        };
        let call = self.node.node_expand_volume(Request::new(request));
        let answer = self.answer(call);
        answer.map(|r| (r.capacity_bytes, self.effects()))
    }

    /// NodeGetVolumeStats of the row's target (its volume path), with no staging path.
    fn stats(&self, ask: Ask) -> Result<Stats, Code> {
        let request = csi::NodeGetVolumeStatsRequest {
            volume_path: self.at(&ask.target),
            volume_id: ask.volume_id,
            staging_target_path: String::new(),
        };
        let call = self.node.node_get_volume_stats(Request::new(request));
        self.answer(call).map(|r| summary(self, r))
    }

    /// The effects so far, paths relative to the directory.
    fn effects(&self) -> Vec<String> {
        self.fake.take_effects()
    }
}

/// A step that must work: the state a row starts from.
fn given<T>(what: &str, result: Result<T, Code>) {
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

/// A single-node-writer mount capability whose volume_mount_group is `group`.
fn mount_group(group: &str) -> Option<VolumeCapability> {
    Some(VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            volume_mount_group: group.into(),
            ..MountVolume::default()
        })),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    })
}

fn block_capability() -> Option<VolumeCapability> {
    Some(VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    })
}

const RWO: Mode = Mode::SingleNodeWriter;
const SINGLE_WRITER: Mode = Mode::SingleNodeSingleWriter;
const NFS: &[(&str, &str)] = &[
    ("type", "nfs"),
    ("server", "127.0.0.1"),
    ("share", "/export"),
    ("subDir", "pvc-1"),
];

// ---- what a row asks for ---------------------------------------------------------------

/// A row's request, for whichever RPC its table calls: each takes the fields it has
/// (stats and expansion read `target` as the volume path). Paths are relative to the
/// row's directory; an empty one stays empty.
#[derive(Clone)]
struct Ask {
    volume_id: String,
    target: String,
    staging: String,
    capability: Option<VolumeCapability>,
    context: HashMap<String, String>,
    readonly: bool,
    bytes: i64,
}

/// The directory volume, RWO, published at `p1` from the usual staging path.
fn dir() -> Ask {
    Ask {
        volume_id: local_id(DIR_KEY),
        target: TARGET.into(),
        staging: STAGING.into(),
        capability: mount(RWO),
        context: context(&[("type", "local")]),
        readonly: false,
        bytes: 0,
    }
}

fn image() -> Ask {
    Ask {
        volume_id: local_id(IMG_KEY),
        context: context(&[("type", "local"), ("layout", "image")]),
        ..dir()
    }
}

fn block() -> Ask {
    Ask {
        volume_id: local_id(BLK_KEY),
        capability: block_capability(),
        context: context(&[("type", "local"), ("layout", "block")]),
        ..dir()
    }
}

/// An ephemeral volume (never staged) with more context.
fn ephemeral(extra: &[(&str, &str)]) -> Ask {
    let mut ask = Ask {
        volume_id: "csi-eph".into(),
        staging: String::new(),
        context: context(&[("csi.storage.k8s.io/ephemeral", "true")]),
        ..dir()
    };
    ask.context.extend(context(extra));
    ask
}

fn nfs() -> Ask {
    Ask {
        volume_id: "nfs-static".into(),
        context: context(NFS),
        ..dir()
    }
}

/// A hostPath volume of `path` (relative to the row's directory) and `kind`.
fn host_path(path: &str, kind: &str) -> Ask {
    let path = format!("<root>/{path}");
    Ask {
        volume_id: "hp".into(),
        context: context(&[("path", &path), ("hostPathType", kind)]),
        ..dir()
    }
}

/// Expansion of the staged image to `bytes`, its staging path the volume path.
fn grow(bytes: i64) -> Ask {
    Ask {
        target: STAGING.into(),
        bytes,
        ..image()
    }
}

impl Ask {
    fn id(self, volume_id: &str) -> Self {
        Self {
            volume_id: volume_id.into(),
            ..self
        }
    }

    fn target(self, target: &str) -> Self {
        Self {
            target: target.into(),
            ..self
        }
    }

    fn staging(self, staging: &str) -> Self {
        Self {
            staging: staging.into(),
            ..self
        }
    }

    fn capability(self, capability: Option<VolumeCapability>) -> Self {
        Self { capability, ..self }
    }

    /// A mount capability of `mode`.
    fn mode(self, mode: Mode) -> Self {
        self.capability(mount(mode))
    }

    fn read_only(self) -> Self {
        Self {
            readonly: true,
            ..self
        }
    }

    /// The context with `key` set to `value`.
    fn with(mut self, key: &str, value: &str) -> Self {
        self.context.insert(key.into(), value.into());
        self
    }

    /// The context without `key`.
    fn without(mut self, key: &str) -> Self {
        self.context.remove(key);
        self
    }
}

// ---- the states rows start from -------------------------------------------------------

/// The state a row starts from, made through the service itself where it can be.
type Prior = fn(&Env);

fn published(e: &Env) {
    given("publish", e.publish(dir()));
}

fn published_at_p2(e: &Env) {
    given(
        "publish at p2",
        e.publish(dir().target("kubelet/pods/p2/mount")),
    );
}

fn published_with_group(e: &Env) {
    given(
        "publish with a group",
        e.publish(dir().capability(mount_group(GROUP))),
    );
}

fn single_writer_at_p2(e: &Env) {
    let ask = dir().target("kubelet/pods/p2/mount").mode(SINGLE_WRITER);
    given("publish at p2", e.publish(ask));
}

fn published_ephemeral(e: &Env) {
    given("publish", e.publish(ephemeral(&[])));
}

fn staged_image(e: &Env) {
    given("stage", e.stage(image()));
}

fn staged_block(e: &Env) {
    given("stage", e.stage(block()));
}

fn staged_nfs(e: &Env) {
    given("stage", e.stage(nfs()));
}

/// The export staged, the volume's subdirectory in it.
fn staged_nfs_with_data(e: &Env) {
    staged_nfs(e);
    std::fs::create_dir(e.path("kubelet/staging/s1/pvc-1")).expect("mkdir");
}

/// The target directory made, nothing mounted on it.
fn target_made(e: &Env) {
    std::fs::create_dir_all(e.target("p1")).expect("mkdir");
}

/// An image staged, then enlarged to twice its size by the controller.
fn image_enlarged(e: &Env) {
    staged_image(e);
    std::fs::File::options()
        .write(true)
        .open(e.image_file())
        .and_then(|f| f.set_len(2 * IMAGE_BYTES))
        .expect("grow the image file");
    e.fake.fs_size(&e.image_file(), IMAGE_BYTES);
}

// ---- rows and the loop that walks them ------------------------------------------------

/// One rule: its name, the state it starts from, its request and what it expects.
struct Row<W> {
    name: &'static str,
    prior: Prior,
    ask: Ask,
    want: W,
}

impl<W> Row<W> {
    /// A row that starts from nothing; [`after`](Row::after) names another start.
    fn new(name: &'static str, ask: Ask, want: W) -> Self {
        Self {
            name,
            prior: |_| {},
            ask,
            want,
        }
    }

    fn after(self, prior: Prior) -> Self {
        Self { prior, ..self }
    }
}

/// Effects a row expects, paths relative to its directory.
type Effects = &'static [&'static str];
/// What a row expects of a call that changes the host: its effects, or its code.
type Want = Result<Effects, Code>;
/// What an expansion row expects: the capacity answered and the effects, or the code.
type WantSized = Result<(i64, Effects), Code>;
/// What a stats row expects: whether the volume is abnormal and the effects, or the code.
type WantReport = Result<(bool, Effects), Code>;

// One constructor per kind of want, so that a row's slices take the want's type.
fn row(name: &'static str, ask: Ask, want: Want) -> Row<Want> {
    Row::new(name, ask, want)
}

fn row_sized(name: &'static str, ask: Ask, want: WantSized) -> Row<WantSized> {
    Row::new(name, ask, want)
}

fn row_reported(name: &'static str, ask: Ask, want: WantReport) -> Row<WantReport> {
    Row::new(name, ask, want)
}

fn strings(effects: &[&str]) -> Vec<String> {
    effects.iter().map(|s| s.to_string()).collect()
}

fn effects(want: Want) -> Outcome {
    want.map(strings)
}

/// Runs each row on a new [`Env`]: its prior state (whose effects are dropped), then
/// `call` of its request, whose answer must be `expected` of its want.
fn run<W: Copy, O: PartialEq + Debug>(
    rows: Vec<Row<W>>,
    call: impl Fn(&Env, Ask) -> O,
    expected: impl Fn(W) -> O,
) {
    for row in rows {
        let env = Env::new();
        (row.prior)(&env);
        env.effects();
        let got = call(&env, row.ask);
        assert_eq!(got, expected(row.want), "row: {}", row.name);
    }
}

#[test]
fn node_publish_volume() {
    let bind_dir: &[&str] =
        &["bind local/volumes/0123456789abcdef0123456789abcdef -> kubelet/pods/p1/mount"];
    let rows: Vec<Row<Want>> = vec![
        row("volume_id is required", dir().id(""), Err(InvalidArgument)),
        row(
            "target_path is required",
            dir().target(""),
            Err(InvalidArgument),
        ),
        row(
            "a target_path outside the kubelet directory is refused",
            dir().target("elsewhere/mount"),
            Err(InvalidArgument),
        ),
        row(
            "a target_path with '..' is refused",
            dir().target("kubelet/pods/../../escape"),
            Err(InvalidArgument),
        ),
        row(
            "volume_capability is required",
            dir().capability(None),
            Err(InvalidArgument),
        ),
        row(
            "an access mode is required",
            dir().mode(Mode::Unknown),
            Err(InvalidArgument),
        ),
        row(
            "a volume_mount_group that is not a gid is refused",
            dir().capability(mount_group("wheel")),
            Err(InvalidArgument),
        ),
        row(
            "a volume context naming no type is refused",
            dir().without("type"),
            Err(InvalidArgument),
        ),
        row(
            "a local volume of another node is NotFound",
            dir().id(&format!("local:{DIR_KEY}:node-b")),
            Err(NotFound),
        ),
        row(
            "a local volume without data here is NotFound",
            dir().id(&local_id("44444444444444444444444444444444")),
            Err(NotFound),
        ),
        row(
            "a directory volume is bound at the target",
            dir(),
            Ok(bind_dir),
        ),
        row(
            "a read-only publish is bound read-only",
            dir().read_only(),
            Ok(&[
                "bind local/volumes/0123456789abcdef0123456789abcdef -> kubelet/pods/p1/mount ro",
            ]),
        ),
        row(
            "publishing again with the same arguments succeeds and mounts nothing",
            dir(),
            Ok(&[]),
        )
        .after(published),
        row(
            "the same volume at the same target read-only is AlreadyExists",
            dir().read_only(),
            Err(AlreadyExists),
        )
        .after(published),
        row(
            "another volume at a published target is AlreadyExists",
            dir().id(&local_id(OTHER_DIR_KEY)),
            Err(AlreadyExists),
        )
        .after(published),
        row(
            "another volume_mount_group at a published target is AlreadyExists",
            dir().capability(mount_group("5151")),
            Err(AlreadyExists),
        )
        .after(published_with_group),
        row(
            "the same volume_mount_group again succeeds",
            dir().capability(mount_group(GROUP)),
            Ok(&[]),
        )
        .after(published_with_group),
        row(
            "a single-writer volume published at another target is FailedPrecondition",
            dir().mode(SINGLE_WRITER),
            Err(FailedPrecondition),
        )
        .after(single_writer_at_p2),
        row(
            "a single-node-writer volume may be published at a second target",
            dir(),
            Ok(bind_dir),
        )
        .after(published_at_p2),
        row(
            "a single-writer volume whose other target was unmounted behind our back is published",
            dir().mode(SINGLE_WRITER),
            Ok(bind_dir),
        )
        .after(|e| {
            single_writer_at_p2(e);
            e.fake.unmount(&e.target("p2")).expect("unmount p2");
        }),
        row(
            "an image volume not staged is FailedPrecondition",
            image(),
            Err(FailedPrecondition),
        ),
        row(
            "a staged image volume is bound from its staging mount",
            image(),
            Ok(&["bind kubelet/staging/s1 -> kubelet/pods/p1/mount"]),
        )
        .after(staged_image),
        row(
            "a block volume not staged is FailedPrecondition",
            block(),
            Err(FailedPrecondition),
        ),
        row(
            "a staged block volume's loop device is bound at the target",
            block(),
            Ok(&["bind dev/loop0 -> kubelet/pods/p1/mount"]),
        )
        .after(staged_block),
        row(
            "a block volume published as a filesystem is refused",
            block().mode(RWO),
            Err(InvalidArgument),
        )
        .after(staged_block),
        row(
            "an ephemeral volume gets new scratch data",
            ephemeral(&[]),
            Ok(&["bind state/ephemeral/csi-eph -> kubelet/pods/p1/mount"]),
        ),
        row(
            "a memory ephemeral volume is a tmpfs of its size limit",
            ephemeral(&[("medium", "Memory"), ("sizeLimit", "1Mi")]),
            Ok(&["tmpfs kubelet/pods/p1/mount size=1048576"]),
        ),
        row(
            "a memory ephemeral volume's tmpfs belongs to the volume_mount_group",
            ephemeral(&[("medium", "Memory")]).capability(mount_group(GROUP)),
            Ok(&["tmpfs kubelet/pods/p1/mount size=0 gid=4242"]),
        ),
        row(
            "a memory ephemeral volume published again succeeds",
            ephemeral(&[("medium", "Memory")]),
            Ok(&[]),
        )
        .after(|e| given("publish", e.publish(ephemeral(&[("medium", "Memory")])))),
        row(
            "an ephemeral volume with an unknown medium is refused",
            ephemeral(&[("medium", "Disk")]),
            Err(InvalidArgument),
        ),
        row(
            "an ephemeral volume ID that is not a name is refused",
            ephemeral(&[]).id("../etc"),
            Err(InvalidArgument),
        ),
        row(
            "a hostPath under an allowed prefix is bound",
            host_path("host/data", "DirectoryOrCreate"),
            Ok(&["bind host/data -> kubelet/pods/p1/mount"]),
        ),
        row(
            "a hostPath outside the allowed prefixes is PermissionDenied",
            host_path("state", "Directory"),
            Err(PermissionDenied),
        ),
        row(
            "a hostPath that does not exist is NotFound",
            host_path("host/missing", "Directory"),
            Err(NotFound),
        ),
        row(
            "an NFS volume is bound from its subdirectory of the staged export",
            nfs(),
            Ok(&["bind kubelet/staging/s1/pvc-1 -> kubelet/pods/p1/mount"]),
        )
        .after(staged_nfs_with_data),
        row(
            "an NFS volume whose subdirectory is not in the export is NotFound",
            nfs(),
            Err(NotFound),
        )
        .after(staged_nfs),
        row(
            "an NFS volume not staged is FailedPrecondition",
            nfs(),
            Err(FailedPrecondition),
        ),
        row(
            "a bind the kernel refuses is Internal",
            dir(),
            Err(Internal),
        )
        .after(|e| e.fake.fail("bind", Errno::EPERM)),
    ];
    run(rows, Env::publish, effects);
}

#[test]
fn a_failed_publish_leaves_no_target_and_no_scratch_data() {
    let env = Env::new();
    env.fake.fail("bind", Errno::EPERM);
    assert_eq!(env.publish(ephemeral(&[])), Err(Internal));
    assert!(!env.target("p1").exists(), "target left behind");
    assert!(
        !env.path("state/ephemeral/csi-eph").exists(),
        "scratch data left behind"
    );
}

#[test]
fn node_unpublish_volume() {
    let rows: Vec<Row<Want>> = vec![
        row("volume_id is required", dir().id(""), Err(InvalidArgument)),
        row(
            "target_path is required",
            dir().id("v").target(""),
            Err(InvalidArgument),
        ),
        row(
            "a target_path outside the kubelet directory is refused",
            dir().id("v").target("state/x"),
            Err(InvalidArgument),
        ),
        row("a target that does not exist is success", dir(), Ok(&[])),
        row("a target that is no mount is removed", dir(), Ok(&[])).after(target_made),
        row(
            "a published target is unmounted",
            dir(),
            Ok(&["unmount kubelet/pods/p1/mount"]),
        )
        .after(published),
        row("unpublishing twice is success", dir(), Ok(&[])).after(|e| {
            published(e);
            given("unpublish", e.unpublish(dir()));
        }),
        row(
            "mounts stacked at the target all go",
            dir(),
            Ok(&[
                "unmount kubelet/pods/p1/mount",
                "unmount kubelet/pods/p1/mount",
            ]),
        )
        .after(|e| {
            published(e);
            e.fake.mounted(&e.target("p1"), "tmpfs", "tmpfs");
        }),
        row(
            "a busy target has the mounts below it unmounted first",
            dir(),
            Ok(&[
                "unmount kubelet/pods/p1/mount (busy)",
                "unmount kubelet/pods/p1/mount/inner",
                "unmount kubelet/pods/p1/mount",
            ]),
        )
        .after(|e| {
            published(e);
            e.fake
                .mounted(&e.target("p1").join("inner"), "tmpfs", "tmpfs");
            e.fake.busy(&e.target("p1"), 1);
        }),
        row("a target that stays busy is Internal", dir(), Err(Internal)).after(|e| {
            published(e);
            e.fake.busy(&e.target("p1"), 100);
        }),
        row(
            "an ephemeral volume is unmounted",
            ephemeral(&[]),
            Ok(&["unmount kubelet/pods/p1/mount"]),
        )
        .after(published_ephemeral),
    ];
    run(rows, Env::unpublish, effects);
}

#[test]
fn unpublishing_an_ephemeral_volume_removes_its_data_and_target() {
    let env = Env::new();
    published_ephemeral(&env);
    assert!(env.path("state/ephemeral/csi-eph").is_dir());
    given("unpublish", env.unpublish(ephemeral(&[])));
    assert!(!env.path("state/ephemeral/csi-eph").exists());
    assert!(!env.target("p1").exists());
}

#[test]
fn node_stage_volume() {
    let stage_image: &[&str] = &[ATTACH_IMAGE, "mount ext4 dev/loop0 -> kubelet/staging/s1"];
    let rows: Vec<Row<Want>> = vec![
        row("volume_id is required", dir().id(""), Err(InvalidArgument)),
        row(
            "volume_capability is required",
            dir().capability(None),
            Err(InvalidArgument),
        ),
        row(
            "staging_target_path is required",
            dir().staging(""),
            Err(InvalidArgument),
        ),
        row(
            "a staging path outside the kubelet directory is refused",
            dir().staging("state"),
            Err(InvalidArgument),
        ),
        row(
            "ephemeral volumes are not staged",
            ephemeral(&[]).staging(STAGING),
            Err(InvalidArgument),
        ),
        row("a directory volume needs no staging", dir(), Ok(&[])),
        row(
            "a staging directory that does not exist is NotFound",
            dir().staging("kubelet/staging/missing"),
            Err(NotFound),
        ),
        row(
            "a local volume of another node is NotFound",
            image().id(&format!("local:{IMG_KEY}:node-b")),
            Err(NotFound),
        ),
        row(
            "an image volume is mounted through an autoclear loop device",
            image(),
            Ok(stage_image),
        ),
        row(
            "an image grown while unstaged is grown offline before the mount",
            image(),
            Ok(&[
                ATTACH_IMAGE,
                "grow-offline dev/loop0",
                "mount ext4 dev/loop0 -> kubelet/staging/s1",
            ]),
        )
        .after(|e| e.fake.fs_size(&e.image_file(), IMAGE_BYTES / 2)),
        row(
            "staging an image twice succeeds and mounts nothing",
            image(),
            Ok(&[]),
        )
        .after(staged_image),
        row(
            "a staging path holding another mount is AlreadyExists",
            image(),
            Err(AlreadyExists),
        )
        .after(|e| e.fake.mounted(&e.path(STAGING), "tmpfs", "tmpfs")),
        row(
            "a mount the kernel refuses is Internal",
            image(),
            Err(Internal),
        )
        .after(|e| e.fake.fail("mount", Errno::EINVAL)),
        row(
            "a block volume gets one loop device",
            block(),
            Ok(&["attach local/volumes/33333333333333333333333333333333.img -> dev/loop0"]),
        ),
        row(
            "staging a block volume twice attaches nothing more",
            block(),
            Ok(&[]),
        )
        .after(staged_block),
        row(
            "a directory volume staged as a block device is refused",
            dir().capability(block_capability()),
            Err(InvalidArgument),
        ),
        row(
            "an NFS export is mounted at the staging path",
            nfs(),
            Ok(&["mount nfs 127.0.0.1:/export -> kubelet/staging/s1"]),
        ),
        row(
            "staging an NFS volume twice succeeds and mounts nothing",
            nfs(),
            Ok(&[]),
        )
        .after(staged_nfs),
        row(
            "another export at the staging path is AlreadyExists",
            nfs().with("share", "/other"),
            Err(AlreadyExists),
        )
        .after(staged_nfs),
        row(
            "an NFS volume without a server is refused",
            nfs().without("server").without("share"),
            Err(InvalidArgument),
        ),
        row(
            "an NFS server that does not answer is Unavailable",
            nfs(),
            Err(Unavailable),
        )
        .after(|e| e.fake.fail("mount", Errno::ETIMEDOUT)),
        row(
            "an NFS server that refuses the mount is PermissionDenied",
            nfs(),
            Err(PermissionDenied),
        )
        .after(|e| e.fake.fail("mount", Errno::EACCES)),
        row(
            "a kernel without an NFS client is FailedPrecondition",
            nfs(),
            Err(FailedPrecondition),
        )
        .after(|e| e.fake.fail("mount", Errno::ENODEV)),
    ];
    run(rows, Env::stage, effects);
}

#[test]
fn node_unstage_volume() {
    let rows: Vec<Row<Want>> = vec![
        row("volume_id is required", dir().id(""), Err(InvalidArgument)),
        row(
            "staging_target_path is required",
            dir().id("v").staging(""),
            Err(InvalidArgument),
        ),
        row(
            "a staging path outside the kubelet directory is refused",
            dir().id("v").staging("local"),
            Err(InvalidArgument),
        ),
        row(
            "a staging path that is gone is success",
            dir().staging("kubelet/staging/gone"),
            Ok(&[]),
        ),
        row("a staging path with no mount is success", dir(), Ok(&[])),
        row(
            "a staged image is unmounted (its autoclear device goes with it)",
            image(),
            Ok(&["unmount kubelet/staging/s1"]),
        )
        .after(staged_image),
        row(
            "a staged block volume's loop device is detached",
            block(),
            Ok(&["detach-loop dev/loop0"]),
        )
        .after(staged_block),
        row(
            "unstaging a block volume twice is success",
            block(),
            Ok(&[]),
        )
        .after(|e| {
            staged_block(e);
            given("unstage", e.unstage(block()));
        }),
        row(
            "a staged NFS export is unmounted",
            nfs(),
            Ok(&["unmount kubelet/staging/s1"]),
        )
        .after(staged_nfs),
        row(
            "an unmount the kernel refuses is Internal",
            image(),
            Err(Internal),
        )
        .after(|e| {
            staged_image(e);
            e.fake.fail("unmount", Errno::EPERM);
        }),
    ];
    run(rows, Env::unstage, effects);
}

#[test]
fn node_expand_volume() {
    let doubled = 2 * IMAGE_BYTES as i64;
    let at_size = IMAGE_BYTES as i64;
    let rows: Vec<Row<WantSized>> = vec![
        row_sized(
            "volume_id is required",
            grow(1).id(""),
            Err(InvalidArgument),
        ),
        row_sized(
            "volume_path is required",
            grow(1).target(""),
            Err(InvalidArgument),
        ),
        row_sized(
            "a volume path that does not exist is NotFound",
            grow(1).target("kubelet/pods/none/mount"),
            Err(NotFound),
        ),
        row_sized(
            "a directory has nothing to grow: the requested size is the answer",
            grow(5 << 20).target(TARGET),
            Ok((5 << 20, &[])),
        )
        .after(published),
        row_sized(
            "an image the controller enlarged is grown online",
            grow(doubled),
            Ok((
                doubled,
                &["set-capacity dev/loop0", "grow-online dev/loop0"],
            )),
        )
        .after(image_enlarged),
        row_sized(
            "an image already at its file's size is left alone",
            grow(1),
            Ok((at_size, &["set-capacity dev/loop0"])),
        )
        .after(staged_image),
        row_sized(
            "an image at its size needs no CAP_SYS_RESOURCE",
            grow(1),
            Ok((at_size, &["set-capacity dev/loop0"])),
        )
        .after(|e| {
            staged_image(e);
            e.fake.without_cap_sys_resource();
        }),
        row_sized(
            "growth without CAP_SYS_RESOURCE is PermissionDenied",
            grow(doubled),
            Err(PermissionDenied),
        )
        .after(|e| {
            image_enlarged(e);
            e.fake.without_cap_sys_resource();
        }),
    ];
    let expected = |want: WantSized| want.map(|(b, e)| (b, strings(e)));
    run(rows, Env::expand, expected);
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
    let rows: Vec<Row<WantReport>> = vec![
        row_reported("volume_id is required", dir().id(""), Err(InvalidArgument)),
        row_reported(
            "volume_path is required",
            dir().id("v").target(""),
            Err(InvalidArgument),
        ),
        row_reported(
            "a volume path that does not exist is NotFound",
            dir(),
            Err(NotFound),
        ),
        row_reported(
            "a volume this node does not know, with nothing mounted, is NotFound",
            dir().id("not-ours"),
            Err(NotFound),
        )
        .after(target_made),
        row_reported(
            "a published volume is reported, its condition normal",
            dir(),
            Ok((false, &[])),
        )
        .after(published),
        row_reported(
            "a Stowage volume no longer mounted is abnormal",
            dir(),
            Ok((true, &[])),
        )
        .after(target_made),
        row_reported(
            "an ephemeral volume with data here is known",
            ephemeral(&[]),
            Ok((false, &[])),
        )
        .after(published_ephemeral),
        row_reported(
            "a stale NFS volume is mounted again in place, and reported abnormal",
            nfs(),
            Ok((
                true,
                &[
                    "detach kubelet/staging/s1",
                    "mount nfs 127.0.0.1:/export -> kubelet/staging/s1",
                    "detach kubelet/pods/p1/mount",
                    "bind kubelet/staging/s1/pvc-1 -> kubelet/pods/p1/mount",
                ],
            )),
        )
        .after(|e| {
            staged_nfs_with_data(e);
            given("publish", e.publish(nfs()));
            e.fake.stale(&e.path(STAGING));
            e.fake.stale(&e.target("p1"));
        }),
    ];
    // The fake's statvfs: 1000 blocks of 4096, 600 free, 500 available; 100 inodes,
    // 40 free, 30 available.
    let bytes = (500 * 4096, 1000 * 4096, 400 * 4096);
    let inodes = (30, 100, 60);
    let expected = |want: WantReport| {
        want.map(|(abnormal, effects)| (bytes, inodes, abnormal, strings(effects)))
    };
    run(rows, Env::stats, expected);
}

#[test]
fn node_get_info_and_capabilities() {
    let env = Env::new();
    let info = env
        .answer(
            env.node
                .node_get_info(Request::new(csi::NodeGetInfoRequest {})),
        )
        .expect("info");
    let capabilities = env
        .answer(
            env.node
                .node_get_capabilities(Request::new(csi::NodeGetCapabilitiesRequest {})),
        )
        .expect("capabilities");
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
