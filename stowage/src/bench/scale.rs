//! What the two scale benchmarks share: a node plugin they start, fill with volumes up to
//! each checkpoint, kill and start again, the driver it serves, and their volumes' shape.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::concurrent;
use super::csi::driver::{Driver, VolumeType, Workload};
use super::csi::memory::NodeMemory;
use super::csi::{discover, run_id};
use super::error::Error;
use super::process::{Plugin, create_dir};

/// A node plugin started by the benchmark and the driver it serves.
pub struct Scale {
    plugin: Plugin,
    socket: PathBuf,
    pub driver: Driver,
    /// 1 MiB local volumes, staged and published under the plugin's kubelet directory.
    pub workload: Arc<Workload>,
}

impl Scale {
    /// Starts `program` with every directory under `dir` and learns what it offers;
    /// its volumes get `parameters`.
    pub async fn start(
        program: &Path,
        dir: &Path,
        parameters: HashMap<String, String>,
    ) -> Result<Self, Error> {
        create_dir(dir)?;
        let mut plugin = Plugin::new(program, dir);
        plugin.start().await?;
        let workload = Arc::new(Workload {
            kind: VolumeType::Local,
            parameters,
            capacity_bytes: 1 << 20,
            dir: plugin.kubelet_dir().join("bench"),
            run: run_id(),
            source: None,
        });
        let socket = plugin.socket();
        let driver = discover(&socket, &socket, VolumeType::Local).await?;
        Ok(Self {
            plugin,
            socket,
            driver,
            workload,
        })
    }

    /// SIGKILL, as a crash or an evicted pod, then a start with everything it held; the
    /// time from spawn to serving, and when it began serving.
    pub async fn restart(&mut self) -> Result<(Duration, Instant), Error> {
        self.plugin.kill().await;
        let serving = self.plugin.start().await?;
        let since = Instant::now();
        self.driver = discover(&self.socket, &self.socket, VolumeType::Local).await?;
        Ok((serving, since))
    }

    /// The plugin's resident memory now, in KiB (0 when not visible).
    pub fn rss_kib(&self) -> u64 {
        NodeMemory::now_kib(&self.socket)
    }

    /// Makes items with `make(driver, workload, index)` until `made` holds `target`,
    /// `concurrency` calls at a time.
    pub async fn fill<T, F, Fut>(
        &self,
        made: &mut Vec<T>,
        target: usize,
        concurrency: usize,
        make: F,
    ) -> Result<(), Error>
    where
        T: Send + 'static,
        F: Fn(Driver, Arc<Workload>, usize) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<T, Error>> + Send,
    {
        let (driver, workload) = (self.driver.clone(), self.workload.clone());
        let make = move |index| make(driver.clone(), workload.clone(), index);
        made.extend(concurrent::fill(made.len(), target, concurrency, make).await?);
        Ok(())
    }

    /// Undoes every item with `undo(driver, item)` (false when it failed),
    /// `concurrency` calls at a time; returns how many failed.
    pub async fn drain<T, F, Fut>(&self, items: Vec<T>, concurrency: usize, undo: F) -> usize
    where
        T: Send + 'static,
        F: Fn(Driver, T) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = bool> + Send,
    {
        let driver = self.driver.clone();
        let undo = move |item| undo(driver.clone(), item);
        concurrent::drain(items, concurrency, undo).await
    }
}

/// The checkpoints in ascending order, each once.
pub fn ascending(checkpoints: &[usize]) -> Vec<usize> {
    let mut checkpoints = checkpoints.to_vec();
    checkpoints.sort_unstable();
    checkpoints.dedup();
    checkpoints
}
