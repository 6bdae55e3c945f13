//! The benchmarks' bulk work: objects and volumes made up to a count, and undone at the
//! end, a fixed number at a time. Stats of this work are not reported, so none are kept.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::error::Error;

/// Makes items `from..target` with `make(index)`, `concurrency` calls at a time;
/// returns them (in no particular order), or a failure once every worker stopped.
pub async fn fill<T, F, Fut>(
    from: usize,
    target: usize,
    concurrency: usize,
    make: F,
) -> Result<Vec<T>, Error>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<T, Error>> + Send,
{
    let next = Arc::new(AtomicUsize::new(from));
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (make, next) = (make.clone(), next.clone());
            tokio::spawn(async move {
                let mut made = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= target {
                        return Ok::<_, Error>(made);
                    }
                    made.push(make(index).await?);
                }
            })
        })
        .collect();
    let (mut all, mut failure) = (Vec::new(), None);
    for worker in workers {
        match worker.await {
            Ok(Ok(made)) => all.extend(made),
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(Error::Worker(e)),
        }
    }
    failure.map_or(Ok(all), Err)
}

/// Undoes every item with `undo` (false when it failed), `concurrency` calls at a
/// time; returns how many failed.
pub async fn drain<T, F, Fut>(items: Vec<T>, concurrency: usize, undo: F) -> usize
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let queue = Arc::new(Mutex::new(items));
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (undo, queue) = (undo.clone(), queue.clone());
            tokio::spawn(async move {
                let mut failed = 0;
                loop {
                    let next = queue.lock().ok().and_then(|mut q| q.pop());
                    let Some(item) = next else { return failed };
                    if !undo(item).await {
                        failed += 1;
                    }
                }
            })
        })
        .collect();
    let mut failed = 0;
    for worker in workers {
        failed += worker.await.unwrap_or(1);
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fill_makes_each_index_once_and_drain_counts_failures() {
        let made = fill(3, 40, 4, |i| async move { Ok(i) }).await;
        let mut made = made.unwrap_or_else(|e| panic!("{e}"));
        made.sort_unstable();
        assert_eq!(made, (3..40).collect::<Vec<_>>());

        let refused = fill(0, 40, 4, |i| async move {
            if i == 17 {
                Err(Error::NoVolume(format!("volume {i}")))
            } else {
                Ok(i)
            }
        })
        .await;
        assert!(
            matches!(&refused, Err(Error::NoVolume(name)) if name == "volume 17"),
            "{refused:?}"
        );

        let failed = drain(made, 4, |i| async move { i % 10 != 0 }).await;
        assert_eq!(failed, 3, "10, 20 and 30 failed");
    }
}
