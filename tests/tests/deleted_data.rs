//! A deleted local volume's data is freed after DeleteVolume answers, by the binary's
//! background reaper, and what a kill -9 cuts short is freed after the restart.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use stowage_tests::csi::enforced;
use stowage_tests::driver::{Driver, Launch};
use stowage_tests::wait_for;

const NODE: &str = "node-a";
const MIB: u64 = 1 << 20;
/// A clone's size in the issue (no head-of-line blocking): freed at about 1 s a GiB
/// (16 MiB slices, 10 ms apart), so it outlasts the checks right after the call.
const LARGE: u64 = 1 << 30;

/// Writes `bytes` of real data (a sparse file frees no blocks) and makes it durable.
fn write_data(path: &Path, bytes: u64) {
    let mut file = File::create(path).expect("create");
    let chunk: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8 + 1).collect();
    for _ in 0..bytes / MIB {
        file.write_all(&chunk).expect("write");
    }
    file.sync_all().expect("fsync");
}

/// Bytes allocated at or below `path`.
fn allocated_under(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        for entry in fs::read_dir(path).into_iter().flatten().flatten() {
            total += allocated_under(&entry.path());
        }
    }
    total
}

/// A directory volume of the driver's node holding [`LARGE`] bytes of data: its ID.
async fn large_volume(s: &Driver, name: &str) -> String {
    let volume = s
        .csi
        .create(enforced(name, LARGE as i64, "none"))
        .await
        .expect("create");
    write_data(&s.volume_data(&volume.volume_id, "").join("fill"), LARGE);
    volume.volume_id
}

async fn wait_freed(s: &Driver) {
    let reaping = s.root().join("reaping");
    wait_for(
        "the deleted data freed",
        Duration::from_secs(120),
        async || (fs::read_dir(&reaping).expect("list").count() == 0).then_some(()),
    )
    .await;
}

#[tokio::test]
async fn delete_volume_answers_before_a_large_volume_is_freed_and_the_space_comes_back() {
    let s = Launch::controller().local(NODE).start().await;
    let id = large_volume(&s, "large").await;
    let data = s.volume_data(&id, "");
    s.csi.delete(&id).await.expect("delete");
    let left = allocated_under(&s.root().join("reaping"));
    assert!(
        left > LARGE / 2,
        "the call answered with {left} bytes of the volume still to free"
    );
    assert!(!data.exists(), "the volume is gone from its place");
    let listed = s.csi.list_all(0).await.expect("list");
    assert!(listed.iter().all(|v| v.volume_id != id), "not listed");
    wait_freed(&s).await;
}

#[tokio::test]
async fn after_a_kill_mid_way_the_rest_is_freed_and_a_volume_made_again_keeps_its_data() {
    let mut s = Launch::controller().local(NODE).start().await;
    let id = large_volume(&s, "again").await;
    s.csi.delete(&id).await.expect("delete");
    let made_again = s
        .csi
        .create(enforced("again", MIB as i64, "none"))
        .await
        .expect("create again");
    assert_eq!(made_again.volume_id, id, "the same name, the same ID");
    let data = s.volume_data(&id, "");
    fs::write(data.join("mine"), b"new data").expect("write");
    s.kill_hard().await;
    assert!(
        allocated_under(&s.root().join("reaping")) > LARGE / 2,
        "the kill cut the freeing short"
    );
    s.relaunch().await;
    let names: Vec<_> = fs::read_dir(&data)
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        names,
        vec!["mine"],
        "the volume made again has its data only"
    );
    assert_eq!(fs::read(data.join("mine")).expect("read"), b"new data");
    wait_freed(&s).await;
    let listed = s.csi.list_all(0).await.expect("list");
    assert_eq!(
        listed.iter().filter(|v| v.volume_id == id).count(),
        1,
        "the volume made again is listed"
    );
}
