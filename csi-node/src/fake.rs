//! A recording [`Mounts`] for the handlers' unit tests: mounts are entries in a table,
//! never made; every effect is written down, paths shown relative to the test's root.
//! What the table holds is what the checks see: a fake bind makes its target look like
//! a mount of its source. Files that nothing is mounted on answer from the real
//! filesystem (the tests' temporary directories).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::mount::MsFlags;

use crate::beneath::{Handle, MountFacts};
use crate::error::{Error, Result};
use crate::host::{Attached, Loop, Mounts, Usage};
use crate::mountinfo::MountTable;

const EXT4_MAGIC: i64 = 0xEF53;
const NFS_MAGIC: i64 = 0x6969;
const TMPFS_MAGIC: i64 = 0x0102_1994;
/// Mount ids the fake hands out start here, far from the kernel's.
const FIRST_ID: u64 = 1 << 40;

/// One mount in the fake table.
#[derive(Debug, Clone)]
struct Mounted {
    point: PathBuf,
    id: u64,
    /// The identity of the mount's root: what the target now shows.
    identity: (u64, u64),
    read_only: bool,
    fs_type: String,
    source: String,
}

impl Mounted {
    fn facts(&self) -> MountFacts {
        MountFacts {
            mount_root: true,
            mount_id: self.id,
            identity: self.identity,
        }
    }
}

#[derive(Debug, Clone)]
struct Attachment {
    device: PathBuf,
    file: PathBuf,
    number: u64,
    autoclear: bool,
}

#[derive(Debug, Default)]
struct State {
    /// In mount order: the last at a path is the topmost.
    mounts: Vec<Mounted>,
    next_id: u64,
    loops: Vec<Attachment>,
    /// The ext4 size of each file's filesystem, where it differs from the file's size.
    fs_sizes: HashMap<PathBuf, u64>,
    stale: Vec<PathBuf>,
    /// Failures to inject: an effect's name and the errno it fails with.
    failures: HashMap<&'static str, Errno>,
    /// Unmounts of a path that fail EBUSY before one works.
    busy: HashMap<PathBuf, u32>,
    no_cap_sys_resource: bool,
    effects: Vec<String>,
}

/// The fake host.
#[derive(Debug)]
pub(crate) struct FakeMounts {
    root: PathBuf,
    state: Mutex<State>,
}

