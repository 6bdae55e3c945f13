//! Frees deleted data in the background, a slice at a time.
//!
//! A delete answers once its record is gone; its data then moves into the root's
//! `reaping/` directory under a unique name ([`Reaper::take`]) and one thread frees
//! it there. Nothing in `reaping/` is ever a volume: open never restores from it and
//! a volume made again under the same key never meets it.
//!
//! A quota volume's files keep their XFS project id until freed, and their blocks
//! count against it: the project id goes into the name (`<nonce>-p<id>.<name>`) and
//! [`Reaper::holds_project`] keeps the id from being leased again meanwhile.
//!
//! Why slices: the local root's filesystem may discard freed blocks (ext4 `-o
//! discard`): at its journal commit, which every fsync on it (the record log's, so
//! every CreateVolume and DeleteVolume) waits for, or without a journal in the unlink
//! itself, ahead of those fsyncs at the disk. Unlinking a 1 GiB file discards 1 GiB at
//! once; freeing it [`Pacing::slice`] at a time, with an fsync after each slice,
//! discards a slice at a time. Between slices the thread pauses, so the small calls'
//! commits find the disk between them. The thread runs niced and in the idle I/O
//! class ([`localfs::enter_background`]).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::fcntl::FallocateFlags;
use nix::unistd::Whence;

use crate::error::{Error, Result};
use crate::localfs;
use crate::pacer::{self, Turn};

/// How fast deleted data is freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// Allocated bytes freed between two fsyncs: what one journal commit discards.
    pub slice: u64,
    /// The wait after each slice.
    pub pause: Duration,
}

impl Pacing {
    /// 16 MiB, then 10 ms: about 1 s a GiB. Measured on an ext4 root with online
    /// discard (ARCHITECTURE.md, "Deleted data"): a small file's fdatasync beside the
    /// reap kept a p99 within 1.3x of an idle disk's, where a plain unlink of 1 GiB
    /// gave 4-15x, and 64 MiB slices 2-4x.
    pub const GENTLE: Self = Self {
        slice: 16 << 20,
        pause: Duration::from_millis(10),
    };

    /// What to free before the next fsync, given how the reaper got its turn from the
    /// pacer: a whole slice when the calls' durable writes are still, an eighth when it
    /// went between them (a call's fsync that comes meanwhile waits for that slice's
    /// discard). Whole blocks, at least one.
    fn step(&self, turn: Turn) -> u64 {
        let bytes = match turn {
            Turn::Quiet => self.slice,
            Turn::Waited => self.slice / 8,
        };
        (bytes / BLOCK).max(1) * BLOCK
    }
}

/// What a slice is rounded to (the largest block size of the roots' filesystems).
const BLOCK: u64 = 4096;

/// How long dropping the reaper waits for its thread to put down a slice.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The background thread that frees data set aside by deletes, and its queue.
#[derive(Debug)]
pub struct Reaper {
    dir: PathBuf,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    pacing: Pacing,
}

/// Data set aside in `reaping/`, and the XFS project its files are in.
#[derive(Debug, Clone)]
struct Item {
    path: PathBuf,
    project: Option<u32>,
    /// Of a lone file (an image or block volume), what its freeing will still give
    /// back; a tree's is not known without a walk, and counts as 0.
    counted: u64,
}

impl Item {
    fn new(path: PathBuf, project: Option<u32>) -> Self {
        let counted = match fs::symlink_metadata(&path) {
            // Only an unlink that frees the blocks gives them back.
            Ok(meta)
                if meta.is_file()
                    && meta.nlink() == 1
                    && stowage_common::loop_device::backing(&path).is_none() =>
            {
                allocated(&meta)
            }
            _ => 0,
        };
        Self {
            path,
            project,
            counted,
        }
    }

    /// An entry of `reaping/`, its project read back from its name.
    fn found(path: PathBuf) -> Self {
        let project = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.get(NONCE_LEN..))
            .and_then(|rest| rest.strip_prefix("-p"))
            .and_then(|rest| rest.split('.').next())
            .and_then(|id| id.parse().ok());
        Self::new(path, project)
    }
}

