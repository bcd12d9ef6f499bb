//! debugpy's events: published on IOPub as `debug_event`, and watched for
//! which threads are stopped.

use crate::dap::Connection;
use crate::iopub::Iopub;
use crate::wire::{json, Outgoing};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// Threads of the kernel's own that a stop never concerns.
const KERNEL_THREADS: &[&str] = &["IPythonHistorySavingThread"];

/// What the event forwarder shares with the request handler.
#[derive(Default)]
pub struct Shared {
    /// Threads stopped by debugpy (ids as debugpy numbers them).
    pub stopped: Mutex<BTreeSet<i64>>,
    /// The parent of published events: the latest debug request.
    pub parent: Mutex<Option<Bytes>>,
}

/// A poisoned lock still holds valid sets and headers: use it.
pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Publish debugpy's events as `debug_event`, noting which threads are
/// stopped (the variables panel reads the frame of a stopped thread, or the
/// user's globals when none is).
pub async fn forward_events(
    mut events: mpsc::UnboundedReceiver<Value>,
    dap: Arc<Connection>,
    shared: Arc<Shared>,
    iopub: Iopub,
    initialized: watch::Sender<bool>,
) {
    while let Some(event) = events.recv().await {
        let body = &event["body"];
        match event["event"].as_str() {
            Some("initialized") => {
                initialized.send_replace(true);
            }
            Some("stopped") if body["allThreadsStopped"] == Value::Bool(true) => {
                let threads = dap
                    .request(json!({"type": "request", "command": "threads"}))
                    .await;
                match threads {
                    Ok(reply) => {
                        let mut stopped = lock(&shared.stopped);
                        for thread in reply["body"]["threads"].as_array().into_iter().flatten() {
                            let name = thread["name"].as_str().unwrap_or_default();
                            if let (false, Some(id)) =
                                (KERNEL_THREADS.contains(&name), thread["id"].as_i64())
                            {
                                stopped.insert(id);
                            }
                        }
                    }
                    Err(e) => log::warn!("debugger: listing stopped threads: {e}"),
                }
            }
            Some("stopped") => {
                if let Some(id) = body["threadId"].as_i64() {
                    lock(&shared.stopped).insert(id);
                }
            }
            Some("continued") => {
                let mut stopped = lock(&shared.stopped);
                match body["threadId"].as_i64() {
                    Some(id) if body["allThreadsContinued"] != Value::Bool(true) => {
                        stopped.remove(&id);
                    }
                    _ => stopped.clear(),
                }
            }
            _ => {}
        }
        let parent = lock(&shared.parent).clone();
        iopub.publish(Outgoing::broadcast(
            "debug_event",
            parent.as_ref(),
            json(&event),
        ));
    }
}
