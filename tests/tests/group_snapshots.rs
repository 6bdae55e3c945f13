//! Group snapshots hold one point in time across their members: two mounted image
//! volumes, a writer appending to both in turn while the group is taken, then each
//! member restored and read back.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use csi_proto::v1;
use stowage_tests::csi::{enforced, from_snapshot, mount_rwo, publish_staged_request};
use stowage_tests::driver::{Driver, Launch};

const IMAGE: i64 = 32 << 20;

struct Node(Driver);

impl std::ops::Deref for Node {
    type Target = Driver;
    fn deref(&self) -> &Driver {
        &self.0
    }
}

impl Node {
    async fn start() -> Self {
        Self(Launch::node("group-node").kubelet_dir().start().await)
    }

    async fn image_volume(&self, name: &str, source: Option<&str>) -> v1::Volume {
        let mut request = enforced(name, IMAGE, "image");
        request.volume_content_source = source.and_then(from_snapshot);
        self.csi.create(request).await.expect("create image volume")
    }

    /// Stages the volume (its ext4 mounted) and returns the staging mount.
    async fn stage(&self, volume: &v1::Volume, name: &str) -> PathBuf {
        let staging = self.kubelet(&format!("staging/{name}"));
        std::fs::create_dir_all(&staging).expect("staging dir");
        self.csi
            .node_stage(volume, &staging, mount_rwo())
            .await
            .expect("stage");
        staging
    }

    /// Stages and publishes the volume as a pod would see it.
    async fn mount(&self, volume: &v1::Volume, name: &str) -> PathBuf {
        let staging = self.stage(volume, name).await;
        let target = self.kubelet(&format!("pods/{name}/mount"));
        self.csi
            .node_publish(publish_staged_request(volume, &staging, &target))
            .await
            .expect("publish");
        target
    }
}

/// Appends a numbered line to each volume in turn, each made durable before the next,
/// until stopped: at any one instant the first volume has as many lines as the second,
/// or one more.
struct Writer {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Writer {
    fn start(first: &Path, second: &Path) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let open = |dir: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("seq"))
                .expect("open seq")
        };
        let mut files = [open(first), open(second)];
        let (stop_flag, counter) = (stop.clone(), rounds.clone());
        let thread = std::thread::spawn(move || {
            let mut round = 0u64;
            while !stop_flag.load(Ordering::Relaxed) {
                for file in &mut files {
                    writeln!(file, "{round}")?;
                    file.sync_data()?;
                }
                round += 1;
                counter.store(round, Ordering::Relaxed);
            }
            Ok(())
        });
        Self {
            stop,
            rounds,
            thread: Some(thread),
        }
    }

    fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("writer thread").expect("writer io");
        }
        self.rounds()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_snapshot_is_one_point_in_time_for_every_member() {
    let node = Node::start().await;
    let a = node.image_volume("group-a", None).await;
    let b = node.image_volume("group-b", None).await;
    let (pod_a, pod_b) = (node.mount(&a, "a").await, node.mount(&b, "b").await);
    // Written, not synced: only the freeze's flush puts it in the images.
    for pod in [&pod_a, &pod_b] {
        std::fs::write(pod.join("before"), b"written before the group snapshot").expect("write");
    }
    let writer = Writer::start(&pod_a, &pod_b);
    stowage_tests::wait_for(
        "the writer under way",
        std::time::Duration::from_secs(20),
        async || (writer.rounds() >= 50).then_some(()),
    )
    .await;
    let group = node
        .csi
        .group_snapshot("group-ab", &[&a.volume_id, &b.volume_id])
        .await
        .expect("group snapshot");
    let rounds = writer.finish();
    for pod in [&pod_a, &pod_b] {
        std::fs::write(pod.join("after"), b"written after").expect("write");
    }
    let mut counts = Vec::new();
    for (i, member) in group.snapshots.iter().enumerate() {
        let restored = node
            .image_volume(&format!("restored-{i}"), Some(&member.snapshot_id))
            .await;
        let data = node.stage(&restored, &format!("restored-{i}")).await;
        assert!(
            data.join("before").exists(),
            "member {i} lacks what came before"
        );
        assert!(
            !data.join("after").exists(),
            "member {i} holds what came after"
        );
        let source = if member.source_volume_id == a.volume_id {
            0
        } else {
            1
        };
        counts.push((source, lines(&data.join("seq"))));
    }
    counts.sort();
    let (first, second) = (counts[0].1, counts[1].1);
    assert!(
        first == second || first == second + 1,
        "the members are from different moments: {first} lines in the first volume, {second} in the second"
    );
    assert!(first > 0, "the writer's durable lines are missing");
    eprintln!("writer ran {rounds} rounds; the group holds {first} and {second} lines");
}
