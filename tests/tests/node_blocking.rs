//! A node call that blocks in the kernel does not hold up the others. Publishes whose
//! targets lie on a frozen filesystem (`fsfreeze`) block in mkdir until it thaws, as a
//! call blocks in a slow mount, mkfs or copy; meanwhile a whole small lifecycle on the
//! same node plugin completes. A plugin that ran every call on the async
//! runtime's two workers answered nothing while two calls were blocked.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::mount::{MsFlags, mount};
use stowage_tests::csi::{create_request, mount_rwo, publish_request};
use stowage_tests::driver::Launch;
use stowage_tests::mounts::mounts_under;
use stowage_tests::wait_for;

const NODE: &str = "node-hol";
/// More blocked calls than the runtime has workers.
const BLOCKED: usize = 3;

/// A filesystem frozen until this is dropped (also when the test fails).
struct Frozen {
    mount_point: PathBuf,
}

impl Frozen {
    fn freeze(mount_point: &Path) -> Self {
        fsfreeze("-f", mount_point);
        Self {
            mount_point: mount_point.to_path_buf(),
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze")
            .arg("-u")
            .arg(&self.mount_point)
            .status();
    }
}

fn fsfreeze(flag: &str, mount_point: &Path) {
    let status = Command::new("fsfreeze")
        .arg(flag)
        .arg(mount_point)
        .status()
        .expect("run fsfreeze");
    assert!(
        status.success(),
        "fsfreeze {flag} {}",
        mount_point.display()
    );
}

/// An ext4 filesystem of its own (a loop device over a file in `dir`) mounted at `at`.
fn own_filesystem(dir: &Path, at: &Path) {
    let image = dir.join("frozen.img");
    let file = std::fs::File::create(&image).expect("image file");
    file.set_len(32 << 20).expect("size");
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&image)
        .status()
        .expect("mkfs.ext4");
    assert!(mkfs.success());
    let losetup = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&image)
        .output()
        .expect("losetup");
    assert!(losetup.status.success());
    let device = String::from_utf8(losetup.stdout).expect("utf8");
    std::fs::create_dir_all(at).expect("mount point");
    mount(
        Some(device.trim()),
        at,
        Some("ext4"),
        MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount the ext4");
}

/// Threads of `pid` in uninterruptible sleep (state D): blocked in the kernel.
fn blocked_threads(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ...: comm may hold spaces, the state follows its ')'.
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('D'))
        })
        .count()
}

#[tokio::test]
async fn a_blocked_call_does_not_stall_the_others() {
    let launch = Launch::node(NODE).kubelet_dir();
    let kubelet = launch.dir().join("kubelet");
    let frozen_dir = kubelet.join("frozen");
    own_filesystem(launch.dir(), &frozen_dir);
    let plugin = launch.start().await;
    let (csi, pid) = (&plugin.csi, plugin.pid().expect("pid"));
    let mut volumes = Vec::new();
    for i in 0..BLOCKED {
        let volume = csi
            .create(create_request(&format!("hol-{i}"), 1 << 20, &[]))
            .await
            .expect("create");
        volumes.push(volume);
    }

    let frozen = Frozen::freeze(&frozen_dir);
    let blocked: Vec<_> = volumes
        .iter()
        .enumerate()
        .map(|(i, volume)| {
            let request = publish_request(volume, &frozen_dir.join(format!("pods/{i}/mount")));
            let csi = csi.clone();
            tokio::spawn(async move { csi.node_publish(request).await })
        })
        .collect();
    wait_for(
        "two of the plugin's threads blocked on the frozen filesystem",
        Duration::from_secs(20),
        async || (blocked_threads(pid) >= 2).then_some(()),
    )
    .await;

    let small = tokio::time::timeout(
        Duration::from_secs(20),
        csi.small_lifecycle("hol-small", &kubelet.join("pods/small/mount")),
    )
    .await;
    let still_blocked = blocked.iter().filter(|b| !b.is_finished()).count();
    drop(frozen);
    small.expect("a small lifecycle completes while other calls are blocked");
    assert_eq!(
        still_blocked, BLOCKED,
        "the blocked publishes were still waiting when the small lifecycle finished"
    );
    for (i, call) in blocked.into_iter().enumerate() {
        call.await
            .expect("join")
            .expect("a blocked publish completes after the thaw");
        csi.node_unpublish(
            &volumes[i].volume_id,
            &frozen_dir.join(format!("pods/{i}/mount")),
        )
        .await
        .expect("unpublish");
    }
    let left: Vec<PathBuf> = mounts_under(&kubelet)
        .into_iter()
        .filter(|m| *m != frozen_dir)
        .collect();
    assert!(left.is_empty(), "mounts left: {left:?}");
}

/// Stages run side by side now: image volumes staged at once each get a loop device of
/// their own, though they race for the same free one.
#[tokio::test]
async fn image_volumes_staged_at_once_each_get_a_loop_device() {
    const VOLUMES: usize = 12;
    let plugin = Launch::node(NODE).kubelet_dir().start().await;
    let (csi, kubelet) = (&plugin.csi, plugin.kubelet(""));
    let mut volumes = Vec::new();
    for i in 0..VOLUMES {
        let request = create_request(
            &format!("race-{i}"),
            8 << 20,
            &[("capacityEnforcement", "image")],
        );
        volumes.push(csi.create(request).await.expect("create"));
    }
    let staging = |i: usize| kubelet.join(format!("staging/{i}"));
    let stages: Vec<_> = volumes
        .iter()
        .enumerate()
        .map(|(i, volume)| {
            std::fs::create_dir_all(staging(i)).expect("staging dir");
            let (csi, volume, path) = (csi.clone(), volume.clone(), staging(i));
            tokio::spawn(async move { csi.node_stage(&volume, &path, mount_rwo()).await })
        })
        .collect();
    for (i, stage) in stages.into_iter().enumerate() {
        stage
            .await
            .expect("join")
            .unwrap_or_else(|e| panic!("stage {i}: {e}"));
    }
    assert_eq!(mounts_under(&kubelet).len(), VOLUMES);
    for (i, volume) in volumes.iter().enumerate() {
        csi.node_unstage(&volume.volume_id, &staging(i))
            .await
            .expect("unstage");
    }
    assert!(mounts_under(&kubelet).is_empty());
}
