//! A LIST of everything (no selectors, no limit, JSON) sent as the store is read: the
//! stored bytes go out in chunks of about [`CHUNK_BYTES`], at most [`CHUNKS_AHEAD`] of
//! them waiting for the connection, so the answer is never whole in memory.
//!
//! Building it whole first took as much memory as the answer (65 MiB for 100,000
//! PVs, in a vector grown by doubling), and glibc kept those pages in the reading
//! thread's arena after the LIST: most of what the server's resident memory still grew
//! by with the object count (BENCHMARKS.md, API server at 100,000 PVs).

use std::io;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use bytes::Bytes;
use serde_json::json;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{ApiError, Result};
use crate::registry::Resource;
use crate::store::{Reader, Store};

/// A chunk is sent once the next object would take it past this (a larger object
/// goes in a chunk of its own).
pub const CHUNK_BYTES: usize = 64 << 10;
/// Chunks read ahead of the connection; the scan waits for the client beyond them.
const CHUNKS_AHEAD: usize = 4;
/// How long a client may take to read a whole LIST: kube-apiserver's default
/// `--request-timeout`. The scan holds a read transaction, which keeps the store's old
/// pages from reuse, so a client that stops reading must not hold it for ever.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(60);

/// What a streamed LIST reads: the kind, its key prefix, where it resumes (a continue
/// token's revision and last key), if anywhere, and when it is cut if still unread.
pub struct Listing {
    pub resource: &'static Resource,
    pub prefix: String,
    pub resume: Option<(u64, String)>,
    pub deadline: Instant,
}

/// Answers the LIST as it is read. `check` runs first against the snapshot read
/// (the `resourceVersionMatch` check): its error is the answer, as a status.
pub async fn respond(
    store: &Store,
    listing: Listing,
    check: impl FnOnce(&dyn Reader) -> Result<()> + Send + 'static,
) -> Result<Response> {
    let (chunks, received) = channel()?;
    let store = store.clone();
    let scan = tokio::spawn(async move {
        store
            .read(move |reader| {
                check(reader)?;
                scan(reader, listing, chunks);
                Ok(())
            })
            .await
    });
    let mut received = ReceiverStream::new(received);
    // Nothing is sent before the check passed: then its error can still be the status.
    let Some(first) = received.next().await else {
        scan.await.map_err(ApiError::storage)??;
        return Err(ApiError::storage("the LIST ended before its first chunk"));
    };
    let body = tokio_stream::once(first).chain(received);
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .map_err(ApiError::storage)
}

/// A scan's chunks and the stream the connection reads them from.
fn channel() -> Result<(Chunks, mpsc::Receiver<io::Result<Bytes>>)> {
    let (chunks, received) = mpsc::channel(CHUNKS_AHEAD + 1);
    let cut = chunks
        .clone()
        .try_reserve_owned()
        .map_err(ApiError::storage)?;
    let runtime = Handle::current();
    Ok((
        Chunks {
            chunks,
            cut,
            runtime,
        },
        received,
    ))
}

/// The list object up to its items: `{"kind":…,"apiVersion":…,"metadata":{…},"items":[`.
pub fn head(resource: &Resource, revision: u64, next: Option<String>) -> Result<Vec<u8>> {
    let mut list_meta = json!({"resourceVersion": revision.to_string()});
    if let Some(next) = next {
        list_meta["continue"] = json!(next);
    }
    let head = json!({
        "kind": format!("{}List", resource.kind),
        "apiVersion": resource.api_version(),
        "metadata": list_meta,
    });
    let mut head = serde_json::to_vec(&head).map_err(ApiError::storage)?;
    // `{...}` becomes `{...,"items":[`: the items and `]}` follow.
    head.pop();
    head.extend_from_slice(br#","items":["#);
    Ok(head)
}

/// The connection's side of a scan, used from the store's blocking read. One place in
/// the channel is kept for the error that cuts the answer, so that it goes in even
/// when the client stopped reading.
struct Chunks {
    chunks: mpsc::Sender<io::Result<Bytes>>,
    cut: mpsc::OwnedPermit<io::Result<Bytes>>,
    runtime: Handle,
}

/// Why a chunk did not reach the connection.
enum Unsent {
    /// The client went away.
    Gone,
    /// The client did not read the LIST before its deadline.
    Late,
}

impl Chunks {
    /// Waits until the connection takes `chunk`, at most until `deadline`.
    fn send(&self, chunk: Vec<u8>, deadline: Instant) -> Result<(), Unsent> {
        let sent = self.runtime.block_on(tokio::time::timeout_at(
            deadline.into(),
            self.chunks.send(Ok(Bytes::from(chunk))),
        ));
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Unsent::Gone),
            Err(_) => Err(Unsent::Late),
        }
    }

    /// Ends the answer with an error: the connection is cut, and the client sees a
    /// truncated body rather than a list that looks whole.
    fn cut(self, why: impl std::fmt::Display) {
        tracing::warn!(%why, "a streamed LIST was cut");
        self.cut.send(Err(io::Error::other(why.to_string())));
    }
}

