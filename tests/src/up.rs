//! `stowage up` as a user drives it: the real binary on a free port with its state in
//! a directory, kubectl with the admin's kubeconfig, `stowage mount`/`status`.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::mounts::MountedDir;
use crate::process::stowage_bin;
use crate::wait_for;

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// `stowage up` on node `machine` at `127.0.0.1:port` with its state in `data`.
pub fn up(data: &Path, port: u16) -> Child {
    up_with(data, port, &[])
}

/// [`up`] with more flags.
pub fn up_with(data: &Path, port: u16, extra: &[&str]) -> Child {
    Command::new(stowage_bin())
        .args(["up", "--node-name", "machine"])
        .args(extra)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data")
        .arg(data)
        .env("STOWAGE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn stowage up")
}

pub async fn stowage(args: &[&str], data: &Path) -> Output {
    Command::new(stowage_bin())
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .await
        .expect("run stowage")
}

pub fn kubectl(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(data.join("kubeconfig"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("kubectl output")
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn apply(data: &Path, manifest: &str) {
    let applied = kubectl(data, &["apply", "-f", "-"], Some(manifest));
    assert!(applied.status.success(), "{}", text(&applied));
}

/// One field of an object, empty when the object or the field is missing.
pub fn field(data: &Path, object: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(object);
    let jsonpath = format!("-o=jsonpath={{{path}}}");
    args.push(&jsonpath);
    String::from_utf8_lossy(&kubectl(data, &args, None).stdout).to_string()
}

/// Starts `up` with its data in `dir/data` and waits until it serves.
pub async fn start(dir: &MountedDir) -> (Child, PathBuf) {
    let data = dir.path().join("data");
    let child = up(&data, free_port());
    wait_for("stowage up to serve", Duration::from_secs(60), async || {
        let out = kubectl(&data, &["get", "storageclass", "-o", "name"], None);
        let names = String::from_utf8_lossy(&out.stdout).to_string();
        (names.contains("stowage-local-immediate") && data.join("node.sock").exists()).then_some(())
    })
    .await;
    wait_for("the provisioners", Duration::from_secs(30), async || {
        stowage(&["status"], &data)
            .await
            .status
            .success()
            .then_some(())
    })
    .await;
    (child, data)
}

/// Ctrl-C, and a clean exit within 30 s.
pub async fn stop(mut child: Child) {
    let pid = i32::try_from(child.id().expect("running")).expect("pid");
    kill(Pid::from_raw(pid), Signal::SIGINT).expect("SIGINT");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("up stops within 30 s")
        .expect("wait");
    assert!(status.success(), "up exits cleanly on Ctrl-C: {status}");
}
