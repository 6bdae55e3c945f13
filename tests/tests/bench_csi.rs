//! `stowage bench csi` against real node plugins: every RPC the capabilities call
//! for is counted, nothing is left mounted or allocated, failures are counted and
//! fail the run, and a baseline driver gets the same work and ratios.

use std::path::Path;

use serde_json::Value;
use stowage_tests::driver::{Driver, Launch};
use stowage_tests::mounts::mounts_under;
use stowage_tests::process::stowage_bin;

const LOCAL_RPCS: [&str; 6] = [
    "CreateVolume",
    "NodeStageVolume",
    "NodePublishVolume",
    "NodeUnpublishVolume",
    "NodeUnstageVolume",
    "DeleteVolume",
];

/// Runs the benchmark with `args`; the exit success and the JSON it printed.
async fn bench(args: &[String]) -> (bool, Value) {
    let output = tokio::process::Command::new(stowage_bin())
        .args(["bench", "csi", "--json"])
        .args(args)
        .env("STOWAGE_LOG", "error")
        .output()
        .await
        .expect("run stowage bench csi");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "bench printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), json)
}

fn endpoint(plugin: &Driver) -> String {
    format!("unix://{}", plugin.socket().display())
}

fn work_dir(dir: &Path) -> String {
    dir.join("kubelet/bench").display().to_string()
}

/// The arguments of a run against `plugin` alone, in its kubelet directory, then `extra`.
fn against(plugin: &Driver, extra: &[&str]) -> Vec<String> {
    let base = [
        "--controller-endpoint".into(),
        endpoint(plugin),
        "--work-dir".into(),
        work_dir(plugin.dir()),
    ];
    base.into_iter()
        .chain(extra.iter().map(|a| a.to_string()))
        .collect()
}

#[tokio::test]
async fn local_lifecycles_call_what_the_capabilities_offer_and_leave_nothing() {
    let plugin = Launch::node("bench-a").kubelet_dir().start().await;
    let (csi, dir) = (&plugin.csi, plugin.dir());
    let (ok, json) = bench(&against(
        &plugin,
        &["--volumes", "40", "--concurrency", "4"],
    ))
    .await;
    assert!(ok, "{json}");
    for rpc in LOCAL_RPCS {
        let stats = &json["rpcs"][rpc];
        assert_eq!(stats["count"], 40, "{rpc}: {json}");
        assert_eq!(stats["errors"], 0, "{rpc}: {json}");
        let order = ["p50_us", "p90_us", "p99_us", "max_us"].map(|k| stats[k].as_u64());
        assert!(order.iter().all(Option::is_some), "{rpc}: {stats}");
        assert!(order.is_sorted(), "{rpc} percentiles out of order: {stats}");
    }
    assert!(
        json["rpcs"].get("ControllerPublishVolume").is_none(),
        "the node plugin does not advertise PUBLISH_UNPUBLISH_VOLUME"
    );
    assert_eq!(json["lifecycle"]["count"], 40);
    assert_eq!(json["lifecycle"]["errors"], 0);
    assert!(json["lifecycle"]["per_second"].as_f64() > Some(0.0));
    assert_eq!(
        json["memory"]["node_pid"].as_u64(),
        plugin.pid().map(u64::from)
    );
    assert!(json["memory"]["node_rss_kib_after"].as_u64() > Some(0));
    assert!(mounts_under(dir).is_empty(), "mounts left behind");
    assert!(
        csi.list_all(100).await.expect("list").is_empty(),
        "volumes left behind"
    );
    assert!(
        !dir.join("kubelet/bench")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some())
    );
}

#[tokio::test]
async fn ephemeral_lifecycles_against_a_baseline_report_both_and_ratios() {
    // The lean `stowage-node` measured against `stowage node`: the same plugin.
    let driver = Launch::node("bench-b").kubelet_dir().lean().start().await;
    // Two plugins on one kubelet root, as a driver and the one it is compared with.
    let kubelet = driver.kubelet("");
    let baseline = Launch::node("bench-c")
        .flags(&["--kubelet-dir", kubelet.to_str().expect("utf8")])
        .start()
        .await;
    let (ok, json) = bench(&[
        "--controller-endpoint".into(),
        endpoint(&driver),
        "--baseline-controller-endpoint".into(),
        endpoint(&baseline),
        "--type".into(),
        "ephemeral".into(),
        "--volumes".into(),
        "20".into(),
        "--concurrency".into(),
        "2".into(),
        "--work-dir".into(),
        work_dir(driver.dir()),
    ])
    .await;
    assert!(ok, "{json}");
    for report in [&json, &json["baseline"]] {
        for rpc in ["NodePublishVolume", "NodeUnpublishVolume"] {
            assert_eq!(report["rpcs"][rpc]["count"], 20, "{rpc}: {json}");
            assert_eq!(report["rpcs"][rpc]["errors"], 0, "{rpc}: {json}");
        }
        assert!(
            report["rpcs"].get("CreateVolume").is_none(),
            "ephemeral: no CreateVolume"
        );
        assert!(
            report["rpcs"].get("NodeStageVolume").is_none(),
            "ephemeral: no staging"
        );
    }
    assert_eq!(
        json["memory"]["node_pid"].as_u64(),
        driver.pid().map(u64::from)
    );
    assert_eq!(
        json["baseline"]["memory"]["node_pid"].as_u64(),
        baseline.pid().map(u64::from)
    );
    for ratio in ["lifecycle_p50", "per_second", "node_rss"] {
        assert!(
            json["ratios"][ratio].as_f64() > Some(0.0),
            "{ratio}: {json}"
        );
    }
    assert!(
        json["ratios"]["node_rss"].as_f64() < Some(1.0),
        "the lean binary stays smaller in memory than the full one: {}",
        json["ratios"]
    );
    assert!(mounts_under(driver.dir()).is_empty() && mounts_under(baseline.dir()).is_empty());
}

#[tokio::test]
async fn a_driver_that_refuses_fails_the_run_with_the_errors_counted() {
    let plugin = Launch::node("bench-d").kubelet_dir().start().await;
    let csi = &plugin.csi;
    let (ok, json) = bench(&against(
        &plugin,
        &["--volumes", "5", "--parameters", "type=ceph"],
    ))
    .await;
    assert!(!ok, "a run with failed lifecycles exits non-zero");
    assert_eq!(json["rpcs"]["CreateVolume"]["errors"], 5);
    assert!(json["rpcs"].get("NodePublishVolume").is_none());
    assert_eq!(json["lifecycle"]["errors"], 5);
    assert!(csi.list_all(100).await.expect("list").is_empty());
}

#[tokio::test]
async fn clones_of_a_held_source_leave_nothing_either() {
    let plugin = Launch::node("bench-e").kubelet_dir().start().await;
    let (csi, dir) = (&plugin.csi, plugin.dir());
    let (ok, json) = bench(&against(
        &plugin,
        &[
            "--volumes",
            "4",
            "--clone-source-bytes",
            "1Mi",
            "--capacity",
            "1Mi",
        ],
    ))
    .await;
    assert!(ok, "{json}");
    assert_eq!(json["rpcs"]["CreateVolume"]["count"], 4, "{json}");
    assert_eq!(json["lifecycle"]["errors"], 0, "{json}");
    assert!(mounts_under(dir).is_empty(), "mounts left behind");
    assert!(
        csi.list_all(100).await.expect("list").is_empty(),
        "the clones and their source deleted"
    );
    let left: Vec<_> = dir
        .join("kubelet/bench")
        .read_dir()
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the run's directories removed: {left:?}");
}
