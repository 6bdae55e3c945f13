//! Small VMs for what this machine's kernel cannot do (an NFS client, online growth of
//! a mounted filesystem, a second node): qemu under TCG with a Debian kernel, the
//! host's root filesystem read-only over 9p, the test's work directory read-write at
//! the same path, and user networking inside a [`Sandbox`].
//!
//! A VM test is one test function with two halves. On the host it sets up the servers,
//! boots one guest per node and waits; each guest runs the same test binary with the
//! same test name and `STOWAGE_VM_GUEST` set, which runs the guest half. Both halves
//! always run: there is no path that tests less.

mod assets;
mod cpio;
mod sandbox;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub use assets::Assets;
pub use sandbox::{Place, Sandbox, forward_loopback};

/// The address at which a guest reaches the sandbox's loopback.
pub const HOST_FROM_GUEST: &str = "10.0.2.2";

const GUEST_VARIABLE: &str = "STOWAGE_VM_GUEST";

/// The guest's name (`STOWAGE_VM_GUEST`) when this process runs inside a VM.
pub fn guest_name() -> Option<String> {
    std::env::var(GUEST_VARIABLE).ok()
}

/// A value the host half handed to the guest half.
pub fn guest_param(key: &str) -> String {
    std::env::var(format!("STOWAGE_VM_{key}"))
        .unwrap_or_else(|_| panic!("the host half passes STOWAGE_VM_{key}"))
}

/// One guest to boot.
pub struct Guest {
    name: String,
    test: String,
    work: PathBuf,
    params: BTreeMap<String, String>,
    memory_mib: u32,
}

impl Guest {
    /// A guest that runs the guest half of `test` (the test's full name) with `work`
    /// as its read-write directory (it must exist); its own files go to
    /// `work/vm-<name>`.
    pub fn new(name: &str, test: &str, work: &Path) -> Self {
        Self {
            name: name.into(),
            test: test.into(),
            work: work.into(),
            params: BTreeMap::new(),
            memory_mib: 768,
        }
    }

    /// A value for the guest half, read there with [`guest_param`].
    pub fn param(mut self, key: &str, value: impl Into<String>) -> Self {
        self.params.insert(key.into(), value.into());
        self
    }

