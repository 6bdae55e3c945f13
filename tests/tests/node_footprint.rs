//! What the node plugin keeps after a burst of calls. Its blocking pool starts a thread
//! per call in flight, and glibc gives each new thread a malloc arena of its own (a
//! 64 MiB reservation, of which the arena keeps what it last used) for the life of the
//! process; the plugin limits itself to one arena, so a burst leaves none behind.

use std::path::PathBuf;

use futures_util::future::join_all;
use stowage_tests::driver::Launch;

const CALLS_AT_ONCE: usize = 16;

/// A glibc arena reserves 64 MiB of address space (`HEAP_MAX_SIZE`), mapped without
/// access beyond what it uses; nothing else in the plugin maps that much that way.
const ARENA_RESERVATION: u64 = 32 << 20;

/// Anonymous mappings of `pid` without access and at least [`ARENA_RESERVATION`] long.
fn arena_reservations(pid: u32) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    maps.lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let anonymous = fields.len() == 5;
            let no_access = fields.get(1) == Some(&"---p");
            let length = fields
                .first()
                .and_then(|range| range.split_once('-'))
                .and_then(|(start, end)| {
                    Some(u64::from_str_radix(end, 16).ok()? - u64::from_str_radix(start, 16).ok()?)
                })
                .unwrap_or(0);
            anonymous && no_access && length >= ARENA_RESERVATION
        })
        .count()
}

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