/// Sends the list's head, its items and its end in chunks; stops when the client went
/// or the deadline passed.
fn scan(reader: &dyn Reader, listing: Listing, chunks: Chunks) {
    let (revision, after) = match listing.resume {
        Some((revision, after)) => (revision, Some(after)),
        None => (reader.revision(), None),
    };
    let mut chunk = match head(listing.resource, revision, None) {
        Ok(head) => head,
        Err(error) => return chunks.cut(error),
    };
    let mut first = true;
    let mut unsent = None;
    let scanned = reader.scan_raw(&listing.prefix, after.as_deref(), &mut |_, bytes| {
        if chunk.len() + 1 + bytes.len() > CHUNK_BYTES && !chunk.is_empty() {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_BYTES));
            if let Err(why) = chunks.send(full, listing.deadline) {
                unsent = Some(why);
                return false;
            }
        }
        if !first {
            chunk.push(b',');
        }
        first = false;
        chunk.extend_from_slice(bytes);
        true
    });
    if let Err(error) = scanned {
        return chunks.cut(error);
    }
    if unsent.is_none() {
        chunk.extend_from_slice(b"]}");
        unsent = chunks.send(chunk, listing.deadline).err();
    }
    if let Some(Unsent::Late) = unsent {
        chunks.cut(format_args!(
            "the client did not read the LIST within {} s",
            LIST_TIMEOUT.as_secs()
        ));
    }
}

#[cfg(test)]
mod tests {
    use futures_util::TryStreamExt;
    use serde_json::Value;

    use super::*;
    use crate::store::Mutation;

    async fn store_with(dir: &std::path::Path, count: usize) -> Result<Store> {
        let store = Store::open(&dir.join("store.redb"), 16)?;
        store
            .write(Box::new(move |_: &dyn Reader| {
                Ok((0..count)
                    .map(|i| Mutation::Put {
                        key: format!("core/persistentvolumes//pv-{i:05}"),
                        object: json!({"metadata": {"name": format!("pv-{i:05}")},
                                       "spec": {"padding": "x".repeat(1000)}}),
                    })
                    .collect())
            }))
            .await?;
        Ok(store)
    }

