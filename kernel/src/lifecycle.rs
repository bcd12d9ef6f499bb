//! What the Python thread and the socket tasks need to know about each
//! other: the kernel_info reply once Python has produced it, whether a
//! request is running or waiting, and the shutdown hand-over.

use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::{watch, Notify};

pub struct Lifecycle {
    kernel_info: watch::Sender<Option<Bytes>>,
    busy: AtomicBool,
    /// Shell requests queued for the Python thread and not yet answered.
    pending: AtomicUsize,
    stopping: AtomicBool,
    /// The Python side asked the kernel to stop (`exit()` in a cell, a
    /// shutdown request on the shell channel).
    stop_requested: Notify,
    python_stopped: watch::Sender<bool>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            kernel_info: watch::channel(None).0,
            busy: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            stop_requested: Notify::new(),
            python_stopped: watch::channel(false).0,
        }
    }
}

impl Lifecycle {
    pub fn set_kernel_info(&self, content: Bytes) {
        self.kernel_info.send_replace(Some(content));
    }

    /// The kernel_info reply content, waiting for Python to start if needed.
    pub async fn kernel_info(&self) -> Bytes {
        let mut rx = self.kernel_info.subscribe();
        let ready = rx.wait_for(Option::is_some).await;
        match ready {
            Ok(info) => info.clone().expect("waited for Some"),
            // The sender lives as long as self.
            Err(_) => unreachable!("kernel_info sender dropped"),
        }
    }

    /// A shell request was queued for the Python thread.
    pub fn queued(&self) {
        self.pending.fetch_add(1, Ordering::SeqCst);
    }

    /// The Python thread is done with a queued request (replied, idle sent).
    pub fn answered(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether every queued shell request has been answered.
    pub fn shell_idle(&self) -> bool {
        self.pending.load(Ordering::SeqCst) == 0
    }

    pub fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::SeqCst);
    }

    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Start shutting down; the Python thread stops before its next request.
    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn request_stop(&self) {
        self.begin_stop();
        self.stop_requested.notify_one();
    }

    pub async fn stop_requested(&self) {
        self.stop_requested.notified().await;
    }

    pub fn python_stopped(&self) {
        self.python_stopped.send_replace(true);
    }

    pub async fn wait_python_stopped(&self) {
        let mut rx = self.python_stopped.subscribe();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}
