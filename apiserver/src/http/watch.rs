//! Watches: a stream of JSON lines fed from the change log.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;

use super::AppState;
use super::resources::{Params, flag};
use super::route::Target;
use crate::error::{ApiError, Result};
use crate::meta;
use crate::protobuf;
use crate::registry::Resource;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{Change, EventType, TooOld};

/// A watch with no timeoutSeconds ends after this, as kube-apiserver's do.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Changes read from the log per turn.
const CHUNK: usize = 256;

struct Filter {
    resource: &'static Resource,
    prefix: String,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, object: &Value) -> bool {
        self.labels.matches(meta::labels(object)) && self.fields.matches(self.resource, object)
    }

    /// Whether the selectable part of an object, as the log keeps it, matches; decoded
    /// only when there is a selector to match.
    fn matches_logged(&self, selectable: &[u8]) -> bool {
        if self.labels.is_everything() && self.fields.is_everything() {
            return true;
        }
        serde_json::from_slice::<Value>(selectable).is_ok_and(|object| self.matches(&object))
    }

    /// The event a watcher sees: an object entering the selection is ADDED to it,
    /// one leaving is DELETED from it, as upstream's watch cache reports.
    fn event_for(&self, change: &Change) -> Option<EventType> {
        if !change.key.starts_with(&self.prefix) {
            return None;
        }
        let now = self.matches_logged(&change.selectable);
        let before = change
            .old
            .as_ref()
            .is_some_and(|old| self.matches_logged(old));
        match (change.event, before, now) {
            (EventType::Added, _, true) => Some(EventType::Added),
            (EventType::Deleted, _, true) => Some(EventType::Deleted),
            (EventType::Modified, true, true) => Some(EventType::Modified),
            (EventType::Modified, false, true) => Some(EventType::Added),
            (EventType::Modified, true, false) => Some(EventType::Deleted),
            _ => None,
        }
    }
}

/// Streams `target`'s changes to `user`, within the number of watches a user may hold.
pub async fn serve(
    app: &Arc<AppState>,
    user: &str,
    target: &Target,
    params: &Params,
    protobuf: bool,
) -> Result<Response> {
    let resource = target.resource;
    let mut filter = Filter {
        resource,
        prefix: resource.prefix(target.namespace.as_deref()),
        labels: LabelSelector::parse(params.label_selector.as_deref().unwrap_or(""))?,
        fields: FieldSelector::parse(params.field_selector.as_deref().unwrap_or(""), resource)?,
    };
    if let Some(name) = &target.name {
        filter.fields = FieldSelector::parse(&format!("metadata.name={name}"), resource)?;
    }
    let send_initial = flag(&params.send_initial_events);
    let start = match params.resource_version.as_deref() {
        None | Some("" | "0") => None,
        Some(_) if send_initial => None,
        Some(text) => Some(
            text.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {text:?}")))?,
        ),
    };
    let options = Options {
        timeout: params
            .timeout_seconds
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TIMEOUT),
        bookmarks: flag(&params.allow_watch_bookmarks),
        bookmark_interval: app.bookmark_interval,
        initial_events_end: send_initial,
        format: if protobuf {
            Format::Protobuf
        } else {
            Format::Json
        },
    };
    let content_type = match options.format {
        Format::Json => "application/json",
        Format::Protobuf => protobuf::WATCH_MEDIA_TYPE,
    };
    let held = app.watchers.admit(user)?;
    let (lines, stream) = mpsc::channel::<std::result::Result<Bytes, std::io::Error>>(64);
    let app = app.clone();
    tokio::spawn(async move {
        let _ = stream_events(&app, filter, start, options, &lines).await;
        drop(held);
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, content_type)
        .body(Body::from_stream(ReceiverStream::new(stream)))
        .map_err(ApiError::storage)
}

struct Options {
    timeout: Duration,
    bookmarks: bool,
    bookmark_interval: Duration,
    /// Streaming list: mark the end of the initial events with a bookmark.
    initial_events_end: bool,
    format: Format,
}

/// How events are written: JSON lines, or length-delimited protobuf WatchEvents.
#[derive(Debug, Clone, Copy)]
enum Format {
    Json,
    Protobuf,
}

type Lines = mpsc::Sender<std::result::Result<Bytes, std::io::Error>>;

/// The watcher went away; stop serving it.
struct Gone;

async fn send(
    lines: &Lines,
    format: Format,
    event: &str,
    object: &Value,
) -> std::result::Result<(), Gone> {
    let mut line = Vec::new();
    encode(&mut line, format, event, object)?;
    lines.send(Ok(Bytes::from(line))).await.map_err(|_| Gone)
}

