//! `stowage up` as a user meets it when something is in the way: a port another
//! program holds or a data directory another `up` runs on ends it at once with
//! the flag to change, and killing `up` outright leaves none of its children.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use stowage_tests::mounts::MountedDir;
use stowage_tests::process::stowage_bin;
use stowage_tests::up::{free_port, wait_until_up};
use stowage_tests::wait_for;
use tokio::process::{Child, Command};

fn up_command(data: &Path, port: u16) -> Command {
    let mut command = Command::new(stowage_bin());
    command
        .args(["up", "--node-name", "machine", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data")
        .arg(data)
        .env("STOWAGE_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs an `up` that must end by itself, within a few seconds, and returns its
/// exit success and stderr.
async fn up_that_ends(data: &Path, port: u16) -> (bool, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(10),
        up_command(data, port).stdout(Stdio::null()).output(),
    )
    .await
    .expect("up ends at once instead of retrying")
    .expect("run stowage up");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn running_up(data: &Path, port: u16) -> Child {
    up_command(data, port)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn stowage up")
}

/// Live (not zombie) processes whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(state, ppid)| ppid == parent && state != 'Z'))
        .collect()
}

/// State and parent pid of a process, or None once it is gone or reaped.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z')
}

async fn interrupt(mut child: Child) {
    let pid = i32::try_from(child.id().expect("running")).expect("pid");
    kill(Pid::from_raw(pid), Signal::SIGINT).expect("SIGINT");
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("up stops within 30 s")
        .expect("wait");
}

#[tokio::test]
async fn a_busy_port_ends_up_at_once_naming_listen() {
    let dir = MountedDir::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let (success, stderr) = up_that_ends(&dir.path().join("data"), port).await;
    assert!(!success, "up fails: {stderr}");
    assert!(
        stderr.contains(&format!("--listen 127.0.0.1:{port} is already in use"))
            && stderr.contains("choose another address with --listen"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data").join("kubeconfig").exists(),
        "nothing was started"
    );
}

#[tokio::test]
async fn a_data_directory_of_a_running_up_ends_a_second_up_naming_data() {
    let dir = MountedDir::new();
    let data = dir.path().join("data");
    let first = running_up(&data, free_port());
    let first_pid = first.id().expect("running");
    wait_until_up(&data).await;
    let (success, stderr) = up_that_ends(&data, free_port()).await;
    assert!(!success, "the second up fails: {stderr}");
    assert!(
        stderr.contains(&format!(
            "--data {} is in use by a running `stowage up` (pid {first_pid})",
            data.display()
        )) && stderr.contains("choose another --data"),
        "{stderr}"
    );
    interrupt(first).await;
    // Once the first is gone the directory is free again.
    let again = running_up(&data, free_port());
    wait_until_up(&data).await;
    interrupt(again).await;
}

#[tokio::test]
async fn killing_up_outright_leaves_no_child_alive() {
    let dir = MountedDir::new();
    let data = dir.path().join("data");
    let mut up = running_up(&data, free_port());
    let pid = up.id().expect("running");
    wait_until_up(&data).await;
    let children = wait_for("all five components", Duration::from_secs(30), async || {
        let children = children_of(pid);
        (children.len() == 5).then_some(children)
    })
    .await;
    up.start_kill().expect("SIGKILL");
    up.wait().await.expect("wait");
    wait_for(
        "the children of the killed up to exit",
        Duration::from_secs(20),
        async || children.iter().all(|c| !alive(*c)).then_some(()),
    )
    .await;
    // The API port and the data directory are free for the next `up`.
    let next = running_up(&data, free_port());
    wait_until_up(&data).await;
    interrupt(next).await;
}
