//! One builder for the driver processes the tests start: `stowage controller`, the
//! node plugin (`stowage node`, or the lean `stowage-node`), or both on one local root.
//! Each names what it wants (a local root, a kubelet directory, hostPath prefixes,
//! more flags) and gets back a [`Driver`]: the process, killed when dropped, with a CSI
//! client connected to its socket and the directory its files live in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::csi::Csi;
use crate::mounts::MountedDir;
use crate::process::Stowage;

/// The directory a launch keeps its sockets, state and local root in; what it owns
/// goes (with whatever is mounted below it) after the processes.
struct Home {
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
    _mounted: Option<MountedDir>,
}

impl Home {
    fn temp() -> Arc<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        Arc::new(Self {
            path: dir.path().to_path_buf(),
            _temp: Some(dir),
            _mounted: None,
        })
    }

    fn mounted(dir: MountedDir) -> Arc<Self> {
        Arc::new(Self {
            path: dir.path().to_path_buf(),
            _temp: None,
            _mounted: Some(dir),
        })
    }

    /// The caller's directory: it removes it.
    fn borrowed(dir: &Path) -> Arc<Self> {
        Arc::new(Self {
            path: dir.to_path_buf(),
            _temp: None,
            _mounted: None,
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Controller,
    Node,
}

/// What to start, and with which flags: built with the methods below, started by
/// [`start`](Self::start) (one process) or [`start_split`](Self::start_split) (both).
#[derive(Clone)]
pub struct Launch {
    role: Role,
    home: Arc<Home>,
    node: Option<String>,
    local_root: Option<PathBuf>,
    kubelet: bool,
    allow: Vec<PathBuf>,
    flags: Vec<String>,
    wrapper: Vec<String>,
    lean: bool,
}

impl Launch {
    /// `stowage controller` with its state in `controller-state/` of a new temporary
    /// directory: NFS volumes only until [`local`](Self::local) gives it a node's root.
    pub fn controller() -> Self {
        Self::new(Role::Controller, Home::temp(), None)
    }

    /// `stowage node` for `node`: Identity, Node and the Controller service of its local
    /// volumes on one socket, its local root `local/` and state `state/` in a new
    /// directory whose mounts are undone when the driver goes.
    pub fn node(node: &str) -> Self {
        Self::new(Role::Node, Home::mounted(MountedDir::new()), Some(node))
    }

    fn new(role: Role, home: Arc<Home>, node: Option<&str>) -> Self {
        Self {
            role,
            home,
            node: node.map(str::to_string),
            local_root: None,
            kubelet: false,
            allow: Vec::new(),
            flags: Vec::new(),
            wrapper: Vec::new(),
            lean: false,
        }
    }

    /// Keeps its files in `dir` (prepared by the caller, e.g. a tmpfs mounted at
    /// `dir/local`), which it then owns.
    pub fn in_mounted(mut self, dir: MountedDir) -> Self {
        self.home = Home::mounted(dir);
        self
    }

    /// Keeps its files in the caller's `dir`, which outlives the driver.
    pub fn in_dir(mut self, dir: &Path) -> Self {
        self.home = Home::borrowed(dir);
        self
    }

    /// The controller serves `node`'s local volumes, on `local/` of its directory.
    pub fn local(mut self, node: &str) -> Self {
        self.node = Some(node.to_string());
        self
    }

    /// The local root at `path` instead of `local/` of the driver's directory.
    pub fn local_root_at(mut self, path: &Path) -> Self {
        self.local_root = Some(path.to_path_buf());
        self
    }

    /// `--kubelet-dir` at `kubelet/` of the driver's directory (made at start).
    pub fn kubelet_dir(mut self) -> Self {
        self.kubelet = true;
        self
    }

    /// `--host-path-allow prefix` (repeatable).
    pub fn allow_host_path(mut self, prefix: impl AsRef<Path>) -> Self {
        self.allow.push(prefix.as_ref().to_path_buf());
        self
    }

    /// More flags, as the binary takes them.
    pub fn flags(mut self, flags: &[&str]) -> Self {
        self.flags.extend(flags.iter().map(|f| f.to_string()));
        self
    }

    /// Runs it under a wrapper command, e.g. `setpriv` to drop a capability.
    pub fn wrapped(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(|w| w.to_string()).collect();
        self
    }

    /// The node plugin as the lean `stowage-node` binary rather than `stowage node`.
    pub fn lean(mut self) -> Self {
        assert_eq!(
            self.role,
            Role::Node,
            "only the node plugin has a lean binary"
        );
        self.lean = true;
        self
    }

    /// The driver's directory.
    pub fn dir(&self) -> &Path {
        &self.home.path
    }

    fn socket(&self) -> PathBuf {
        self.dir().join(match self.role {
            Role::Controller => "controller.sock",
            Role::Node => "node.sock",
        })
    }

    fn root(&self) -> PathBuf {
        self.local_root
            .clone()
            .unwrap_or_else(|| self.dir().join("local"))
    }

    fn kubelet(&self) -> PathBuf {
        self.dir().join("kubelet")
    }

    fn args(&self) -> Vec<String> {
        let path = |p: PathBuf| p.to_str().expect("utf8 path").to_string();
        let mut args = Vec::new();
        let mut flag = |name: &str, value: String| args.extend([name.to_string(), value]);
        match self.role {
            Role::Controller => {
                flag("--state-dir", path(self.dir().join("controller-state")));
                if let Some(node) = &self.node {
                    flag("--node-id", node.clone());
                    flag("--local-root", path(self.root()));
                }
            }
            Role::Node => {
                flag(
                    "--node-id",
                    self.node.clone().expect("a node plugin's node"),
                );
                flag("--local-root", path(self.root()));
                flag("--state-dir", path(self.dir().join("state")));
            }
        }
        if self.kubelet {
            flag("--kubelet-dir", path(self.kubelet()));
        }
        for prefix in &self.allow {
            flag("--host-path-allow", path(prefix.clone()));
        }
        args.extend(self.flags.iter().cloned());
        args
    }

    async fn spawn(&self) -> (Stowage, Csi) {
        if self.kubelet {
            std::fs::create_dir_all(self.kubelet()).expect("kubelet dir");
        }
        let args = self.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let socket = self.socket();
        let subcommand = match self.role {
            Role::Controller => "controller",
            Role::Node => "node",
        };
        if self.lean {
            Stowage::start_lean_node(&socket, &args).await
        } else if self.wrapper.is_empty() {
            Stowage::start(subcommand, &socket, &args).await
        } else {
            let wrapper: Vec<&str> = self.wrapper.iter().map(String::as_str).collect();
            Stowage::start_wrapped(&wrapper, subcommand, &socket, &args).await
        }
    }

    /// Starts it and waits until Probe answers.
    pub async fn start(self) -> Driver {
        let (process, csi) = self.spawn().await;
        Driver {
            csi,
            process: Some(process),
            launch: self,
        }
    }

    /// Both processes on one local root, as a cluster splits them: this node plugin
    /// with `--without-controller`, and `stowage controller` serving the same node's
    /// local volumes from the same root (the only one to open its record log).
    pub async fn start_split(self) -> Split {
        assert_eq!(self.role, Role::Node, "a split starts from the node plugin");
        let node_id = self.node.clone().expect("a node plugin's node");
        let mut controller = Self::new(Role::Controller, self.home.clone(), Some(&node_id));
        controller.local_root = self.local_root.clone();
        let node = self.flags(&["--without-controller"]).start().await;
        Split {
            controller: controller.start().await,
            node,
        }
    }
}

/// A started driver process with a CSI client on its socket; killed when dropped.
pub struct Driver {
    pub csi: Csi,
    process: Option<Stowage>,
    launch: Launch,
}

impl Driver {
    /// The directory holding its socket, state and (by default) local root.
    pub fn dir(&self) -> &Path {
        self.launch.dir()
    }

    pub fn socket(&self) -> PathBuf {
        self.launch.socket()
    }

    /// Its local root.
    pub fn root(&self) -> PathBuf {
        self.launch.root()
    }

    /// Its kubelet directory, or a path below it (`""` for the directory itself).
    pub fn kubelet(&self, sub: &str) -> PathBuf {
        let kubelet = self.launch.kubelet();
        if sub.is_empty() {
            kubelet
        } else {
            kubelet.join(sub)
        }
    }

    /// The data of a local volume (`local:<key>:<node>`) as the root lays it out:
    /// `volumes/<key><suffix>`, the suffix `.img` for an image or block volume.
    pub fn volume_data(&self, volume_id: &str, suffix: &str) -> PathBuf {
        let key = volume_id.split(':').nth(1).expect("a local volume ID");
        self.root().join("volumes").join(format!("{key}{suffix}"))
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Stowage::pid)
    }

    fn running(&mut self) -> Stowage {
        self.process.take().expect("the driver is running")
    }

    /// kill -9: the process gets no chance to clean up. [`relaunch`](Self::relaunch)
    /// starts it again.
    pub async fn kill_hard(&mut self) {
        self.running().kill_hard().await;
    }

    /// SIGTERM, then the exit status of a clean exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        self.running().terminate().await
    }

    /// Starts it again with the same flags, on the same directory, after a stop.
    pub async fn relaunch(&mut self) {
        assert!(self.process.is_none(), "stop it before starting it again");
        let (process, csi) = self.launch.spawn().await;
        self.process = Some(process);
        self.csi = csi;
    }

    /// kill -9 and start again.
    pub async fn restart_hard(&mut self) {
        self.kill_hard().await;
        self.relaunch().await;
    }
}

/// A node plugin and the controller of its local volumes in two processes.
pub struct Split {
    pub controller: Driver,
    pub node: Driver,
}
