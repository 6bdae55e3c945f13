//! Request bodies: the size limit, and reading to its end whatever a handler left
//! unread before the answer goes out. Over HTTP/2 a body dropped half-read resets the
//! stream, and the client then sees "stream error" instead of the 413 (or 401, 403)
//! it was sent; over HTTP/1.1 unread bytes make the close a reset that can discard
//! the answer. Go's net/http drains for the same reason.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_LENGTH, EXPECT};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;
use hyper::body::{Frame, SizeHint};

use crate::error::{ApiError, Result};

/// What is read and discarded at most after a handler stopped reading; a client
/// sending more than this past the limit may see its stream reset.
const DRAIN_MAX: usize = 64 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// The whole body, or 413 once it exceeds `max` bytes (at once when its declared
/// length does, so a client waiting for `100 Continue` never sends it).
pub async fn read_limited(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max as u64) {
        return Err(ApiError::TooLarge { limit: max });
    }
    let mut stream = body.into_data_stream();
    let mut read = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        if read.len() + chunk.len() > max {
            return Err(ApiError::TooLarge { limit: max });
        }
        read.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(read))
}

/// Middleware: the part of the body the handler did not read is read and dropped
/// before its response is sent. A client that asked for `100 Continue` and was
/// answered without it has sent nothing, so there is nothing to read.
pub async fn read_to_end(request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let expects_continue = request
        .headers()
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (parts, body) = request.into_parts();
    let left = Arc::new(Mutex::new(None));
    let tracked = Tracked {
        inner: Some(body),
        polled: false,
        left: left.clone(),
    };
    let response = next
        .run(Request::from_parts(parts, Body::new(tracked)))
        .await;
    let unread = left.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(Unread { body, polled }) = unread
        && (polled || !expects_continue)
    {
        discard(body).await;
    }
    response
}

async fn discard(body: Body) {
    let mut stream = body.into_data_stream();
    let mut read = 0;
    let drained = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len();
            if read > DRAIN_MAX {
                return false;
            }
        }
        true
    })
    .await;
    if drained != Ok(true) {
        tracing::debug!(read, "stopped reading an unread request body");
    }
}

/// A body the handler gave up on, parked for [`read_to_end`].
struct Unread {
    body: Body,
    /// Whether anyone asked for data (which is when hyper sends `100 Continue`).
    polled: bool,
}

/// The request body as the handler sees it; parks itself in `left` when dropped unfinished.
struct Tracked {
    inner: Option<Body>,
    polled: bool,
    left: Arc<Mutex<Option<Unread>>>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        this.polled = true;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = Pin::new(inner).poll_frame(cx);
        // Finished or broken: nothing is left to read.
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
            this.inner = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(body) = self.inner.take().filter(|b| !b.is_end_stream()) {
            *self.left.lock().unwrap_or_else(PoisonError::into_inner) = Some(Unread {
                body,
                polled: self.polled,
            });
        }
    }
}