/// The length of the random part of a name in `reaping/` (a simple UUID).
const NONCE_LEN: usize = 32;

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Item>,
    /// What is being freed.
    current: Option<Item>,
    stopping: bool,
    /// The thread has not returned.
    running: bool,
    /// The thread's id, for its priority to be read from outside.
    tid: Option<i32>,
}

/// Why a reap stopped before the end.
enum Halt {
    /// The reaper is being dropped: the rest waits in `reaping/` for the next start.
    Stopped,
    Failed(Error),
}

impl From<Error> for Halt {
    fn from(e: Error) -> Self {
        Self::Failed(e)
    }
}

impl Reaper {
    /// Starts the thread on `dir` (made if missing), queuing what an earlier process
    /// left there.
    pub fn start(dir: &Path, pacing: Pacing) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        // Absolute, as the kernel names a loop device's backing file.
        let dir = &fs::canonicalize(dir)
            .map_err(|e| Error::io(format!("resolve {}", dir.display()), e))?;
        let mut leftovers = VecDeque::new();
        for entry in
            fs::read_dir(dir).map_err(|e| Error::io(format!("list {}", dir.display()), e))?
        {
            let entry = entry.map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
            leftovers.push_back(Item::found(entry.path()));
        }
        if !leftovers.is_empty() {
            tracing::info!(dir = %dir.display(), items = leftovers.len(), "freeing deleted data left by an earlier run");
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: leftovers,
                running: true,
                ..State::default()
            }),
            changed: Condvar::new(),
            pacing: Pacing {
                slice: (pacing.slice / BLOCK).max(1) * BLOCK,
                ..pacing
            },
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || worker.run())
            .map_err(|e| Error::io("start the reaper thread", e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Moves `path` (a file or a tree; nothing if missing) into `reaping/` under a
    /// name no other takes, and queues it. The rename is the only work done here.
    pub fn take(&self, path: &Path) -> Result<()> {
        self.take_in_project(path, None)
    }

    /// [`take`](Self::take) for data whose files are in XFS project `project`: the id
    /// is held ([`holds_project`](Self::holds_project)) until they are freed.
    pub fn take_in_project(&self, path: &Path, project: Option<u32>) -> Result<()> {
        // Most takes find nothing (a create looking for what a failed one left): one
        // stat answers those.
        if fs::symlink_metadata(path).is_err_and(|e| e.kind() == ErrorKind::NotFound) {
            return Ok(());
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().trim_start_matches('.').to_string())
            .unwrap_or_default();
        let nonce = uuid::Uuid::new_v4().simple();
        let to = self.dir.join(match project {
            Some(id) => format!("{nonce}-p{id}.{name}"),
            None => format!("{nonce}.{name}"),
        });
        let failed = |e| Error::io(format!("set aside {} for freeing", path.display()), e);
        match fs::rename(path, &to) {
            Ok(()) => {}
            // Nothing to free, or `reaping/` itself went (an operator's cleanup): made
            // again, so deleted data never stays under a volume's name for want of it.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if fs::symlink_metadata(path).is_err() {
                    return Ok(());
                }
                fs::create_dir_all(&self.dir).map_err(failed)?;
                fs::rename(path, &to).map_err(failed)?;
            }
            Err(e) => return Err(failed(e)),
        }
        let item = Item::new(to, project);
        self.shared.lock().queue.push_back(item);
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Are files of XFS project `id` still to be freed? Their blocks count against the
    /// project until they are, so the id is not for a new volume yet.
    pub fn holds_project(&self, id: u32) -> bool {
        let state = self.shared.lock();
        state
            .current
            .iter()
            .chain(state.queue.iter())
            .any(|item| item.project == Some(id))
    }

    /// Bytes that deleted image and block files still hold and will give back within
    /// about a second per GiB: free space to come, which statfs does not show yet.
    pub fn pending_bytes(&self) -> u64 {
        let state = self.shared.lock();
        state
            .current
            .iter()
            .chain(state.queue.iter())
            .map(|item| item.counted)
            .sum()
    }

    /// The reaper thread's id while it runs.
    pub fn thread_id(&self) -> Option<i32> {
        self.shared.lock().tid
    }

    /// Waits until nothing is queued or being freed; false if `timeout` passed first.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let busy = |state: &State| state.current.is_some() || !state.queue.is_empty();
        let state = self.shared.lock();
        self.shared
            .wait_while(state, Instant::now() + timeout, busy)
            .is_some()
    }
}