    fn volumes() -> &'static Resource {
        crate::registry::all()
            .iter()
            .find(|r| r.plural == "persistentvolumes")
            .expect("PersistentVolumes are registered")
    }

    #[tokio::test]
    async fn a_streamed_list_comes_in_bounded_chunks_and_is_the_whole_list() -> Result<()> {
        let dir = tempfile::tempdir().map_err(ApiError::storage)?;
        let store = store_with(dir.path(), 300).await?;
        // (resumed after, objects expected, the first expected, more than one chunk)
        let cases = [
            (None, 300, "pv-00000", true),
            (
                Some("core/persistentvolumes//pv-00289"),
                10,
                "pv-00290",
                false,
            ),
            (Some("core/persistentvolumes//pv-00299"), 0, "", false),
        ];
        for (after, count, first, chunked) in cases {
            let listing = Listing {
                resource: volumes(),
                prefix: "core/persistentvolumes/".into(),
                resume: after.map(|a: &str| (7, a.to_string())),
                deadline: Instant::now() + LIST_TIMEOUT,
            };
            let response = respond(&store, listing, |_| Ok(())).await?;
            assert_eq!(response.status(), StatusCode::OK);
            let chunks: Vec<Bytes> = response
                .into_body()
                .into_data_stream()
                .try_collect()
                .await
                .map_err(ApiError::storage)?;
            assert_eq!(
                chunks.len() > 1,
                chunked,
                "after {after:?}: {} chunks",
                chunks.len()
            );
            assert!(
                chunks.iter().all(|c| c.len() <= CHUNK_BYTES),
                "after {after:?}"
            );
            let list: Value =
                serde_json::from_slice(&chunks.concat()).map_err(ApiError::storage)?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            assert_eq!(items.len(), count, "after {after:?}");
            let names: Vec<&str> = items
                .iter()
                .filter_map(|i| i["metadata"]["name"].as_str())
                .collect();
            assert_eq!(
                names.first().copied().unwrap_or(""),
                first,
                "after {after:?}"
            );
            assert!(names.windows(2).all(|w| w[0] < w[1]), "in key order");
            assert_eq!(list["kind"], "PersistentVolumeList");
            // Each of the 300 puts took a revision; a resumed list reports its token's.
            let revision = if after.is_some() { "7" } else { "300" };
            assert_eq!(
                list["metadata"]["resourceVersion"], revision,
                "after {after:?}"
            );
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_failed_check_is_the_answer_not_a_list() -> Result<()> {
        let dir = tempfile::tempdir().map_err(ApiError::storage)?;
        let store = store_with(dir.path(), 3).await?;
        let listing = Listing {
            resource: volumes(),
            prefix: "core/persistentvolumes/".into(),
            resume: None,
            deadline: Instant::now() + LIST_TIMEOUT,
        };
        let answer = respond(&store, listing, |_| {
            Err(ApiError::Expired("too old".into()))
        })
        .await;
        assert!(
            matches!(answer, Err(ApiError::Expired(_))),
            "{:?}",
            answer.map(|r| r.status())
        );
        Ok(())
    }

    #[tokio::test]
    async fn the_scan_waits_for_the_client_beyond_the_chunks_ahead() -> Result<()> {
        let dir = tempfile::tempdir().map_err(ApiError::storage)?;
        let store = store_with(dir.path(), 600).await?;
        let (chunks, mut received) = channel()?;
        let listing = Listing {
            resource: volumes(),
            prefix: "core/persistentvolumes/".into(),
            resume: None,
            deadline: Instant::now() + LIST_TIMEOUT,
        };
        let scan = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .read(move |reader| {
                        scan(reader, listing, chunks);
                        Ok(())
                    })
                    .await
            }
        });
        // Unread, the scan fills the channel and waits: it has not finished.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!scan.is_finished(), "the scan ran ahead of its reader");
        let mut total = 0;
        while let Some(chunk) = received.recv().await {
            total += chunk.map_err(ApiError::storage)?.len();
        }
        scan.await.map_err(ApiError::storage)??;
        assert!(total > 600 * 1000, "{total} bytes");
        Ok(())
    }

    #[tokio::test]
    async fn a_list_the_client_stops_reading_is_cut_at_its_deadline() -> Result<()> {
        let dir = tempfile::tempdir().map_err(ApiError::storage)?;
        let store = store_with(dir.path(), 600).await?;
        // (read on after the pause, the answer ends with an error)
        let cases = [
            (Duration::from_secs(5), false),
            (Duration::from_millis(200), true),
        ];
        for (timeout, cut) in cases {
            let listing = Listing {
                resource: volumes(),
                prefix: "core/persistentvolumes/".into(),
                resume: None,
                deadline: Instant::now() + timeout,
            };
            let response = respond(&store, listing, |_| Ok(())).await?;
            let mut body = response.into_body().into_data_stream();
            body.next().await;
            // 600 objects of 1 KiB are more chunks than are read ahead: the scan waits.
            tokio::time::sleep(Duration::from_millis(600)).await;
            let mut failed = false;
            while let Some(chunk) = body.next().await {
                failed |= chunk.is_err();
            }
            assert_eq!(failed, cut, "deadline after {timeout:?}");
        }
        Ok(())
    }
}
