//! What the node plugin keeps after a burst of calls. Its blocking pool starts a thread
//! per call in flight, and glibc gives each new thread a malloc arena of its own (a
//! 64 MiB reservation, of which the arena keeps what it last used) for the life of the
//! process; the plugin limits itself to one arena, so a burst leaves none behind.

use std::path::PathBuf;

use futures_util::future::join_all;
use stowage_tests::driver::Launch;
use stowage_tests::process::arena_reservations;

const CALLS_AT_ONCE: usize = 16;

#[tokio::test]
async fn a_burst_of_calls_leaves_no_malloc_arena_behind() {
    let launch = Launch::node("node-footprint").kubelet_dir();
    let kubelet = launch.dir().join("kubelet");
    let plugin = launch.start().await;
    let pid = plugin.pid().expect("pid");

    let calls: Vec<(String, PathBuf)> = (0..CALLS_AT_ONCE)
        .map(|i| {
            (
                format!("burst-{i}"),
                kubelet.join(format!("pods/{i}/mount")),
            )
        })
        .collect();
    join_all(
        calls
            .iter()
            .map(|(name, target)| plugin.csi.small_lifecycle(name, target)),
    )
    .await;

    assert_eq!(
        arena_reservations(pid),
        0,
        "arenas after {CALLS_AT_ONCE} calls at once"
    );
}