    /// The guest's memory (768 MiB unless set).
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Boots the guest inside `sandbox`.
    pub fn boot(self, sandbox: &Sandbox) -> RunningGuest {
        let assets = Assets::get();
        let dir = self.work.join(format!("vm-{}", self.name));
        std::fs::create_dir_all(&dir).expect("mkdir the guest's directory");
        std::fs::write(dir.join("guest.sh"), self.script()).expect("write guest.sh");
        let _ = std::fs::remove_file(dir.join("exit-code"));
        let console = dir.join("console.log");
        let append = format!(
            "console=ttyS0 panic=-1 loglevel=4 stowage.work={} stowage.hostname={}",
            self.work.display(),
            self.name
        );
        let mut command = sandbox.command(&assets.qemu);
        command
            .env("LD_LIBRARY_PATH", &assets.library_path)
            .env("QEMU_MODULE_DIR", &assets.module_dir);
        for firmware in &assets.firmware_dirs {
            command.arg("-L").arg(firmware);
        }
        command
            .args(["-machine", "pc,accel=tcg", "-cpu", "max", "-smp", "1"])
            .args(["-m", &self.memory_mib.to_string()])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-kernel")
            .arg(&assets.kernel)
            .arg("-initrd")
            .arg(&assets.initramfs)
            .args(["-append", &append])
            .args(share("hostroot", Path::new("/"), true))
            .args(share("work", &self.work, false))
            .args([
                "-netdev",
                "user,id=net0",
                "-device",
                "virtio-net-pci,netdev=net0,romfile=",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = command.spawn().expect("spawn qemu");
        RunningGuest {
            name: self.name,
            dir,
            console,
            child,
        }
    }

    /// guest.sh: the test binary, this test only, with the host half's values.
    fn script(&self) -> String {
        let exe = std::env::current_exe().expect("current exe");
        // As a node's nfs-common would: the kernel's lockd registers with the local
        // rpcbind at an NFSv3 mount, and the mount fails when none answers.
        let mut script = String::from("set -e\nmkdir -p /run/rpcbind\nrpcbind -w\n");
        script.push_str(&format!("export {GUEST_VARIABLE}={}\n", quote(&self.name)));
        for key in [
            "STOWAGE_LOG",
            "RUST_BACKTRACE",
            "STOWAGE_BIN",
            "STOWAGE_NODE_BIN",
        ] {
            if let Ok(value) = std::env::var(key) {
                script.push_str(&format!("export {key}={}\n", quote(&value)));
            }
        }
        script.push_str("export RUST_BACKTRACE=${RUST_BACKTRACE:-1}\n");
        for (key, value) in &self.params {
            script.push_str(&format!("export STOWAGE_VM_{key}={}\n", quote(value)));
        }
        script.push_str(&format!(
            "exec {} --exact {} --nocapture --test-threads 1\n",
            quote(&exe.display().to_string()),
            quote(&self.test)
        ));
        script
    }
}

fn share(tag: &str, path: &Path, read_only: bool) -> Vec<String> {
    let readonly = if read_only { ",readonly=on" } else { "" };
    vec![
        "-fsdev".into(),
        format!(
            "local,id={tag},path={},security_model=none{readonly}",
            path.display()
        ),
        "-device".into(),
        format!("virtio-9p-pci,fsdev={tag},mount_tag={tag}"),
    ]
}

fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// A booted guest.
pub struct RunningGuest {
    name: String,
    dir: PathBuf,
    console: PathBuf,
    child: tokio::process::Child,
}

impl RunningGuest {
    /// The guest's own directory (shared read-write at the same path).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The host half's side of a rendezvous: waits for the guest to ask for `step` (a
    /// file it writes in its directory, holding a detail of the request) and returns
    /// that detail; `None` once the guest has powered off without asking.
    pub async fn asked(&mut self, step: &str) -> Option<String> {
        let asked = self.dir.join(format!("ask-{step}"));
        loop {
            if let Ok(detail) = std::fs::read_to_string(&asked) {
                return Some(detail);
            }
            if !matches!(self.child.try_wait(), Ok(None)) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the guest to power off and panics, with its output and console, unless
    /// its guest half passed.
    pub async fn passed(self, timeout: Duration) {
        if let Err(failure) = self.outcome(timeout).await {
            panic!("{failure}");
        }
    }

    /// Waits for the guest to power off: Ok if its guest half passed, else what it
    /// printed, qemu's errors and its console.
    pub async fn outcome(mut self, timeout: Duration) -> Result<(), String> {
        let status = tokio::time::timeout(timeout, self.child.wait()).await;
        let exit = std::fs::read_to_string(self.dir.join("exit-code")).ok();
        let ok = matches!(&status, Ok(Ok(s)) if s.success())
            && exit.as_deref().map(str::trim) == Some("0");
        if ok {
            return Ok(());
        }
        let _ = self.child.start_kill();
        let mut qemu_err = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = stderr.read_to_string(&mut qemu_err).await;
        }
        let log = std::fs::read_to_string(self.dir.join("guest.log")).unwrap_or_default();
        let console = std::fs::read_to_string(&self.console).unwrap_or_default();
        let kept = keep_console(&self.name, &self.console);
        Err(format!(
            "guest {} failed (qemu: {status:?}, guest.sh exit code: {exit:?})\n\
             --- guest output ---\n{log}\n--- qemu ---\n{qemu_err}\n\
             --- console (kept at {kept}) ---\n{console}",
            self.name
        ))
    }
}

/// Waits for every guest and panics with the story of each that failed.
pub async fn all_passed(guests: Vec<RunningGuest>, timeout: Duration) {
    let outcomes =
        futures_util::future::join_all(guests.into_iter().map(|g| g.outcome(timeout))).await;
    let failures: Vec<String> = outcomes.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Copies a failing guest's console log to `target/vm-logs`, which outlives the
/// test's temporary directory.
fn keep_console(name: &str, console: &Path) -> String {
    let exe = std::env::current_exe().expect("current exe");
    let Some(target) = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
    else {
        return console.display().to_string();
    };
    let dir = target.join("vm-logs");
    let _ = std::fs::create_dir_all(&dir);
    let test = std::thread::current()
        .name()
        .unwrap_or("test")
        .replace("::", "-");
    let kept = dir.join(format!("{test}-{name}.console.log"));
    match std::fs::copy(console, &kept) {
        Ok(_) => kept.display().to_string(),
        Err(_) => console.display().to_string(),
    }
}

/// Runs the half of a VM test that belongs where this process is: `guest` inside a
/// VM, `host` everywhere else. Each half gets a current-thread runtime of its own.
pub fn two_halves<H, G>(host: impl FnOnce() -> H, guest: impl FnOnce() -> G)
where
    H: std::future::Future<Output = ()>,
    G: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match guest_name() {
        Some(_) => runtime.block_on(guest()),
        None => runtime.block_on(host()),
    }
}

/// Tells the guest that the host did `step`.
pub fn host_did(guest_dir: &Path, step: &str) {
    std::fs::write(guest_dir.join(format!("done-{step}")), b"").expect("write the host's answer");
}

/// The guest half's side: asks the host to do `step` (with `detail`, which the host
/// reads from the request file) and waits until it has.
pub async fn ask_host_with(step: &str, detail: &str) {
    let dir = std::env::current_dir().expect("the guest's directory");
    // Written aside and renamed: the host polls for the request and must never read it
    // created but not yet written (it once read an empty path and removed nothing).
    let asking = dir.join(format!(".ask-{step}"));
    std::fs::write(&asking, detail).expect("write the request");
    std::fs::rename(&asking, dir.join(format!("ask-{step}"))).expect("ask the host");
    let done = dir.join(format!("done-{step}"));
    crate::wait_for(
        &format!("the host to {step}"),
        Duration::from_secs(120),
        async || done.exists().then_some(()),
    )
    .await;
}
