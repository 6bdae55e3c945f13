//! No way out, even racing: a directory under an allowed prefix (or under the kubelet
//! directory) is swapped with a symlink to a directory outside it, in a tight loop,
//! while NodePublishVolume runs 1,000 times. No mount may ever land on, or come from,
//! the outside directory.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use csi_proto::v1;
use futures_util::StreamExt;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use stowage_tests::csi::{assert_code, mount_rwo, string_map};
use stowage_tests::driver::{Driver, Launch};
use stowage_tests::mounts::mounts_under;
use tonic::Code;

const CALLS: usize = 1_000;
const CONCURRENCY: usize = 4;

/// Exchanges a real directory and a symlink (RENAME_EXCHANGE: both names always exist)
/// until stopped; counts the swaps.
struct Swapper {
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Swapper {
    fn start(a: PathBuf, b: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let (stop_flag, counter) = (stop.clone(), swaps.clone());
        let thread = std::thread::spawn(move || {
            while !stop_flag.load(Ordering::Relaxed) {
                renameat2(AT_FDCWD, &a, AT_FDCWD, &b, RenameFlags::RENAME_EXCHANGE)
                    .expect("exchange");
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        Self {
            stop,
            swaps,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        assert!(self.stop_and_join(), "the swapper failed");
        self.swaps.load(Ordering::Relaxed)
    }

    /// Whether the thread ended without a panic.
    fn stop_and_join(&mut self) -> bool {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .is_none_or(|thread| thread.join().is_ok())
    }
}

/// A test that fails mid-race stops the swapper before its directories go away.
impl Drop for Swapper {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

struct Race(Driver);

impl std::ops::Deref for Race {
    type Target = Driver;
    fn deref(&self) -> &Driver {
        &self.0
    }
}

impl Race {
    async fn start() -> Self {
        let launch = Launch::node("node-a").kubelet_dir();
        for sub in ["kubelet/pods", "allowed", "outside"] {
            std::fs::create_dir_all(launch.dir().join(sub)).expect("mkdir");
        }
        let allowed = launch.dir().join("allowed");
        Self(launch.allow_host_path(allowed).start().await)
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir().join(sub)
    }

    /// `name` as a real directory holding a marker, and `name-link` a symlink to the
    /// outside directory, which holds its own marker.
    fn swappable(&self, parent: &str, name: &str) -> (PathBuf, PathBuf) {
        let real = self.path(parent).join(name);
        std::fs::create_dir(&real).expect("mkdir");
        std::fs::write(real.join("inside"), b"inside").expect("marker");
        std::fs::write(self.path("outside").join("OUTSIDE"), b"outside").expect("marker");
        let link = self.path(parent).join(format!("{name}-link"));
        std::os::unix::fs::symlink(self.path("outside"), &link).expect("symlink");
        (real, link)
    }

    /// Runs `CALLS` publishes built by `request`, `CONCURRENCY` at a time; after each one
    /// that succeeds, `check` sees its target. Returns how many succeeded.
    async fn publish_all(
        &self,
        request: impl Fn(usize) -> v1::NodePublishVolumeRequest,
        check: impl Fn(&Path),
    ) -> usize {
        let requests: Vec<_> = (0..CALLS).map(request).collect();
        let results: Vec<_> = futures_util::stream::iter(requests)
            .map(|req| {
                let csi = self.csi.clone();
                async move {
                    let target = PathBuf::from(&req.target_path);
                    (target, csi.node_publish(req).await)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut published = 0;
        for (target, result) in results {
            match result {
                Ok(()) => {
                    check(&target);
                    published += 1;
                }
                Err(status) => assert!(
                    matches!(
                        status.code(),
                        Code::PermissionDenied
                            | Code::InvalidArgument
                            | Code::NotFound
                            | Code::FailedPrecondition
                            | Code::Aborted
                    ),
                    "{target:?}: unexpected {status:?}"
                ),
            }
        }
        published
    }

    /// Stops the swapper and checks the race really ran, some publishes got through,
    /// and nothing reached the outside directory. Returns the number of swaps.
    fn settle(&self, swapper: Swapper, published: usize) -> u64 {
        let swaps = swapper.finish();
        assert!(
            swaps > CALLS as u64,
            "the swapper barely ran: {swaps} swaps"
        );
        assert!(published > 0, "no publish succeeded while racing");
        self.assert_outside_untouched();
        swaps
    }

    fn assert_outside_untouched(&self) {
        let outside = self.path("outside");
        assert!(mounts_under(&outside).is_empty(), "a mount landed outside");
        let entries: Vec<_> = std::fs::read_dir(&outside)
            .expect("read outside")
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(entries, ["OUTSIDE"], "something was created outside");
        for mount in mounts_under(self.dir()) {
            assert!(
                mount.starts_with(self.path("kubelet")),
                "{mount:?} is mounted outside the kubelet directory"
            );
        }
    }

    async fn unpublish_all(&self, targets: impl Iterator<Item = PathBuf>) {
        for (i, target) in targets.enumerate() {
            let id = format!("v-{i}");
            self.csi
                .node_unpublish(&id, &target)
                .await
                .expect("unpublish");
        }
        assert!(mounts_under(self.dir()).is_empty());
    }
}

fn identity(path: &Path) -> (u64, u64) {
    let meta = std::fs::metadata(path).expect("stat");
    (meta.dev(), meta.ino())
}

fn request(id: String, target: &Path, context: &[(&str, &str)]) -> v1::NodePublishVolumeRequest {
    v1::NodePublishVolumeRequest {
        volume_id: id,
        target_path: target.display().to_string(),
        volume_capability: Some(mount_rwo()),
        volume_context: string_map(context),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_host_path_never_mounts_what_lies_outside_its_prefix() {
    let race = Race::start().await;
    let (real, link) = race.swappable("allowed", "data");
    let inside = identity(&real);
    let outside = identity(&race.path("outside"));
    let target = |i: usize| {
        race.path("kubelet/pods")
            .join(format!("p{i}"))
            .join("mount")
    };
    let host_path = real.display().to_string();
    let swapper = Swapper::start(real.clone(), link);
    let published = race
        .publish_all(
            |i| {
                // Half with a type to check, half with none: both were raced before.
                let kind = if i % 2 == 0 { "Directory" } else { "" };
                request(
                    format!("v-{i}"),
                    &target(i),
                    &[("path", &host_path), ("hostPathType", kind)],
                )
            },
            |t| {
                let mounted = identity(t);
                assert_ne!(mounted, outside, "{t:?}: the outside directory was mounted");
                assert_eq!(mounted, inside, "{t:?}: something else was mounted");
            },
        )
        .await;
    let swaps = race.settle(swapper, published);
    race.unpublish_all((0..CALLS).map(target)).await;
    eprintln!("{published} of {CALLS} publishes succeeded during {swaps} swaps; none escaped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_directory_under_the_kubelet_dir_never_leads_a_target_outside() {
    let race = Race::start().await;
    let (real, link) = race.swappable("kubelet/pods", "pod");
    let target = |i: usize| real.join(format!("v{i}")).join("mount");
    let swapper = Swapper::start(real.clone(), link);
    let kubelet = race.path("kubelet");
    let published = race
        .publish_all(
            |i| {
                request(
                    format!("v-{i}"),
                    &target(i),
                    &[("csi.storage.k8s.io/ephemeral", "true")],
                )
            },
            |_| {},
        )
        .await;
    let swaps = race.settle(swapper, published);
    // Every mount is below the real directory, whichever of the two names it has now.
    let mounts = mounts_under(&kubelet);
    assert_eq!(mounts.len(), published);
    let at_rest = if real.join("inside").exists() {
        real.clone()
    } else {
        race.path("kubelet/pods/pod-link")
    };
    assert!(mounts.iter().all(|m| m.starts_with(&at_rest)), "{mounts:?}");
    let targets: Vec<PathBuf> = (0..CALLS)
        .map(|i| at_rest.join(format!("v{i}")).join("mount"))
        .collect();
    race.unpublish_all(targets.into_iter()).await;
    eprintln!("{published} of {CALLS} publishes succeeded during {swaps} swaps; none escaped");
}

/// A root that cannot be opened refuses the request: it never becomes an empty prefix
/// that everything lies under (a missing kubelet directory used to let any target in).
#[tokio::test]
async fn an_unopenable_root_refuses_rather_than_allowing_everything() {
    // Not `kubelet_dir()`, which makes the directory: here it must be missing.
    let launch = Launch::node("node-a");
    let (kubelet, prefix) = (launch.dir().join("kubelet"), launch.dir().join("allowed"));
    let node = launch
        .flags(&["--kubelet-dir", kubelet.to_str().expect("utf8")])
        .allow_host_path(&prefix)
        .start()
        .await;
    let csi = &node.csi;
    let target = kubelet.join("pods/p/mount");
    let ephemeral = request(
        "v-e".into(),
        &target,
        &[("csi.storage.k8s.io/ephemeral", "true")],
    );
    assert_code(
        csi.node_publish(ephemeral).await,
        Code::FailedPrecondition,
        "cannot be opened",
    );
    assert!(!kubelet.exists(), "the missing kubelet directory was made");

    std::fs::create_dir(&kubelet).expect("kubelet dir");
    let host_path = prefix.join("data").display().to_string();
    let host = request(
        "v-h".into(),
        &target,
        &[("path", &host_path), ("hostPathType", "DirectoryOrCreate")],
    );
    assert_code(
        csi.node_publish(host).await,
        Code::FailedPrecondition,
        "cannot be opened",
    );
    assert!(!prefix.exists(), "the missing allowed prefix was made");
    assert!(mounts_under(node.dir()).is_empty());
}