impl FakeMounts {
    /// A fake whose effects show paths relative to `root` (the test's directory).
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            root: root.into(),
            state: Mutex::new(State {
                next_id: FIRST_ID,
                ..State::default()
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn show(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    fn record(&self, effect: String) {
        self.state().effects.push(effect);
    }

    fn injected(&self, effect: &'static str) -> Option<Errno> {
        self.state().failures.get(effect).copied()
    }

    /// The effects so far, and none after.
    pub(crate) fn take_effects(&self) -> Vec<String> {
        std::mem::take(&mut self.state().effects)
    }

    /// Makes the effect named `effect` ("bind", "tmpfs", "mount", "unmount") fail.
    pub(crate) fn fail(&self, effect: &'static str, errno: Errno) {
        self.state().failures.insert(effect, errno);
    }

    /// Makes the next `times` unmounts of `path` fail EBUSY.
    pub(crate) fn busy(&self, path: &Path, times: u32) {
        self.state().busy.insert(path.into(), times);
    }

    /// Makes `statvfs` of `path` answer ESTALE until something is mounted there again.
    pub(crate) fn stale(&self, path: &Path) {
        self.state().stale.push(path.into());
    }

    /// Gives the filesystem in `file` a size other than the file's.
    pub(crate) fn fs_size(&self, file: &Path, bytes: u64) {
        self.state().fs_sizes.insert(file.into(), bytes);
    }

    /// Takes CAP_SYS_RESOURCE away.
    pub(crate) fn without_cap_sys_resource(&self) {
        self.state().no_cap_sys_resource = true;
    }

    /// Puts a mount in the table as if it was there before the test: a filesystem of
    /// `fs_type` from `source` at `point`.
    pub(crate) fn mounted(&self, point: &Path, fs_type: &str, source: &str) {
        // Its own root, as a new tmpfs or NFS mount has.
        let id = self.state().next_id;
        self.add(point, (id, 1), false, (fs_type, source));
    }

    fn topmost(&self, point: &Path) -> Option<Mounted> {
        self.state()
            .mounts
            .iter()
            .rev()
            .find(|m| m.point == point)
            .cloned()
    }

    fn add(&self, point: &Path, identity: (u64, u64), read_only: bool, fs: (&str, &str)) {
        let mut state = self.state();
        let id = state.next_id;
        state.next_id += 1;
        state.stale.retain(|p| p != point);
        state.mounts.push(Mounted {
            point: point.into(),
            id,
            identity,
            read_only,
            fs_type: fs.0.into(),
            source: fs.1.into(),
        });
    }

    /// The filesystem a bind of `path` shows: that of the fake mount holding it, if any.
    fn holder(&self, path: &Path) -> Option<(Mounted, PathBuf)> {
        self.state()
            .mounts
            .iter()
            .rev()
            .filter_map(|m| path.strip_prefix(&m.point).ok().map(|rest| (m, rest)))
            .max_by_key(|(m, _)| m.point.components().count())
            .map(|(m, rest)| (m.clone(), rest.to_path_buf()))
    }

    fn facts_of(
        &self,
        path: &Path,
        real: impl FnOnce() -> Result<MountFacts>,
    ) -> Result<MountFacts> {
        match self.topmost(path) {
            Some(m) => Ok(m.facts()),
            None => real(),
        }
    }

    fn attachment(&self, device: &Path) -> Option<Attachment> {
        self.state()
            .loops
            .iter()
            .find(|l| l.device == device)
            .cloned()
    }
}

fn flag(read_only: bool) -> &'static str {
    if read_only { " ro" } else { "" }
}

impl Mounts for FakeMounts {
    fn facts(&self, handle: &Handle) -> Result<MountFacts> {
        self.facts_of(handle.path(), || handle.mount_facts())
    }

    fn child_facts(&self, dir: &Handle, name: &OsStr) -> Result<Option<MountFacts>> {
        match self.topmost(&dir.path().join(name)) {
            Some(m) => Ok(Some(m.facts())),
            None => dir.child_mount_facts(name),
        }
    }

    fn facts_at(&self, path: &Path) -> std::io::Result<MountFacts> {
        self.facts_of(path, || {
            crate::beneath::mount_facts_at(path)
                .map_err(|e| Error::io(format!("statx {}", path.display()), e))
        })
        .map_err(|e| std::io::Error::other(e.to_string()))
    }

    fn read_only(&self, handle: &Handle) -> Result<bool> {
        match self.topmost(handle.path()) {
            Some(m) => Ok(m.read_only),
            None => handle.read_only_mount(),
        }
    }

    fn fs_magic(&self, handle: &Handle) -> Result<i64> {
        match self.topmost(handle.path()) {
            Some(m) if m.fs_type == "tmpfs" => Ok(TMPFS_MAGIC),
            Some(m) if m.fs_type.starts_with("nfs") => Ok(NFS_MAGIC),
            Some(_) => Ok(EXT4_MAGIC),
            None => handle.fs_magic(),
        }
    }

    fn usage(&self, path: &Path) -> std::result::Result<Usage, Errno> {
        if self.state().stale.iter().any(|p| p == path) {
            return Err(Errno::ESTALE);
        }
        Ok(Usage {
            fragment_size: 4096,
            blocks: 1000,
            blocks_free: 600,
            blocks_available: 500,
            files: 100,
            files_free: 40,
            files_available: 30,
        })
    }

    fn table(&self) -> Result<MountTable> {
        let text: String = self
            .state()
            .mounts
            .iter()
            .map(|m| {
                format!(
                    "{} 1 0:{} / {} {} - {} {} rw\n",
                    m.id,
                    m.id - FIRST_ID + 100,
                    m.point.display(),
                    if m.read_only { "ro" } else { "rw" },
                    m.fs_type,
                    m.source
                )
            })
            .collect();
        Ok(MountTable::parse(&text))
    }

    fn detached_copy(&self, root: &Handle) -> Result<Handle> {
        Handle::open_root(root.path())
    }

    fn bind(&self, source: &Handle, target: &Handle, read_only: bool) -> Result<()> {
        if let Some(errno) = self.injected("bind") {
            return Err(Error::mount("bind", errno));
        }
        let identity = self.facts(source)?.identity;
        let (fs_type, shown) = match self.holder(source.path()) {
            Some((m, rest)) if m.fs_type.starts_with("nfs") => (
                m.fs_type.clone(),
                format!("{}/{}", m.source, rest.display())
                    .trim_end_matches('/')
                    .to_string(),
            ),
            Some((m, _)) => (m.fs_type.clone(), m.source.clone()),
            None => ("none".into(), source.path().display().to_string()),
        };
        self.add(target.path(), identity, read_only, (&fs_type, &shown));
        self.record(format!(
            "bind {} -> {}{}",
            self.show(source.path()),
            self.show(target.path()),
            flag(read_only)
        ));
        Ok(())
    }

    fn tmpfs(
        &self,
        target: &Handle,
        size_bytes: u64,
        read_only: bool,
        group: Option<u32>,
    ) -> Result<()> {
        if let Some(errno) = self.injected("tmpfs") {
            return Err(Error::mount("tmpfs", errno));
        }
        let id = self.state().next_id;
        // A new tmpfs's root is its own file; its group is the mount option's.
        if let Some(gid) = group {
            crate::group::apply(target, gid)?;
        }
        self.add(target.path(), (id, 1), read_only, ("tmpfs", "tmpfs"));
        self.record(format!(
            "tmpfs {} size={size_bytes}{}{}",
            self.show(target.path()),
            group.map(|g| format!(" gid={g}")).unwrap_or_default(),
            flag(read_only)
        ));
        Ok(())
    }

    fn mount(
        &self,
        source: &str,
        target: &Handle,
        fs_type: &str,
        flags: MsFlags,
        _data: Option<&str>,
    ) -> std::result::Result<(), Errno> {
        if let Some(errno) = self.injected("mount") {
            return Err(errno);
        }
        let read_only = flags.contains(MsFlags::MS_RDONLY);
        let id = self.state().next_id;
        // An ext4 root's device is its loop device; an NFS mount's is its own.
        let identity = match self.attachment(Path::new(source)) {
            Some(attached) => (attached.number, 2),
            None => (id, 1),
        };
        self.add(target.path(), identity, read_only, (fs_type, source));
        self.record(format!(
            "mount {fs_type} {} -> {}{}",
            self.show(Path::new(source)),
            self.show(target.path()),
            flag(read_only)
        ));
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        let busy = {
            let mut state = self.state();
            match state.busy.get_mut(target) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            }
        };
        if busy {
            self.record(format!("unmount {} (busy)", self.show(target)));
            return Err(Error::mount("unmount", Errno::EBUSY));
        }
        if let Some(errno) = self.injected("unmount") {
            return Err(Error::mount("unmount", errno));
        }
        if self.take_down(target) {
            self.record(format!("unmount {}", self.show(target)));
        }
        Ok(())
    }

    fn detach(&self, target: &Path) -> Result<()> {
        self.take_down(target);
        self.record(format!("detach {}", self.show(target)));
        Ok(())
    }

    fn loop_device_of(&self, file: &Path) -> Option<Loop> {
        self.state()
            .loops
            .iter()
            .find(|l| l.file == file)
            .map(|l| Loop {
                device: l.device.clone(),
                number: Some(l.number),
            })
    }

    fn attach_loop(&self, file: &Path, autoclear: bool) -> Result<Attached> {
        let mut state = self.state();
        let n = state.loops.len() as u64;
        let dev = self.root.join("dev");
        let device = dev.join(format!("loop{n}"));
        // A node to open: publish opens the device it binds.
        std::fs::create_dir_all(&dev)
            .and_then(|()| std::fs::write(&device, b""))
            .map_err(|e| Error::io("fake loop device", e))?;
        state.loops.push(Attachment {
            device: device.clone(),
            file: file.into(),
            number: rustix::fs::makedev(7, n as u32),
            autoclear,
        });
        drop(state);
        self.record(format!(
            "attach {} -> {}{}",
            self.show(file),
            self.show(&device),
            if autoclear { " autoclear" } else { "" }
        ));
        Ok(Attached::unheld(device))
    }

    fn detach_loop(&self, device: &Path) -> Result<()> {
        self.state().loops.retain(|l| l.device != device);
        self.record(format!("detach-loop {}", self.show(device)));
        Ok(())
    }

    fn refresh_loop_capacity(&self, device: &Path) -> Result<()> {
        self.record(format!("set-capacity {}", self.show(device)));
        Ok(())
    }

    fn mounted_loop_device(&self, path: &Path) -> Result<Option<PathBuf>> {
        Ok(self
            .topmost(path)
            .filter(|m| m.fs_type == "ext4")
            .and_then(|m| self.attachment(Path::new(&m.source)))
            .map(|a| a.device))
    }

    fn device_size(&self, device: &Path) -> Result<u64> {
        let attached = self
            .attachment(device)
            .ok_or_else(|| Error::io("fake device size", std::io::ErrorKind::NotFound.into()))?;
        std::fs::metadata(&attached.file)
            .map(|m| m.len())
            .map_err(|e| Error::io("fake device size", e))
    }

    fn ext4_size(&self, device: &Path) -> Result<u64> {
        let attached = self
            .attachment(device)
            .ok_or_else(|| Error::io("fake ext4 size", std::io::ErrorKind::NotFound.into()))?;
        let recorded = self.state().fs_sizes.get(&attached.file).copied();
        match recorded {
            Some(bytes) => Ok(bytes),
            None => self.device_size(device),
        }
    }

    fn grow_offline(&self, device: &Path) -> Result<()> {
        self.grow(device, "grow-offline")
    }

    fn grow_online(&self, device: &Path) -> Result<()> {
        self.grow(device, "grow-online")
    }

    fn may_grow_online(&self) -> bool {
        !self.state().no_cap_sys_resource
    }
}

impl FakeMounts {
    /// Removes the topmost mount at `target`, and as the kernel does, an autoclear loop
    /// device that no mount uses any more. Whether there was one.
    fn take_down(&self, target: &Path) -> bool {
        let mut state = self.state();
        let Some(at) = state.mounts.iter().rposition(|m| m.point == target) else {
            return false;
        };
        let gone = state.mounts.remove(at);
        let still_used = state.mounts.iter().any(|m| m.source == gone.source);
        if !still_used {
            state
                .loops
                .retain(|l| !(l.autoclear && l.device == Path::new(&gone.source)));
        }
        true
    }

    fn grow(&self, device: &Path, effect: &str) -> Result<()> {
        if let Some(attached) = self.attachment(device) {
            self.state().fs_sizes.remove(&attached.file);
        }
        self.record(format!("{effect} {}", self.show(device)));
        Ok(())
    }
}
