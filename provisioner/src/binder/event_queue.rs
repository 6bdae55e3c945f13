//! The binder's events, recorded beside its passes rather than in them: a binding's
//! writes do not wait for its event, as kube-controller-manager's binder does not
//! (client-go's recorder is asynchronous too). The queue is bounded; when it is
//! full, the pass waits for room, so no event is dropped.

use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use tokio::sync::mpsc;

use super::sync::Event;
use crate::events::EventRecorder;

/// Events waiting to be written.
const QUEUED: usize = 1024;
/// Event writes in flight at once.
const WRITES_IN_FLIGHT: usize = 8;

pub struct EventQueue {
    sender: mpsc::Sender<(ObjectReference, Event)>,
}

impl EventQueue {
    /// Starts the task that writes what is queued; it ends once the queue is dropped
    /// and drained.
    pub fn start(recorder: EventRecorder) -> Self {
        let (sender, mut receiver) = mpsc::channel::<(ObjectReference, Event)>(QUEUED);
        let recorder = Arc::new(recorder);
        tokio::spawn(async move {
            futures_util::stream::poll_fn(|cx| receiver.poll_recv(cx))
                .for_each_concurrent(WRITES_IN_FLIGHT, |(object, event)| {
                    let recorder = recorder.clone();
                    async move { recorder.record(&object, &event).await }
                })
                .await;
        });
        Self { sender }
    }

    /// Queues `event` about `object`, waiting while the queue is full.
    pub async fn record(&self, object: ObjectReference, event: Event) {
        // The writing task outlives every sender, so this fails only at shutdown.
        if self.sender.send((object, event)).await.is_err() {
            tracing::debug!("event queue closed; event not recorded");
        }
    }
}
