//! pmp: how far a peer's writer task has got. `send` only queues a message
//! for the task that writes it to the connection; a process about to do
//! something that may kill it (pmp-worker starting a task) first waits
//! until what it sent is written, so that it is not lost with the process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

#[derive(Default)]
pub struct WriteProgress {
    /// Messages counted before they were queued (so a count read after a
    /// send covers it and everything queued before it).
    queued: AtomicU64,
    /// Messages written and flushed, and whether the writer has stopped.
    written: Mutex<(u64, bool)>,
    changed: Condvar,
}

impl WriteProgress {
    /// Called before a message is queued for the writer.
    pub(crate) fn will_queue(&self) {
        self.queued.fetch_add(1, Ordering::SeqCst);
    }

    /// Called by the writer once `n` more messages are flushed.
    pub(crate) fn wrote(&self, n: u64) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.0 += n;
        self.changed.notify_all();
    }

    /// Called when the writer stops: nothing more will be written.
    pub(crate) fn stopped(&self) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.1 = true;
        self.changed.notify_all();
    }

    /// Block until everything sent before this call is written, or the
    /// writer stopped. Not for an async context: it blocks the thread.
    pub fn wait_written(&self) {
        let target = self.queued.load(Ordering::SeqCst);
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        while written.0 < target && !written.1 {
            written = self.changed.wait(written).unwrap_or_else(|e| e.into_inner());
        }
    }
}