impl Drop for Reaper {
    /// Stops the thread after its current slice; what is left stays in `reaping/`.
    /// A thread stuck in a system call is left behind after [`STOP_WAIT`] rather than
    /// holding up shutdown.
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.stopping = true;
        self.shared.changed.notify_all();
        let running = |state: &State| state.running;
        let Some(state) = self
            .shared
            .wait_while(state, Instant::now() + STOP_WAIT, running)
        else {
            tracing::warn!("the reaper thread did not stop in time; left running");
            return;
        };
        drop(state);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::warn!("the reaper thread panicked");
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for changes while `busy` holds: the state again, or `None` once `deadline`
    /// passed first.
    fn wait_while<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        deadline: Instant,
        busy: impl Fn(&State) -> bool,
    ) -> Option<MutexGuard<'a, State>> {
        while busy(&state) {
            let left = deadline.checked_duration_since(Instant::now())?;
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Some(state)
    }

    fn run(&self) {
        localfs::enter_background();
        self.lock().tid = Some(rustix::thread::gettid().as_raw_nonzero().get());
        while let Some(path) = self.next() {
            let started = Instant::now();
            // A bug here must not end the thread: the item is left for the next start.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                Walk::new(self, &path).and_then(|mut walk| walk.free(&path))
            }));
            match outcome {
                Ok(Ok(())) => {
                    tracing::debug!(path = %path.display(), took = ?started.elapsed(), "freed deleted data")
                }
                Ok(Err(Halt::Stopped)) => {
                    tracing::debug!(path = %path.display(), "freeing stopped; resumes at the next start")
                }
                Ok(Err(Halt::Failed(e))) => {
                    tracing::warn!(path = %path.display(), error = %e, "deleted data not freed; retried at the next start")
                }
                Err(_) => {
                    tracing::warn!(path = %path.display(), "freeing deleted data panicked; retried at the next start")
                }
            }
            // Whatever the outcome, the item (and what it counted) goes.
            self.lock().current = None;
            self.changed.notify_all();
        }
        self.lock().running = false;
        self.changed.notify_all();
    }

    /// The next path to free, or `None` when stopping.
    fn next(&self) -> Option<PathBuf> {
        let mut state = self.lock();
        loop {
            if state.stopping {
                return None;
            }
            if let Some(item) = state.queue.pop_front() {
                state.current = Some(item.clone());
                return Some(item.path);
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// `bytes` of the current item are about to be freed: no longer counted as to
    /// come. Before the freeing, so that a caller sees them neither twice nor too soon
    /// by more than a slice's worth of waiting.
    fn uncount(&self, bytes: u64) {
        if let Some(item) = self.lock().current.as_mut() {
            item.counted = item.counted.saturating_sub(bytes);
        }
    }

    /// Waits [`Pacing::pause`], cut short by a stop.
    fn pause(&self) -> std::result::Result<(), Halt> {
        let deadline = Instant::now() + self.pacing.pause;
        let mut state = self.lock();
        loop {
            if state.stopping {
                return Err(Halt::Stopped);
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Ok(());
            };
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// One set-aside path being freed: a depth-first walk that counts the bytes freed
/// since the last fsync.
struct Walk<'a> {
    shared: &'a Shared,
    /// The device of `reaping/`: a mount found inside the tree is not walked into.
    device: u64,
    unsynced: u64,
}

type Step = std::result::Result<(), Halt>;

impl<'a> Walk<'a> {
    fn new(shared: &'a Shared, top: &Path) -> std::result::Result<Self, Halt> {
        let parent = top.parent().unwrap_or(top);
        let device = fs::metadata(parent)
            .map_err(|e| Error::io(format!("stat {}", parent.display()), e))?
            .dev();
        Ok(Self {
            shared,
            device,
            unsynced: 0,
        })
    }

    fn free(&mut self, path: &Path) -> Step {
        // A tree of many empty files frees no slice to pause after: a stop is looked
        // for at each entry too.
        if self.shared.lock().stopping {
            return Err(Halt::Stopped);
        }
        let meta = match fs::symlink_metadata(path) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e, "stat", path)),
            Ok(meta) => meta,
        };
        if meta.dev() != self.device {
            return Err(io(
                std::io::Error::other("a mount inside deleted data; left in place"),
                "free",
                path,
            ));
        }
        if meta.is_dir() {
            let entries = fs::read_dir(path).map_err(|e| io(e, "list", path))?;
            for entry in entries {
                self.free(&entry.map_err(|e| io(e, "list", path))?.path())?;
            }
            fs::remove_dir(path).map_err(|e| io(e, "remove", path))?;
            return Ok(());
        }
        // A file with another name elsewhere keeps its blocks: only unlinked. So does
        // an image a loop device still holds (a volume deleted while staged): its
        // pod's filesystem stays whole until the device goes, as with a plain unlink.
        let mut allocated = allocated(&meta);
        if meta.is_file()
            && meta.nlink() == 1
            && allocated > self.shared.pacing.slice
            && stowage_common::loop_device::backing(path).is_none()
        {
            allocated = self.shrink(path)?;
        }
        self.shared.uncount(allocated);
        fs::remove_file(path).map_err(|e| io(e, "remove", path))?;
        self.unsynced += allocated;
        if self.unsynced >= self.shared.pacing.slice {
            let parent = path.parent().unwrap_or(path);
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| io(e, "fsync", parent))?;
            self.slice_done()?;
        }
        Ok(())
    }

    /// Punches the file's data out a slice at a time, from the start; returns what it
    /// still holds (nothing, unless the filesystem cannot punch holes).
    fn shrink(&mut self, path: &Path) -> std::result::Result<u64, Halt> {
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| io(e, "open", path))?;
        let len = file.metadata().map_err(|e| io(e, "stat", path))?.len();
        let mut offset = 0;
        while let Some(start) =
            localfs::seek(&file, offset, Whence::SeekData).map_err(|e| io(e, "seek", path))?
        {
            let data_end = localfs::seek(&file, start, Whence::SeekHole)
                .map_err(|e| io(e, "seek", path))?
                .unwrap_or(len);
            // SEEK_DATA answers block-aligned offsets, and a slice is whole blocks: no
            // punch zeroes part of a block (which would write) instead of freeing it.
            let step = self.shared.pacing.step(pacer::global().bulk_turn());
            let end = data_end.min(start.saturating_add(step));
            self.shared.uncount(end - start);
            match punch(&file, start, end - start) {
                Err(e) if e.kind() == ErrorKind::Unsupported => break,
                other => other.map_err(|e| io(e, "punch", path))?,
            }
            self.unsynced += end - start;
            if self.unsynced >= step {
                file.sync_all().map_err(|e| io(e, "fsync", path))?;
                self.slice_done()?;
            }
            offset = end;
        }
        Ok(allocated(
            &file.metadata().map_err(|e| io(e, "stat", path))?,
        ))
    }

    fn slice_done(&mut self) -> Step {
        self.unsynced = 0;
        self.shared.pause()
    }
}

