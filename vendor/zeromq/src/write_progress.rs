//! pmp: how far a peer's writer task has got. `send` only queues a message
//! for the task that writes it to the connection; a process about to do
//! something that may kill it (pmp-worker starting a task) first waits
//! until what it sent is written, so that it is not lost with the process.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

#[derive(Default)]
pub struct WriteProgress {
    /// Messages counted before they were queued (so a count read after a
    /// send covers it and everything queued before it).
    queued: AtomicU64,
    /// Messages written and flushed.
    written: AtomicU64,
    /// The writer stopped: nothing more will be written.
    stopped: AtomicBool,
    /// Threads in `wait_for`: the writer wakes them only when there are any
    /// (a notify is a system call, and most waits end before they sleep).
    waiting: AtomicUsize,
    lock: Mutex<()>,
    changed: Condvar,
}

impl WriteProgress {
    /// Called before a message is queued for the writer.
    pub(crate) fn will_queue(&self) {
        self.queued.fetch_add(1, Ordering::SeqCst);
    }

    /// Called by the writer once `n` more messages are flushed.
    pub(crate) fn wrote(&self, n: u64) {
        self.written.fetch_add(n, Ordering::SeqCst);
        self.wake();
    }

    /// Called when the writer stops.
    pub(crate) fn stopped(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.wake();
    }

    fn wake(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.changed.notify_all();
        }
    }

    /// Whether everything queued is written: nothing is waiting for or in
    /// the hands of the writer.
    pub(crate) fn idle(&self) -> bool {
        self.written.load(Ordering::SeqCst) >= self.queued.load(Ordering::SeqCst)
    }

    /// A mark covering everything sent before this call, for `wait_for`.
    pub fn mark(&self) -> u64 {
        self.queued.load(Ordering::SeqCst)
    }

    fn reached(&self, mark: u64) -> bool {
        self.written.load(Ordering::SeqCst) >= mark || self.stopped.load(Ordering::SeqCst)
    }

    /// Block until everything sent before `mark` was taken is written, or
    /// the writer stopped. Not for an async context: it blocks the thread.
    pub fn wait_for(&self, mark: u64) {
        if self.reached(mark) {
            return;
        }
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.waiting.fetch_add(1, Ordering::SeqCst);
        // Checked again after `waiting` counts this thread: a `wrote` since
        // either is seen here or wakes it.
        while !self.reached(mark) {
            guard = self.changed.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}