/// Appends one watch event: a JSON line, or a protobuf frame.
fn encode(
    buffer: &mut Vec<u8>,
    format: Format,
    event: &str,
    object: &Value,
) -> std::result::Result<(), Gone> {
    match format {
        Format::Json => json_event(buffer, event, |buffer| {
            serde_json::to_writer(buffer, object).map_err(|_| Gone)
        })?,
        Format::Protobuf => match protobuf::encode_watch_event(event, object) {
            Ok(frame) => buffer.extend(frame),
            Err(error) => {
                tracing::error!(%error, "encoding a watch event");
                return Err(Gone);
            }
        },
    }
    Ok(())
}

/// Appends one JSON watch event line, `object` writing the object's JSON. Written
/// around the object rather than through a `json!` that would copy it: once per
/// watcher and event. Event names need no escaping.
fn json_event(
    buffer: &mut Vec<u8>,
    event: &str,
    object: impl FnOnce(&mut Vec<u8>) -> std::result::Result<(), Gone>,
) -> std::result::Result<(), Gone> {
    buffer.extend_from_slice(b"{\"type\":\"");
    buffer.extend_from_slice(event.as_bytes());
    buffer.extend_from_slice(b"\",\"object\":");
    object(buffer)?;
    buffer.extend_from_slice(b"}\n");
    Ok(())
}

/// Appends one watch event of a logged change: JSON from the bytes encoded at
/// commit, protobuf from the object decoded again.
fn encode_change(
    buffer: &mut Vec<u8>,
    format: Format,
    event: &str,
    change: &Change,
) -> std::result::Result<(), Gone> {
    match format {
        Format::Json => json_event(buffer, event, |buffer| {
            buffer.extend_from_slice(&change.object);
            Ok(())
        }),
        Format::Protobuf => {
            let object: Value = serde_json::from_slice(&change.object).map_err(|error| {
                tracing::error!(%error, "decoding a logged change");
                Gone
            })?;
            encode(buffer, format, event, &object)
        }
    }
}

async fn stream_events(
    app: &AppState,
    filter: Filter,
    start: Option<u64>,
    options: Options,
    lines: &Lines,
) -> std::result::Result<(), Gone> {
    let log = app.store.log().clone();
    let mut wake = log.subscribe();
    let deadline = Instant::now() + options.timeout;
    let mut cursor = match start {
        Some(revision) => revision,
        None => send_current_state(app, &filter, options.format, lines).await?,
    };
    if options.initial_events_end {
        let marker = bookmark(filter.resource, cursor, true);
        send(lines, options.format, "BOOKMARK", &marker).await?;
    }
    let mut ticks = tokio::time::interval_at(
        Instant::now() + options.bookmark_interval,
        options.bookmark_interval,
    );
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        wake.borrow_and_update();
        let changes = match log.since(cursor, CHUNK) {
            Ok(changes) => changes,
            Err(TooOld { oldest }) => {
                let error =
                    ApiError::Expired(format!("too old resource version: {cursor} ({oldest})"));
                return send(lines, options.format, "ERROR", &error.status()).await;
            }
        };
        // One chunk per turn: a burst of changes costs one TLS record and one write.
        let mut chunk = Vec::new();
        for change in &changes {
            cursor = change.revision;
            if let Some(event) = filter.event_for(change) {
                encode_change(&mut chunk, options.format, event.as_str(), change)?;
            }
        }
        if !chunk.is_empty() {
            lines.send(Ok(Bytes::from(chunk))).await.map_err(|_| Gone)?;
        }
        if !changes.is_empty() {
            continue;
        }
        tokio::select! {
            changed = wake.changed() => if changed.is_err() { return Ok(()) },
            _ = tokio::time::sleep_until(deadline) => return Ok(()),
            _ = ticks.tick(), if options.bookmarks => {
                let marker = bookmark(filter.resource, cursor, false);
                send(lines, options.format, "BOOKMARK", &marker).await?;
            }
            _ = lines.closed() => return Err(Gone),
        }
    }
}

/// Synthetic ADDED events for what exists now; returns the revision they show.
async fn send_current_state(
    app: &AppState,
    filter: &Filter,
    format: Format,
    lines: &Lines,
) -> std::result::Result<u64, Gone> {
    let prefix = filter.prefix.clone();
    let snapshot = app
        .store
        .read(move |reader| {
            let mut objects = Vec::new();
            reader.scan(&prefix, None, &mut |_, object| {
                objects.push(object);
                true
            })?;
            Ok((objects, reader.revision()))
        })
        .await;
    let Ok((objects, revision)) = snapshot else {
        let error = ApiError::storage("could not read the current state");
        send(lines, format, "ERROR", &error.status()).await?;
        return Err(Gone);
    };
    for object in objects.iter().filter(|o| filter.matches(o)) {
        send(lines, format, "ADDED", object).await?;
    }
    Ok(revision)
}

fn bookmark(resource: &Resource, revision: u64, initial_events_end: bool) -> Value {
    let mut object = json!({
        "kind": resource.kind,
        "apiVersion": resource.api_version(),
        "metadata": {"resourceVersion": revision.to_string()},
    });
    if initial_events_end {
        object["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    object
}