fn allocated(meta: &fs::Metadata) -> u64 {
    meta.blocks().saturating_mul(512)
}

fn punch(file: &File, start: u64, len: u64) -> std::io::Result<()> {
    let (Ok(start), Ok(len)) = (i64::try_from(start), i64::try_from(len)) else {
        return Err(ErrorKind::InvalidInput.into());
    };
    let mode = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    nix::fcntl::fallocate(file, mode, start, len).map_err(|e| match e {
        nix::errno::Errno::EOPNOTSUPP => ErrorKind::Unsupported.into(),
        e => e.into(),
    })
}

fn io(source: std::io::Error, what: &str, path: &Path) -> Halt {
    Halt::Failed(Error::io(format!("{what} {}", path.display()), source))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::symlink;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_reaper_that_went_between_the_calls_frees_an_eighth_of_a_slice() {
        let pacing = |slice| Pacing {
            slice,
            pause: Duration::ZERO,
        };
        for (slice, turn, want) in [
            (16 * MIB, Turn::Quiet, 16 * MIB),
            (16 * MIB, Turn::Waited, 2 * MIB),
            (BLOCK, Turn::Waited, BLOCK),
            (3 * BLOCK + 1, Turn::Quiet, 3 * BLOCK),
        ] {
            assert_eq!(pacing(slice).step(turn), want, "{slice} bytes, {turn:?}");
        }
    }

    /// Writes `bytes` of real data (not a hole: a sparse file frees no blocks) and
    /// makes it durable.
    pub(crate) fn write_data(path: &Path, bytes: u64) {
        let mut file = File::create(path).expect("create");
        let chunk: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8 + 1).collect();
        for _ in 0..bytes / MIB {
            file.write_all(&chunk).expect("write");
        }
        file.sync_all().expect("fsync");
    }

    /// Bytes allocated at or below `path` (0 when it is gone).
    pub(crate) fn allocated_under(path: &Path) -> u64 {
        let Ok(meta) = fs::symlink_metadata(path) else {
            return 0;
        };
        let mut total = allocated(&meta);
        if meta.is_dir() {
            for entry in fs::read_dir(path).into_iter().flatten().flatten() {
                total += allocated_under(&entry.path());
            }
        }
        total
    }

    fn entries(dir: &Path) -> usize {
        fs::read_dir(dir).expect("list").count()
    }

    fn freed_after_a_restart(reaping: &Path) {
        let again = Reaper::start(reaping, Pacing::GENTLE).expect("restart");
        assert!(
            again.wait_idle(Duration::from_secs(60)),
            "freed after restart"
        );
        assert_eq!(entries(reaping), 0);
    }

    #[test]
    fn a_large_file_is_freed_a_slice_at_a_time() {
        let root = tempfile::tempdir().expect("tempdir");
        let victim = root.path().join("victim");
        write_data(&victim, 64 * MIB);
        let pacing = Pacing {
            slice: 4 * MIB,
            pause: Duration::from_millis(50),
        };
        let reaper = Reaper::start(&root.path().join("reaping"), pacing).expect("start");
        reaper.take(&victim).expect("take");
        assert!(!victim.exists(), "moved out of the way at once");
        let mut seen = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while entries(&root.path().join("reaping")) > 0 {
            seen.insert(allocated_under(&root.path().join("reaping")));
            assert!(Instant::now() < deadline, "freed in time");
            std::thread::sleep(Duration::from_millis(5));
        }
        let partial: Vec<u64> = seen
            .iter()
            .copied()
            .filter(|b| *b > 0 && *b < 64 * MIB)
            .collect();
        assert!(
            partial.len() >= 3,
            "the file shrank in steps, saw allocations {seen:?}"
        );
        assert!(
            partial
                .windows(2)
                .all(|w| w[1] - w[0] >= 4 * MIB - 64 * 1024),
            "a step is a slice: {partial:?}"
        );
    }

    /// What deleted data may hold, and what must outlive its freeing.
    #[test]
    fn deleted_trees_and_files_go_and_what_they_point_at_stays() {
        type Make = fn(&Path, &Path);
        let rows: &[(&str, Make)] = &[
            ("a large file", |victim, _| write_data(victim, 20 * MIB)),
            ("an empty directory", |victim, _| {
                fs::create_dir(victim).expect("mkdir")
            }),
            ("a tree of large and small files", |victim, _| {
                fs::create_dir_all(victim.join("a/b")).expect("mkdir");
                write_data(&victim.join("a/b/large"), 12 * MIB);
                for i in 0..50 {
                    fs::write(victim.join(format!("a/small{i}")), vec![7u8; 300_000])
                        .expect("write");
                }
                fs::create_dir(victim.join("empty")).expect("mkdir");
            }),
            ("a sparse file with data at its end", |victim, _| {
                let file = File::create(victim).expect("create");
                file.set_len(1 << 40).expect("size");
                use std::os::unix::fs::FileExt;
                file.write_all_at(&vec![1u8; 9 << 20], (1 << 40) - (9 << 20))
                    .expect("write");
            }),
            ("links to what is kept", |victim, kept| {
                fs::create_dir(victim).expect("mkdir");
                symlink(kept, victim.join("symlink")).expect("symlink");
                symlink(kept.join("large"), victim.join("file-symlink")).expect("symlink");
                fs::hard_link(kept.join("large"), victim.join("hard-link")).expect("link");
            }),
        ];
        for (what, make) in rows {
            let root = tempfile::tempdir().expect("tempdir");
            let kept = root.path().join("kept");
            fs::create_dir(&kept).expect("mkdir");
            write_data(&kept.join("large"), 10 * MIB);
            let victim = root.path().join("victim");
            make(&victim, &kept);
            let pacing = Pacing {
                slice: 4 * MIB,
                pause: Duration::ZERO,
            };
            let reaper = Reaper::start(&root.path().join("reaping"), pacing).expect("start");
            reaper.take(&victim).expect("take");
            assert!(reaper.wait_idle(Duration::from_secs(60)), "{what}: freed");
            assert_eq!(entries(&root.path().join("reaping")), 0, "{what}: gone");
            let large = fs::metadata(kept.join("large")).expect("kept");
            assert_eq!(
                (large.len(), allocated(&large) >= 10 * MIB),
                (10 * MIB, true),
                "{what}: the kept file is whole"
            );
        }
    }

    /// Detaches a loop device when dropped, whatever the test's outcome.
    struct Attached(String);

    impl Drop for Attached {
        fn drop(&mut self) {
            let _ = std::process::Command::new("losetup")
                .args(["-d", &self.0])
                .status();
        }
    }

    #[test]
    fn an_image_a_loop_device_still_holds_is_unlinked_not_punched() {
        use std::os::unix::fs::FileExt;
        let root = tempfile::tempdir().expect("tempdir");
        let image = root.path().join("image");
        write_data(&image, 24 * MIB);
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&image)
            .output()
            .expect("losetup");
        assert!(out.status.success(), "losetup: {out:?}");
        let device = Attached(String::from_utf8_lossy(&out.stdout).trim().to_string());
        let pacing = Pacing {
            slice: 4 * MIB,
            pause: Duration::ZERO,
        };
        let reaper = Reaper::start(&root.path().join("reaping"), pacing).expect("start");
        reaper.take(&image).expect("take");
        assert!(reaper.wait_idle(Duration::from_secs(60)));
        assert_eq!(entries(&root.path().join("reaping")), 0, "unlinked");
        let mut seen = vec![0u8; MIB as usize];
        File::open(&device.0)
            .expect("open the device")
            .read_exact_at(&mut seen, 20 * MIB)
            .expect("read");
        let want: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8 + 1).collect();
        assert!(seen == want, "the device still reads the image's data");
    }

    /// What a deleted item will give back is counted as free space to come only when
    /// an unlink frees it and nothing has to be walked to know it.
    #[test]
    fn what_a_deleted_lone_file_will_give_back_is_counted_until_it_is_freed() {
        type Make = fn(&Path, &Path);
        let rows: &[(&str, Make, u64)] = &[
            (
                "a lone file",
                |victim, _| write_data(victim, 32 * MIB),
                32 * MIB,
            ),
            (
                "a tree",
                |victim, _| {
                    fs::create_dir(victim).expect("mkdir");
                    write_data(&victim.join("large"), 32 * MIB);
                },
                0,
            ),
            (
                "a file with another link",
                |victim, other| {
                    write_data(victim, 32 * MIB);
                    fs::hard_link(victim, other).expect("link");
                },
                0,
            ),
        ];
        for (what, make, want) in rows {
            let root = tempfile::tempdir().expect("tempdir");
            let reaping = root.path().join("reaping");
            let victim = root.path().join("victim");
            make(&victim, &root.path().join("other"));
            let slow = Pacing {
                slice: 4 * MIB,
                pause: Duration::from_secs(3600),
            };
            let reaper = Reaper::start(&reaping, slow).expect("start");
            reaper.take(&victim).expect("take");
            // The thread may have punched its first slice already, not more.
            let pending = reaper.pending_bytes();
            assert!(
                pending <= *want && pending + 4 * MIB >= *want,
                "{what}: {pending} counted"
            );
            drop(reaper);
            let fast = Reaper::start(
                &reaping,
                Pacing {
                    slice: 4 * MIB,
                    pause: Duration::ZERO,
                },
            )
            .expect("restart");
            assert!(fast.wait_idle(Duration::from_secs(60)), "{what}: freed");
            assert_eq!(fast.pending_bytes(), 0, "{what}: nothing to come");
        }
    }

    #[test]
    fn a_missing_path_is_nothing_to_take_and_a_missing_reaping_dir_is_made_again() {
        let root = tempfile::tempdir().expect("tempdir");
        let reaping = root.path().join("reaping");
        let reaper = Reaper::start(&reaping, Pacing::GENTLE).expect("start");
        reaper.take(&root.path().join("absent")).expect("take");
        assert!(reaper.wait_idle(Duration::from_secs(5)));
        assert_eq!(entries(&reaping), 0);
        fs::remove_dir(&reaping).expect("an operator removes it");
        let victim = root.path().join("victim");
        fs::create_dir(&victim).expect("mkdir");
        reaper.take(&victim).expect("take");
        assert!(!victim.exists(), "moved out of the way");
        assert!(reaper.wait_idle(Duration::from_secs(5)));
        assert_eq!(entries(&reaping), 0, "freed");
    }

    #[test]
    fn the_reaper_thread_runs_niced_in_the_idle_io_class() {
        let root = tempfile::tempdir().expect("tempdir");
        let reaper = Reaper::start(&root.path().join("reaping"), Pacing::GENTLE).expect("start");
        let deadline = Instant::now() + Duration::from_secs(5);
        let tid = loop {
            if let Some(tid) = reaper.thread_id() {
                break tid;
            }
            assert!(Instant::now() < deadline, "the thread started");
            std::thread::sleep(Duration::from_millis(5));
        };
        // Read from outside the thread, as an operator would.
        let ionice = std::process::Command::new("ionice")
            .args(["-p", &tid.to_string()])
            .output()
            .expect("ionice");
        assert_eq!(String::from_utf8_lossy(&ionice.stdout).trim(), "idle");
        let pid = rustix::process::Pid::from_raw(tid).expect("a thread id");
        assert_eq!(
            rustix::process::getpriority_process(Some(pid)).expect("nice"),
            localfs::COPY_NICE
        );
        assert_ne!(
            stowage_sys::io_priority::thread_class().expect("I/O class"),
            stowage_sys::io_priority::IoClass::Idle,
            "the caller's thread keeps its class"
        );
    }

    #[test]
    fn a_project_is_held_until_its_files_are_freed_across_a_restart() {
        let root = tempfile::tempdir().expect("tempdir");
        let reaping = root.path().join("reaping");
        let (quota, plain) = (root.path().join("quota"), root.path().join("plain"));
        write_data(&quota, 16 * MIB);
        write_data(&plain, 16 * MIB);
        let slow = Pacing {
            slice: 4 * MIB,
            pause: Duration::from_secs(3600),
        };
        let reaper = Reaper::start(&reaping, slow).expect("start");
        reaper.take_in_project(&quota, Some(1 << 21)).expect("take");
        reaper.take(&plain).expect("take");
        assert!(reaper.holds_project(1 << 21), "held while freed");
        assert!(!reaper.holds_project(7), "only that one");
        drop(reaper);
        let again = Reaper::start(&reaping, slow).expect("restart");
        assert!(again.holds_project(1 << 21), "held after a restart");
        drop(again);
        let fast = Reaper::start(&reaping, Pacing::GENTLE).expect("restart");
        assert!(fast.wait_idle(Duration::from_secs(60)), "freed");
        assert!(!fast.holds_project(1 << 21), "free once the files are");
    }

    #[test]
    fn a_stop_leaves_the_rest_for_the_next_start() {
        let root = tempfile::tempdir().expect("tempdir");
        let reaping = root.path().join("reaping");
        let victim = root.path().join("victim");
        write_data(&victim, 64 * MIB);
        let slow = Pacing {
            slice: 4 * MIB,
            pause: Duration::from_secs(3600),
        };
        let reaper = Reaper::start(&reaping, slow).expect("start");
        reaper.take(&victim).expect("take");
        let deadline = Instant::now() + Duration::from_secs(30);
        while allocated_under(&reaping) > 62 * MIB {
            assert!(Instant::now() < deadline, "the first slice went");
            std::thread::sleep(Duration::from_millis(5));
        }
        let stopping = Instant::now();
        drop(reaper);
        assert!(
            stopping.elapsed() < STOP_WAIT,
            "the pause did not hold up the stop"
        );
        let left = allocated_under(&reaping);
        assert!(
            left > 0 && left <= 62 * MIB,
            "part freed, the rest left: {left}"
        );
        freed_after_a_restart(&reaping);
    }

    /// Empty directories free no slice, so there is no pause to stop at: the walk
    /// looks for a stop at each entry.
    #[test]
    fn a_stop_cuts_short_a_tree_that_frees_no_slice() {
        const DIRS: u64 = 5_000;
        let root = tempfile::tempdir().expect("tempdir");
        let reaping = root.path().join("reaping");
        let victim = root.path().join("victim");
        fs::create_dir(&victim).expect("mkdir");
        for i in 0..DIRS {
            fs::create_dir(victim.join(i.to_string())).expect("mkdir");
        }
        let reaper = Reaper::start(&reaping, Pacing::GENTLE).expect("start");
        reaper.take(&victim).expect("take");
        let taken = fs::read_dir(&reaping)
            .expect("list")
            .next()
            .expect("one entry")
            .expect("entry")
            .path();
        // A directory's link count is 2 and one per subdirectory.
        let subdirs = || fs::symlink_metadata(&taken).map_or(0, |m| m.nlink().saturating_sub(2));
        let deadline = Instant::now() + Duration::from_secs(30);
        while subdirs() == DIRS {
            assert!(Instant::now() < deadline, "the walk began");
            std::thread::sleep(Duration::from_micros(200));
        }
        drop(reaper);
        let left = subdirs();
        assert!(
            left > 0 && left < DIRS,
            "stopped inside the tree: {left} of {DIRS} left"
        );
        freed_after_a_restart(&reaping);
    }

    #[test]
    fn what_cannot_be_freed_stays_and_is_retried_at_the_next_start() {
        let root = tempfile::tempdir().expect("tempdir");
        let reaping = root.path().join("reaping");
        let victim = root.path().join("victim");
        fs::create_dir(&victim).expect("mkdir");
        write_data(&victim.join("large"), 8 * MIB);
        let stuck = victim.join("immutable");
        fs::write(&stuck, b"x").expect("write");
        let chattr = |flag: &str, path: &Path| {
            let status = std::process::Command::new("chattr")
                .arg(flag)
                .arg(path)
                .status()
                .expect("chattr");
            assert!(status.success(), "chattr {flag}");
        };
        chattr("+i", &stuck);
        let reaper = Reaper::start(&reaping, Pacing::GENTLE).expect("start");
        reaper.take(&victim).expect("take");
        assert!(reaper.wait_idle(Duration::from_secs(60)));
        drop(reaper);
        let left: Vec<PathBuf> = fs::read_dir(&reaping)
            .expect("list")
            .map(|e| e.expect("entry").path())
            .collect();
        assert_eq!(left.len(), 1, "the tree stays for a retry");
        let immutable = left[0].join("immutable");
        assert!(immutable.exists(), "what could not be removed is kept");
        chattr("-i", &immutable);
        let again = Reaper::start(&reaping, Pacing::GENTLE).expect("restart");
        assert!(again.wait_idle(Duration::from_secs(60)));
        assert_eq!(entries(&reaping), 0, "freed at the next start");
    }
}
